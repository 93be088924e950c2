"""FullLogScreen: a run's whole train.log, from its first line (the Monitor's log pane keeps only the end).

A worker thread indexes the file a piece at a time, so a log of many megabytes shows its first
lines at once and never holds the app up; lines appended while it is open are indexed too.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.worker import get_current_worker

from babyllama_tui.training.log_index import LogIndex
from babyllama_tui.widgets.dialog import Dialog
from babyllama_tui.widgets.log_view import LogView

# How often a log that is still written to is looked at again.
POLL_S = 1.0


class FullLogScreen(Dialog[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, run: Path) -> None:
        super().__init__(classes="dialog-screen")
        self.run = run
        self.index = LogIndex(run / "train.log")
        self.view = LogView(self.index, id="full-log")
        self._indexing = False

    def compose(self) -> ComposeResult:
        self.view.border_title = f"{self.run.name}/train.log"
        yield self.view

    def on_mount(self) -> None:
        self.view.focus()
        self.view.show_index()
        self._look()
        self.set_interval(POLL_S, self._look)

    def _look(self) -> None:
        if not self._indexing:
            self._indexing = True
            self._index()

    @work(thread=True, group="full-log")
    def _index(self) -> None:
        """Index what the file holds beyond the last look, showing the lines after each piece."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            changed = self.index.grow()
            if changed:
                self.app.call_from_thread(self.view.show_index)
            if self.index.caught_up:
                self.app.call_from_thread(self._indexed)
                return

    def _indexed(self) -> None:
        self._indexing = False
        self.view.show_index()
