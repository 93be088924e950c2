"""LogTail: the end of a run's train.log, as many of the newest lines as fit.

A plain widget rather than Textual's scrolling `Log`: it repaints only when lines arrive,
and a repaint is a handful of short lines, which matters over a slow SSH link.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.widget import Widget

MAX_LINES = 500


class LogTail(Widget):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines: deque[str] = deque(maxlen=MAX_LINES)

    @property
    def line_count(self) -> int:
        return len(self.lines)

    def clear(self) -> None:
        self.lines.clear()
        self.refresh()

    def add(self, lines: list[str], restarted: bool) -> None:
        if restarted:
            self.lines.clear()
        if lines or restarted:
            self.lines.extend(lines)
            self.refresh()

    def render(self) -> Text:
        shown = list(self.lines)[-max(1, self.size.height):]
        return Text("\n".join(shown), no_wrap=True, overflow="ellipsis")
