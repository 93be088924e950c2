"""LogView: a whole log file from its first line, read from disk only where it is shown.

A line-API scroll view over a `LogIndex`: a repaint reads the lines on screen (through the
index's cache of blocks), so a log of hundreds of megabytes scrolls as a small one does. It
starts at the top; home, end, page up and page down, the arrows scroll it. Its subtitle says
which lines are shown and whether the file is still being indexed.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from babyllama_tui.training.log_index import LogIndex

KEYS = "↑↓←→ pgup pgdn home end · esc closes"
NO_LOG = "train.log holds nothing yet: the trainer's output goes there once the run is launched."


class LogView(ScrollView, can_focus=True):
    def __init__(self, index: LogIndex, **kwargs) -> None:
        super().__init__(**kwargs)
        self.index = index

    def show_index(self) -> None:
        """The index grew (or started over): take its new size."""
        self.virtual_size = Size(self.index.widest, len(self.index))
        self._show_position()
        self.refresh()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._show_position()

    def on_resize(self) -> None:
        self._show_position()

    def _show_position(self) -> None:
        total = len(self.index)
        first = min(round(self.scroll_y) + 1, total)
        last = min(round(self.scroll_y) + self.scrollable_content_region.height, total)
        reading = "" if self.index.caught_up else " (reading…)"
        self.border_subtitle = f"lines {first:,}-{last:,} of {total:,}{reading} · {KEYS}"

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        number = scroll_y + y
        style = self.rich_style
        width = self.scrollable_content_region.width
        if number >= len(self.index):
            if number == 0 and self.index.caught_up:
                return Strip([Segment(NO_LOG, style)]).crop_extend(0, width, style)
            return Strip.blank(width, style)
        text = self.index.line(number)
        length = cell_len(text)
        strip = Strip([Segment(text, style)], length).crop_extend(scroll_x, scroll_x + width, style)
        if length > scroll_x + width and width > 1:
            # Cut at the right edge: "…" says there is more to scroll to.
            strip = Strip.join([strip.crop(0, width - 1), Strip([Segment("…", style)])])
        return strip
