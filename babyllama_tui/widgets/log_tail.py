"""LogTail: the end of a run's train.log, following it as lines arrive."""

from __future__ import annotations

from textual.widgets import Log

MAX_LINES = 1000


class LogTail(Log):
    """Keeps the last MAX_LINES lines; scrolls along unless the user scrolled up."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=MAX_LINES, highlight=False, auto_scroll=True, **kwargs)

    def add(self, lines: list[str], restarted: bool) -> None:
        if restarted:
            self.clear()
        if lines:
            self.write_lines(lines)
