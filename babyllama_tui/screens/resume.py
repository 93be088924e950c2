"""ResumeScreen: continue a stopped, failed or finished run from its latest checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


@dataclass(frozen=True)
class ResumeChoice:
    max_steps: int
    workers: int


class ResumeScreen(ModalScreen[ResumeChoice | None]):
    """Asks how far to train (max_steps may grow) and with how many workers."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, name: str, checkpoint_step: int, max_steps: int, workers: int) -> None:
        super().__init__(classes="dialog-screen")
        self._name = name
        self._checkpoint_step = checkpoint_step
        self._max_steps = max_steps
        self._workers = workers

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Resume {self._name}", classes="dialog-title")
            yield Static(f"Continues from the checkpoint at step {self._checkpoint_step:,}.", classes="dialog-body")
            with Horizontal(classes="dialog-field"):
                yield Label("max steps", classes="field-label")
                yield Input(str(self._max_steps), type="integer", compact=True, id="resume-max-steps")
            with Horizontal(classes="dialog-field"):
                yield Label("workers", classes="field-label")
                yield Input(str(self._workers), type="integer", compact=True, id="resume-workers")
            yield Static("", id="resume-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Resume (enter)", id="resume", variant="success", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_input_submitted(self) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "resume":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        try:
            max_steps = int(self.query_one("#resume-max-steps", Input).value)
            workers = int(self.query_one("#resume-workers", Input).value)
        except ValueError:
            max_steps = workers = 0
        if max_steps <= self._checkpoint_step or workers < 1:
            self.query_one("#resume-error", Static).update(
                f"max steps must be above {self._checkpoint_step:,} and workers at least 1"
            )
            return
        self.dismiss(ResumeChoice(max_steps, workers))
