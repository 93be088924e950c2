"""RunStatusBar: which run, its state, step/max with a bar, tokens seen, elapsed and ETA, bits per
byte and the latest benchmark score; why it ended, or that it stalled or slowed.

Why a run stopped or failed is shown whole: beside the other items when it fits there, else below
them, wrapped (in at most REASON_LINES lines; train.log, which the monitor shows below, holds a
longer one whole).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.console import Console
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from babyllama.runs import format_duration
from babyllama_tui.training.formatting import format_count, format_steps, progress_bar
from babyllama_tui.training.run_health import Health
from babyllama_tui.widgets.runs_table import HEALTH_STYLES, state_with_hint

BAR_CELLS = 10


@dataclass(frozen=True)
class RunStatus:
    name: str
    state: str
    reason: str | None
    step: int | None
    max_steps: int | None
    tokens: int | None
    elapsed_s: float | None
    eta_s: float | None
    note: str = ""
    # The state as shown ("stopping 42s"), and whether a stop has waited long enough to offer a kill.
    state_words: str | None = None
    stop_overdue: bool = False
    # Bits per byte of the newest train row (an estimate) and evaluation, comparable across tokenizers.
    bpb: float | None = None
    val_bpb: float | None = None
    # The newest benchmark score, in words (formatting.format_bench), and without its shots and
    # chance, shown instead where that saves a line.
    bench: str | None = None
    bench_short: str | None = None
    # A running run that stalled or slowed: said in place of a reason.
    health: Health | None = None


def status_items(status: RunStatus) -> list[Text]:
    items = [Text(status.name, style="bold"), state_with_hint(status.state, status.state_words, status.stop_overdue)]
    if status.state == "starting" and status.step:
        # The run's status still holds the max_steps of the process that ended; the new one
        # says its own once it has read its config.
        items.append(Text(f"resuming from step {status.step:,}"))
        return items + _after_progress(status)
    progress = Text(f"step {format_steps(status.step, status.max_steps)}")
    if status.step is not None and status.max_steps:
        fraction = status.step / status.max_steps
        progress.append(f" {progress_bar(fraction, BAR_CELLS)}", style="green")
        progress.append(f" {fraction:.0%}")
    items.append(progress)
    return items + _after_progress(status)


def _after_progress(status: RunStatus) -> list[Text]:
    items = [Text(f"{format_count(status.tokens)} tokens")]
    items.append(Text(f"elapsed {format_duration(status.elapsed_s)}"))
    if status.eta_s is not None:
        items.append(Text(f"ETA {format_duration(status.eta_s)}", style="bold"))
    if status.bpb is not None or status.val_bpb is not None:
        bpb = Text("bpb ")
        bpb.append(_bits(status.bpb), style="bold")
        bpb.append(f" val {_bits(status.val_bpb)}")
        items.append(bpb)
    if status.bench:
        items.append(Text(status.bench))
    if status.note:
        items.append(Text(status.note, style="dim"))
    return items


def _bits(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


GAP = "   "


def pack(items: list[Text], width: int, gap: str = GAP) -> list[Text]:
    """Items on as few lines as fit `width`, never breaking one in the middle."""
    lines: list[Text] = [Text()]
    for item in items:
        current = lines[-1]
        if current.plain and current.cell_len + len(gap) + item.cell_len > width:
            lines.append(Text())
            current = lines[-1]
        if current.plain:
            current.append(gap)
        current.append_text(item)
    return lines


def reason_text(state: str, reason: str) -> Text:
    text = reason if reason.startswith(state) else f"{state}: {reason}"
    return Text(text, style="red" if state == "failed" else "yellow")


# Lines a reason may take below the other items: one longer still is cut there, ending in "…"
# (train.log, shown below, holds it whole).
REASON_LINES = 3


def with_reason(lines: list[Text], reason: Text, width: int, console: Console) -> list[Text]:
    """`reason` after the last line if it fits there, else below it, whole, wrapped to `width`."""
    if reason.cell_len <= width - lines[-1].cell_len - len(GAP):
        lines[-1].append(GAP)
        lines[-1].append_text(reason)
        return lines
    wrapped = list(reason.wrap(console, width))
    if len(wrapped) > REASON_LINES:
        wrapped = wrapped[:REASON_LINES]
        wrapped[-1].truncate(width - 1)
        wrapped[-1].rstrip()
        wrapped[-1].append("…")
    return [*lines, *wrapped]


class RunStatusBar(Widget):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.status: RunStatus | None = None

    def show(self, status: RunStatus | None) -> None:
        """Repaint only when what is shown changes (an ETA moves by the second, not by the poll)."""
        width = self.size.width
        before = self._text(width)
        self.status = status
        after = self._text(width)
        if after != before:
            # A new layout repaints the whole screen: only when the bar's height changes.
            self.refresh(layout=self._height(width, after) != self._height(width, before))

    def _height(self, width: int, text: Text | None = None) -> int:
        text = self._text(width) if text is None else text
        return len(text.wrap(self.app.console, max(1, width)))

    def _text(self, width: int) -> Text:
        if self.status is None:
            return Text("")
        width = max(20, width)
        lines = pack(status_items(self.status), width)
        if self.status.bench_short:
            shorter = pack(status_items(replace(self.status, bench=self.status.bench_short)), width)
            lines = shorter if len(shorter) < len(lines) else lines
        if self.status.reason:
            lines = with_reason(lines, reason_text(self.status.state, self.status.reason), width, self.app.console)
        elif self.status.health:
            health = self.status.health
            lines = with_reason(lines, Text(f"{health.mark}: {health.reason}", style=HEALTH_STYLES[health.mark]),
                                width, self.app.console)
        return Text("\n", no_wrap=True).join(lines)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # Packed for the width the layout offers, not the width of the previous layout.
        return self._height(width)

    def render(self) -> Text:
        return self._text(self.size.width)
