"""LogTail: the end of a run's train.log, one screen line a log line, following the newest.

A line-API scroll view: a repaint draws only the lines on screen, and new lines repaint only
themselves, which matters over a slow SSH link. Focused, it scrolls both ways, so a line
longer than the panel (a sample, a checkpoint path) can be read to its end; scrolled back to
the bottom, it follows new lines again.
"""

from __future__ import annotations

from collections import deque

from rich.cells import cell_len
from rich.segment import Segment
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

MAX_LINES = 500
TITLE = "train.log"
FOCUSED_TITLE = "train.log  ↑↓←→ scroll  End newest"


class LogTail(ScrollView, can_focus=True):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self._widest = 0
        # At the bottom, so new lines scroll into view; scrolling up to read stops that.
        self.following = True
        self.border_title = TITLE

    def clear(self) -> None:
        self.lines.clear()
        self._widest = 0
        self.virtual_size = Size(0, 0)
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.following = True
        self.refresh()

    def add(self, lines: list[str], restarted: bool) -> None:
        if restarted:
            self.lines.clear()
            self._widest = 0
        if not (lines or restarted):
            return
        self.lines.extend(line.expandtabs() for line in lines)
        self._widest = max([self._widest, *(cell_len(line) for line in lines)])
        self.virtual_size = Size(self._widest, len(self.lines))
        self._keep_following()
        self.refresh()

    def _keep_following(self) -> None:
        if self.following:
            # After the next layout, which applies the new virtual size.
            self.scroll_end(animate=False, x_axis=False, force=True)

    def on_resize(self) -> None:
        self._keep_following()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.following = round(new_value) >= self.max_scroll_y

    def watch_show_vertical_scrollbar(self, shown: bool) -> None:
        # Scrolled to the end before the bar was shown, the bar would start at the top.
        if shown:
            self.vertical_scrollbar.position = self.scroll_y

    def on_focus(self) -> None:
        self.border_title = FOCUSED_TITLE

    def on_blur(self) -> None:
        self.border_title = TITLE

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        style = self.rich_style
        width = self.scrollable_content_region.width
        if index >= len(self.lines):
            return Strip.blank(width, style)
        text = self.lines[index]
        length = cell_len(text)
        strip = Strip([Segment(text, style)], length).crop_extend(scroll_x, scroll_x + width, style)
        if length > scroll_x + width and width > 1:
            # Cut at the right edge: "…" says there is more to scroll to.
            strip = Strip.join([strip.crop(0, width - 1), Strip([Segment("…", style)])])
        return strip
