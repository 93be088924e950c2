"""ResumeScreen: continue a stopped, failed or finished run from its latest checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from babyllama_tui.widgets.dialog import Dialog
from babyllama_tui.widgets.field_input import FieldInput


@dataclass(frozen=True)
class ResumeChoice:
    max_steps: int
    workers: int


def proposed_max_steps(checkpoint_step: int, max_steps: int | None) -> int:
    """How far a resume should train: to the planned end when the run stopped short of it,
    else (a finished run) twice as far as it got."""
    if max_steps is not None and max_steps > checkpoint_step:
        return max_steps
    return 2 * max(checkpoint_step, 1)


def resume_errors(max_steps: str, workers: str, checkpoint_step: int) -> list[str]:
    """What is wrong with the typed values, one message for each wrong field."""
    errors = []
    try:
        steps_ok = int(max_steps) > checkpoint_step
    except ValueError:
        steps_ok = False
    if not steps_ok:
        errors.append(f"max steps must be a whole number above {checkpoint_step:,}, the checkpoint's step")
    try:
        workers_ok = int(workers) >= 1
    except ValueError:
        workers_ok = False
    if not workers_ok:
        errors.append("workers must be a whole number, at least 1")
    return errors


class ResumeScreen(Dialog[ResumeChoice | None]):
    """Asks how far to train (max_steps may grow) and with how many workers."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("enter", "submit", "Resume", show=False),
    ]

    def __init__(self, name: str, checkpoint_step: int, max_steps: int, workers: int) -> None:
        """`max_steps` is the value proposed (see `proposed_max_steps`)."""
        super().__init__(classes="dialog-screen")
        self._name = name
        self._checkpoint_step = checkpoint_step
        self._max_steps = max_steps
        self._workers = workers
        self._showing_errors = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Resume {self._name}", classes="dialog-title")
            yield Static(f"Continues from the checkpoint at step {self._checkpoint_step:,}.", classes="dialog-body")
            with Horizontal(classes="dialog-field"):
                yield Label("max steps", classes="field-label")
                yield FieldInput(str(self._max_steps), kind="integer", id="resume-max-steps")
            with Horizontal(classes="dialog-field"):
                yield Label("workers", classes="field-label")
                yield FieldInput(str(self._workers), kind="integer", id="resume-workers")
            yield Static("", id="resume-error", classes="field-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Resume (enter)", id="resume", variant="success", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "resume":
            self.action_submit()
        else:
            self.dismiss(None)

    def _values(self) -> tuple[str, str]:
        max_steps = self.query_one("#resume-max-steps", FieldInput).value
        return max_steps, self.query_one("#resume-workers", FieldInput).value

    def _show_errors(self, errors: list[str]) -> None:
        self._showing_errors = bool(errors)
        self.query_one("#resume-error", Static).update("\n".join(errors))

    def action_submit(self) -> None:
        max_steps, workers = self._values()
        errors = resume_errors(max_steps, workers, self._checkpoint_step)
        if errors:
            self._show_errors(errors)
            return
        self.dismiss(ResumeChoice(int(max_steps), int(workers)))

    @on(FieldInput.Changed)
    def _values_changed(self) -> None:
        """Errors shown follow the values as they are typed: each goes once its value is right."""
        if self._showing_errors:
            self._show_errors(resume_errors(*self._values(), self._checkpoint_step))
