"""LossChart: training loss (raw and smoothed), validation points, and a second run to compare.

Drawn with plotext. However many rows a run has, each line is first reduced to a few
points per character cell (`envelope` for the noisy raw loss, `bucket_means` for the
smooth ones), and new rows redraw the chart at most once a second.
"""

from __future__ import annotations

import math
import time

import numpy as np
from rich.text import Text
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from babyllama.runs import ACTIVE_STATES, CREATED, RunState
from babyllama_tui.training.formatting import format_loss
from babyllama_tui.training.history import bucket_means, envelope
from babyllama_tui.training.run_follower import RunFollower

RAW_COLOR = (110, 118, 140)
EMA_COLOR = (80, 170, 255)
VAL_COLOR = (255, 176, 32)
OTHER_COLOR = (225, 105, 225)
# Dots of braille per character cell across: the resolution lines are reduced to.
POINTS_PER_CELL = 2
Y_AXIS_CELLS = 7

WINDOWS: tuple[int | None, ...] = (None, 10_000, 1_000, 100)
# New rows redraw the chart at most this often: a redraw is most of what a slow link carries.
MIN_REDRAW_S = 1.0


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def step_label(step: float) -> str:
    """2000 -> "2k", 1500 -> "1.5k", 250 -> "250": short labels for the step axis."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(step) >= scale:
            return f"{step / scale:.3g}{suffix}"
    return f"{step:.0f}"


def step_ticks(low: float, high: float, count: int) -> list[float]:
    """About `count` round step numbers (1, 2 or 5 times a power of ten apart) within [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    spacing = max(1, next(m * power for m in (1, 2, 5, 10) if m * power >= raw))
    first = math.ceil(low / spacing) * spacing
    return [float(v) for v in np.arange(first, high + spacing / 2, spacing) if v <= high]


WAITING = "waiting for the first train row (the first step compiles the model)…"


def no_rows_text(state: RunState) -> Text:
    """What the chart says of a run with no train row yet: that it is waiting, or how it ended, with why in full."""
    if state.state in ACTIVE_STATES or state.state == CREATED:
        return Text(WAITING, style="dim")
    reason = state.reason or ""
    how = "killed" if reason.startswith("killed") else state.state
    text = Text(f"{how} before its first step", style="bold red" if state.state == "failed" else "bold")
    if reason:
        text.append(f"\n\n{reason}")
    return text


def window_label(window: int | None) -> str:
    return "all steps" if window is None else f"last {window:,} steps"


class LossChart(PlotextPlot):
    """The loss of the followed run and, optionally, of one more run."""

    log_scale: reactive[bool] = reactive(False)
    window: reactive[int | None] = reactive(None)
    show_raw: reactive[bool] = reactive(True)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.main: RunFollower | None = None
        self.other: RunFollower | None = None
        self._seen: tuple = ()
        self._redrawn_at = -math.inf
        self._title_markup = ""
        self._subtitle_markup = ""

    def follow(self, main: RunFollower | None, other: RunFollower | None = None) -> None:
        self.main, self.other = main, other
        self.update_titles()
        self.refresh()

    def watch_log_scale(self) -> None:
        self.update_titles()
        self.refresh()

    def watch_window(self) -> None:
        self.update_titles()
        self.refresh()

    def watch_show_raw(self) -> None:
        self.update_titles()
        self.refresh()

    def redraw_if_changed(self) -> None:
        """Refresh when a run logged something since the last drawing, and MIN_REDRAW_S has passed."""
        # The followers themselves, not only their versions: a run just opened can be at the
        # version the previous one was drawn at.
        versions = tuple((f, f.history.version) if f else None for f in (self.main, self.other))
        # And how the run stands, which the chart says until its first train row.
        versions += (self.main.state if self.main else None,)
        if versions != self._seen and time.monotonic() - self._redrawn_at >= MIN_REDRAW_S:
            self._seen = versions
            self._redrawn_at = time.monotonic()
            self.update_titles()
            self.refresh()

    def update_titles(self) -> None:
        title = Text()
        history = self.main.history if self.main else None
        last_train = history.last_train if history else None
        last_eval = history.last_eval if history else None
        if self.show_raw:
            title.append("━ ", style=_hex(RAW_COLOR))
            title.append(f"loss {format_loss(last_train.get('loss') if last_train else None)}  ")
        title.append("━ ", style=_hex(EMA_COLOR))
        ema = history.series["ema"].last() if history and len(history) else None
        title.append(f"ema {format_loss(ema)}  ")
        title.append("● ", style=_hex(VAL_COLOR))
        title.append(f"val {format_loss(last_eval.get('val_loss') if last_eval else None)}")
        # The compared run is named in the subtitle, where the whole name fits beside the short
        # window and scale labels (the title's legend leaves it a few cells at 80 columns).
        subtitle = Text()
        if self.other is not None:
            subtitle.append("━ ", style=_hex(OTHER_COLOR))
            subtitle.append(f"vs {self.other.path.name} · ")
        subtitle.append(f"{window_label(self.window)} · {'log' if self.log_scale else 'linear'} y")
        # Setting a title repaints the chart even when it is unchanged.
        if title.markup != self._title_markup:
            self._title_markup = title.markup
            self.border_title = title
        if subtitle.markup != self._subtitle_markup:
            self._subtitle_markup = subtitle.markup
            self.border_subtitle = subtitle

    def render(self):
        if self.main is None:
            return Text(WAITING, style="dim")
        if len(self.main.history) == 0:
            return no_rows_text(self.main.state)
        buckets = max(8, (self.size.width - Y_AXIS_CELLS) * POINTS_PER_CELL)
        with self.main.lock:
            lines, (low, high) = self._run_lines(self.main, buckets, EMA_COLOR, VAL_COLOR, self.show_raw, None)
        if self.other is not None:
            with self.other.lock:
                lines += self._run_lines(self.other, buckets, OTHER_COLOR, OTHER_COLOR, False, (low, high))[0]
        if self.log_scale:
            lines = [(xs[ys > 0], ys[ys > 0], color, marker) for xs, ys, color, marker in lines]
        lines = [line for line in lines if len(line[0])]
        plt = self.plt
        plt.clear_figure()
        for xs, ys, color, marker in lines:
            if marker == "braille":
                plt.plot(xs.tolist(), ys.tolist(), marker=marker, color=color)
            else:
                plt.scatter(xs.tolist(), ys.tolist(), marker=marker, color=color)
        x_ticks = step_ticks(low, high, max(2, self.size.width // 12))
        plt.xticks(x_ticks, [step_label(t) for t in x_ticks])
        plt.xlim(low, high)
        if lines:
            y_low = min(float(ys.min()) for _, ys, _, _ in lines)
            y_high = max(float(ys.max()) for _, ys, _, _ in lines)
            y_ticks = loss_ticks(y_low, y_high, max(2, self.size.height // 2), self.log_scale)
            plt.yticks(y_ticks, [f"{t:.4g}" for t in y_ticks])
        if self.log_scale:
            plt.yscale("log")
        return super().render()

    def _run_lines(self, follower: RunFollower, buckets: int, line_color, val_color, raw: bool,
                   clip: tuple[float, float] | None) -> tuple[list[tuple], tuple[float, float]]:
        """One run's lines as (xs, ys, color, marker), and the step range they cover. With `clip`,
        only the part within that step range (the main run's) is taken."""
        history = follower.history
        steps = history.steps.values
        if clip is None:
            start, stop = history.start_index(self.window), len(steps)
        else:
            start = int(np.searchsorted(steps, clip[0]))
            stop = int(np.searchsorted(steps, clip[1], side="right"))
        x = steps[start:stop].astype(np.float64)
        if len(x) == 0:
            return [], clip or (0.0, 1.0)
        val_steps = history.val_steps.values
        if clip is not None:
            first = clip[0]
        elif start == 0 and len(val_steps):
            # The evaluation before the first step (step 0) belongs on the chart too.
            first = min(x[0], float(val_steps[0]))
        else:
            first = x[0]
        lines = []
        if raw:
            lines.append((*envelope(x, history.series["loss"].values[start:stop], buckets), RAW_COLOR, "braille"))
        lines.append((*bucket_means(x, history.series["ema"].values[start:stop], buckets), line_color, "braille"))
        shown = (val_steps >= first) & (val_steps <= x[-1])
        # A dot takes a whole cell: past one per two cells they would hide the lines.
        val_x, val_y = bucket_means(val_steps[shown], history.val_loss.values[shown], max(1, buckets // 4))
        lines.append((val_x, val_y, val_color, "●"))
        first, last = float(first), float(x[-1])
        return lines, (first, max(last, first + 1.0))


def loss_ticks(low: float, high: float, count: int, log: bool) -> list[float]:
    """About `count` round values between low and high: 1-2-5 steps apart on a linear axis,
    1, 1.5, 2, 3, 5, 7 times powers of ten on a log one."""
    if high <= low:
        return [low]
    if not log:
        raw = (high - low) / max(1, count)
        power = 10 ** math.floor(math.log10(raw))
        spacing = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
        first = math.ceil(low / spacing) * spacing
        return [round(v, 10) for v in np.arange(first, high + spacing / 2, spacing) if v <= high]
    candidates = [
        m * 10.0**k
        for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for m in (1, 1.5, 2, 3, 5, 7)
        if low <= m * 10.0**k <= high
    ]
    if len(candidates) < min(3, count):
        # Less than a factor of ~3 apart (a loss between 5.5 and 9): evenly spaced values are
        # nearly evenly spaced on the log axis too. Asked for a few more, to get three.
        for asked in range(count, count + 4):
            ticks = loss_ticks(low, high, asked, log=False)
            if len(ticks) >= 3:
                break
        return ticks
    stride = max(1, math.ceil(len(candidates) / max(1, count)))
    return candidates[::stride]
