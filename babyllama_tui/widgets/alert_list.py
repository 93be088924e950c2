"""AlertList: the run's alerts, newest first: at which step, what happened, what the trainer did, and
its message; hidden while the run has none. It scrolls when focused (Tab).

Its title carries the chart's alert marker, so the ▼ along the top of the loss chart reads as
"an alert here"; the list says which.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from babyllama.runs import alert_words
from babyllama_tui.widgets.loss_chart import ALERT_COLOR, ALERT_COLORS, ALERT_MARKER

# What the trainer did, in words (`action` in an alert row).
ACTION_WORDS = {"skipped": "step skipped", "rolled_back": "rolled back", "stopped": "run stopped", "none": "warning"}
FOCUSED_HINT = "  ↑↓ scroll"


LABEL_CELLS = 9


def alert_lines(alerts: list[dict], width: int, console: Console) -> Text:
    """One entry an alert, newest first: "    352  rollback, rolled back: message", wrapped to
    `width` under its text, the step standing out on the left."""
    lines = []
    for row in reversed(alerts):
        action = row.get("action")
        entry = Text(str(row.get("alert")), style="bold rgb({},{},{})".format(*ALERT_COLORS.get(action, ALERT_COLOR)))
        entry.append(f", {ACTION_WORDS.get(action, str(action))}")
        message = row.get("message")
        if isinstance(message, str) and message:
            entry.append(f": {alert_words(row['step'], message)}", style="dim")
        for i, piece in enumerate(entry.wrap(console, max(10, width - LABEL_CELLS))):
            line = Text(f"{row['step']:>7,}  " if i == 0 else " " * LABEL_CELLS, style="dim")
            piece.rstrip()
            line.append_text(piece)
            lines.append(line)
    return Text("\n").join(lines)


class AlertList(VerticalScroll):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.body = Static("", markup=False)
        self.count = 0
        self.alerts: list[dict] = []
        self._shown: tuple = ()
        self.display = False

    def compose(self):
        yield self.body

    def show(self, alerts: list[dict], count: int) -> None:
        """`alerts` in file order (the newest kept), `count` all the run recorded."""
        shown = (count, alerts[-1] if alerts else None)
        if shown == self._shown:
            return
        self._shown = shown
        self.count = count
        self.alerts = alerts
        self.display = bool(count)
        self._lay_out()
        self._title()

    def _lay_out(self) -> None:
        if self.alerts and self.scrollable_content_region.width:
            self.body.update(alert_lines(self.alerts, self.scrollable_content_region.width, self.app.console))

    def on_resize(self) -> None:
        self._lay_out()

    def _title(self) -> None:
        title = Text(f"alerts {ALERT_MARKER} {self.count:,}")
        if self.has_focus:
            title.append(FOCUSED_HINT, style="dim")
        self.border_title = title

    def on_focus(self) -> None:
        self._title()

    def on_blur(self) -> None:
        self._title()
