"""PromptInput: the playground's prompt line, with the session's earlier prompts on the arrow keys.

Up goes back through the prompts continued so far (newest first), down comes forward again and,
past the newest, back to what was being typed: as in a shell.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    BINDINGS = [
        Binding("up", "history(-1)", "History", key_display="↑↓"),
        Binding("down", "history(1)", "Later prompt", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history: list[str] = []
        # Where up and down have got to: len(history) is the line being typed.
        self._position = 0
        self._draft = ""

    def remember(self, prompt: str) -> None:
        """Keep `prompt` as the newest in the history (once: an earlier copy moves up)."""
        if prompt in self.history:
            self.history.remove(prompt)
        self.history.append(prompt)
        self._position = len(self.history)
        self._draft = ""

    def action_history(self, step: int) -> None:
        position = self._position + step
        if not 0 <= position <= len(self.history):
            return
        if self._position == len(self.history):
            self._draft = self.value
        self._position = position
        self.value = self.history[position] if position < len(self.history) else self._draft
        self.cursor_position = len(self.value)
