"""ConfirmScreen: a yes/no question before something that cannot be taken back."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from babyllama_tui.widgets.dialog import Dialog


class ConfirmScreen(Dialog[bool]):
    """Dismissed with True on y or the confirm button, False on n/Escape or the cancel button.
    Enter presses the focused button: the confirm one, or with `cancel_first` the cancel one,
    for a question whose safe answer is no."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, message: str, confirm: str, *, cancel_first: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._message = message
        self._confirm = confirm
        self._cancel_first = cancel_first

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            yield Static(self._message, classes="dialog-body", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._confirm} (y)", id="yes", variant="error", compact=True)
                yield Button("Cancel (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no" if self._cancel_first else "#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
