"""SparkBars: a series as bars of eighth blocks, one row or several, in the widget's one colour.

Textual's Sparkline sends a colour code with every cell; these bars are one run of text a
row, a few bytes over an SSH link instead of a few hundred.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.widget import Widget

BARS = " ▁▂▃▄▅▆▇█"


def column_values(values: list[float], width: int) -> np.ndarray:
    """`values` stretched or averaged to `width` columns."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) >= width:
        edges = np.linspace(0, len(data), width + 1).astype(np.int64)
        return np.add.reduceat(data, edges[:-1]) / np.diff(edges)
    return data[(np.arange(width) * len(data)) // width]


def bar_rows(values: list[float], width: int, height: int) -> list[str]:
    """Rows of bars, top row first; the lowest value still shows an eighth so the line never vanishes."""
    if not values or width < 1 or height < 1:
        return []
    columns = column_values(values, width)
    low, high = float(columns.min()), float(columns.max())
    span = high - low or 1.0
    eighths = 1 + np.round((columns - low) / span * (8 * height - 1)).astype(np.int64)
    return ["".join(BARS[min(8, max(0, int(e) - 8 * row))] for e in eighths) for row in range(height - 1, -1, -1)]


class SparkBars(Widget):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.values: list[float] = []

    def show(self, values: list[float]) -> None:
        if values != self.values:
            self.values = values
            self.refresh()

    def render(self) -> Text:
        return Text("\n".join(bar_rows(self.values, self.size.width, self.size.height)), no_wrap=True)
