"""SampleList: the run's sample continuations, newest first, each under its step; it scrolls when focused.

Chinese text has no spaces to wrap at, so lines are cut by display width: a sample starts
beside its step number instead of jumping to the next line whole. The lines are made again
only when the samples or the width change, and a repaint draws only those on screen.

When focused, the sample at the top of the panel is highlighted, and ctrl+c copies it; the
list then scrolls past its end far enough to bring the oldest sample to the top too.
"""

from __future__ import annotations

from rich.cells import chop_cells
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

EMPTY = "none yet: the trainer writes one at each evaluation"
TITLE = "samples"
FOCUSED_TITLE = "samples  ↑↓ scroll  ^c copies the top one"
HIGHLIGHT = "reverse"


def step_label(step: int) -> str:
    return f"{step:>7,}"


def sample_lines(samples: list[tuple[int, str]], width: int) -> tuple[list[Text], list[int]]:
    """The lines, and for each line the index of the sample it shows."""
    lines, owners = [], []
    for index, (step, sample) in enumerate(samples):
        label = f"{step_label(step)}  "
        pieces = chop_cells(" ".join(sample.split()), max(1, width - len(label))) or [""]
        for i, piece in enumerate(pieces):
            line = Text(label if i == 0 else " " * len(label), style="dim")
            line.append(piece)
            lines.append(line)
            owners.append(index)
    return lines, owners


class SampleList(ScrollView, can_focus=True):
    BINDINGS = [Binding("ctrl+c", "copy", "Copy the sample", show=False)]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.samples: list[tuple[int, str]] = []
        self._lines = [Text(EMPTY, style="dim")]
        self._owners: list[int] = []
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
        """The first layout of the lines, and a new one for a new width; room below them for a new height."""
        if self.scrollable_content_region.width != self._width:
            self._layout_lines(self.scrollable_content_region.width)
        else:
            self._size_to_lines(self.has_focus)

    def _layout_lines(self, width: int) -> None:
        self._width = width
        if self.samples:
            self._lines, self._owners = sample_lines(self.samples, max(12, width))
        else:
            self._lines, self._owners = [Text(EMPTY, style="dim")], []
        self._size_to_lines(self.has_focus)
        self.refresh()

    def _size_to_lines(self, focused: bool) -> None:
        """As many rows as lines and, when focused, below them enough to scroll the oldest sample to the top."""
        last = self._owners.count(len(self.samples) - 1) if self._owners else len(self._lines)
        below = max(0, self.scrollable_content_region.height - last) if focused else 0
        self.virtual_size = Size(self._width, len(self._lines) + below)

    @property
    def highlighted(self) -> int | None:
        """The index of the sample at the top of the panel: the one ctrl+c copies."""
        if not self._owners:
            return None
        return self._owners[min(self.scroll_offset.y, len(self._owners) - 1)]

    def action_copy(self) -> None:
        index = self.highlighted
        if index is None:
            self.notify("No sample to copy yet: the trainer writes one at each evaluation", severity="warning")
            return
        step, text = self.samples[index]
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied the sample of step {step:,} ({len(text):,} characters)")

    # Called before Widget's own handlers, which set has_focus.
    def on_focus(self) -> None:
        self.border_title = FOCUSED_TITLE
        self._size_to_lines(True)

    def on_blur(self) -> None:
        self.border_title = TITLE
        self._size_to_lines(False)

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        style = self.rich_style
        width = self.scrollable_content_region.width
        if index >= len(self._lines):
            return Strip.blank(width, style)
        line = self._lines[index].copy()
        if self.has_focus and self._owners and self._owners[index] == self.highlighted:
            line.stylize(HIGHLIGHT, 0, len(step_label(self.samples[self._owners[index]][0])))
        line.stylize_before(style)
        return Strip(line.render(self.app.console)).crop_extend(0, width, style)
