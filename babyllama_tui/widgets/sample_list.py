"""SampleList: the run's sample continuations, newest first, each under its step.

Chinese text has no spaces to wrap at, so lines are cut by display width: a sample starts
beside its step number instead of jumping to the next line whole.
"""

from __future__ import annotations

from rich.cells import chop_cells
from rich.text import Text
from textual.widget import Widget

EMPTY = "none yet: the trainer writes one at each evaluation"


class SampleList(Widget):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.samples: list[tuple[int, str]] = []

    def show(self, samples: list[tuple[int, str]]) -> None:
        """(step, text) pairs, newest first."""
        if samples != self.samples:
            self.samples = samples
            self.refresh()

    def render(self) -> Text:
        if not self.samples:
            return Text(EMPTY, style="dim")
        width, height = max(12, self.size.width), max(1, self.size.height)
        text = Text()
        lines = 0
        for step, sample in self.samples:
            label = f"{step:>7,}  "
            pieces = chop_cells(" ".join(sample.split()), width - len(label)) or [""]
            for i, piece in enumerate(pieces):
                if lines == height:
                    return text
                if lines:
                    text.append("\n")
                text.append(label if i == 0 else " " * len(label), style="dim")
                text.append(piece)
                lines += 1
        return text
