"""MetricCard: one number of a run (learning rate, speed, memory) with its history as a sparkline."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from babyllama_tui.widgets.spark_bars import SparkBars
from babyllama_tui.widgets.text_panel import TextPanel


class MetricCard(Vertical):
    """"title  value  note" on one line and the series below it, as tall as the card is given.

    Its parts exist from construction, so it can be filled before it is mounted.
    """

    def __init__(self, title: str, *, classes: str = "", **kwargs) -> None:
        super().__init__(classes=f"metric-card {classes}".strip(), **kwargs)
        self.title = title
        self.value = TextPanel(Text(title, style="dim"), classes="card-value")
        self.spark = SparkBars(classes="card-spark")

    def compose(self) -> ComposeResult:
        yield self.value
        yield self.spark

    def show(self, value: str | Text, series: Sequence[float] | None = None, note: str = "") -> None:
        line = Text(f"{self.title} ", style="dim")
        line.append_text(value if isinstance(value, Text) else Text(value, style="bold"))
        if note:
            line.append(f" {note}", style="dim")
        self.value.show(line)
        if self.spark.display != bool(series):
            self.spark.display = bool(series)
            # A card without a series takes one line, leaving the rest to the cards with one.
            self.set_class(not series, "-value-only")
        if series:
            self.spark.show(list(series))
