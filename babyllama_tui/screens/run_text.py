"""RunTextScreen: one line of text about a run (its new name, its note), checked before it is accepted."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from babyllama_tui.widgets.dialog import Dialog
from babyllama_tui.widgets.field_input import FieldInput


class RunTextScreen(Dialog[str | None]):
    """Dismissed with the text on enter once `check` finds nothing wrong with it, None on escape.

    `check(text)` says what is wrong, or None; after the first enter it is asked again at each change,
    so a message goes as soon as the text is fixed."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("enter", "submit", "Save", show=False),
    ]

    def __init__(
        self, title: str, message: str, label: str, value: str, confirm: str, check: Callable[[str], str | None]
    ) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._message = message
        self._label = label
        self._value = value
        self._confirm = confirm
        self._check = check
        self.problem: str | None = None  # the message shown
        self._submitted = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title", markup=False)
            yield Static(self._message, classes="dialog-body", markup=False)
            with Horizontal(classes="dialog-field"):
                yield Label(self._label, classes="field-label")
                yield FieldInput(self._value, id="run-text-value")
            yield Static("", id="run-text-error", classes="field-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._confirm} (enter)", id="save", variant="success", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one(FieldInput).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_submit()
        else:
            self.dismiss(None)

    @on(FieldInput.Changed)
    def _recheck(self, event: FieldInput.Changed) -> None:
        if self._submitted:
            self._show_problem(self._check(event.value))

    def _show_problem(self, problem: str | None) -> None:
        self.problem = problem
        self.query_one("#run-text-error", Static).update(problem or "")

    def action_submit(self) -> None:
        value = self.query_one(FieldInput).value
        self._submitted = True
        problem = self._check(value)
        if problem is not None:
            self._show_problem(problem)
            return
        self.dismiss(value)
