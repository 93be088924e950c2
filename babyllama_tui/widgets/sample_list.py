"""SampleList: the run's sample continuations, newest first, each under its step; it scrolls when focused.

Chinese text has no spaces to wrap at, so lines are cut by display width: a sample starts
beside its step number instead of jumping to the next line whole. The lines are made again
only when the samples or the width change, and a repaint draws only those on screen.
"""

from __future__ import annotations

from rich.cells import chop_cells
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

EMPTY = "none yet: the trainer writes one at each evaluation"
TITLE = "samples"
FOCUSED_TITLE = "samples  ↑↓ scroll"


def sample_lines(samples: list[tuple[int, str]], width: int) -> list[Text]:
    lines = []
    for step, sample in samples:
        label = f"{step:>7,}  "
        pieces = chop_cells(" ".join(sample.split()), max(1, width - len(label))) or [""]
        for i, piece in enumerate(pieces):
            line = Text(label if i == 0 else " " * len(label), style="dim")
            line.append(piece)
            lines.append(line)
    return lines


class SampleList(ScrollView, can_focus=True):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.samples: list[tuple[int, str]] = []
        self._lines = [Text(EMPTY, style="dim")]
        self._width = 0
        self.border_title = TITLE

    def show(self, samples: list[tuple[int, str]]) -> None:
        """(step, text) pairs, newest first; none (another run) scrolls back to the top."""
        if samples != self.samples:
            self.samples = samples
            if not samples:
                self.scroll_to(0, 0, animate=False, immediate=True)
            if self._width:
                self._layout_lines(self._width)

    def on_resize(self) -> None:
        """The first layout of the lines, and a new one for a new width."""
        if self.scrollable_content_region.width != self._width:
            self._layout_lines(self.scrollable_content_region.width)

    def _layout_lines(self, width: int) -> None:
        self._width = width
        self._lines = sample_lines(self.samples, max(12, width)) if self.samples else [Text(EMPTY, style="dim")]
        self.virtual_size = Size(width, len(self._lines))
        self.refresh()

    def on_focus(self) -> None:
        self.border_title = FOCUSED_TITLE

    def on_blur(self) -> None:
        self.border_title = TITLE

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        style = self.rich_style
        width = self.scrollable_content_region.width
        if index >= len(self._lines):
            return Strip.blank(width, style)
        line = self._lines[index].copy()
        line.stylize_before(style)
        return Strip(line.render(self.app.console)).crop_extend(0, width, style)
