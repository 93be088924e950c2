"""LossChart: training loss (raw and smoothed), validation points, and the runs compared with it.

Drawn with plotext. However many rows a run has, each line is first reduced to a few
points per character cell (`envelope` for the noisy raw loss, `bucket_means` for the
smooth ones), and new rows redraw the chart at most once a second. While runs are compared,
each has its colour and marker, and a legend under the plot names each with its last loss.

The run's baselines (the loss of a model that knows nothing, ln vocab, and of one that knows
only token frequencies, the unigram entropy) are drawn as labelled lines when they lie within
BASELINE_REACH of the curves' range, which then grows to hold them; one further away would crush
the curves, so it is only named at the plot's edge, with an arrow towards it. The run's alerts
are marked at their steps along the top of the plot (▼, as in the Monitor's list of alerts).
"""

from __future__ import annotations

import math
import time

import numpy as np
from rich.text import Text
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from babyllama.runs import ACTIVE_STATES, CREATED, RunState
from babyllama_tui.training.compare import ComparedRun, last_loss, run_span, step_axis
from babyllama_tui.training.formatting import format_loss
from babyllama_tui.training.history import bucket_means, envelope
from babyllama_tui.training.run_follower import RunFollower

RAW_COLOR = (110, 118, 140)
EMA_COLOR = (80, 170, 255)
VAL_COLOR = (255, 176, 32)
# A compared run's line and validation points take the colour and marker of its slot (both cycle,
# the markers with a different period, so two runs differ in one or the other).
COMPARE_COLORS = ((225, 105, 225), (110, 210, 110), (240, 90, 90), (230, 210, 80), (80, 215, 215), (170, 140, 255))
COMPARE_MARKERS = ("◆", "▲", "■", "▼", "◇", "△", "□", "▽")
MAIN_MARKER = "●"
# Rows the plot keeps, its axis and labels included, however many runs the legend lists; and the
# legend takes at most this fraction (1/LEGEND_SHARE) of the chart.
MIN_PLOT_ROWS = 6
LEGEND_SHARE = 3
LEGEND_GAP = 3
# Dots of braille per character cell across: the resolution lines are reduced to.
POINTS_PER_CELL = 2
Y_AXIS_CELLS = 7

BASELINE_COLOR = (170, 170, 120)
# A baseline is drawn when it lies within this fraction of the curves' span beyond their range.
BASELINE_REACH = 0.25
BASELINES = (("uniform", "uniform_loss"), ("unigram", "unigram_loss"))
ALERT_MARKER = "▼"
# An alert whose step was rolled back or that ended the run is red; a skipped step or a warning, amber.
ALERT_COLORS = {"rolled_back": (240, 90, 90), "stopped": (240, 90, 90)}
ALERT_COLOR = (255, 176, 32)

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


def baseline_values(row: dict | None) -> list[tuple[str, float]]:
    """(name, loss) of each baseline a `baselines` row gives."""
    if not row:
        return []
    return [(name, float(row[key])) for name, key in BASELINES
            if isinstance(row.get(key), (int, float)) and math.isfinite(row[key]) and row[key] > 0]


def place_baselines(baselines: list[tuple[str, float]], low: float, high: float
                    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]], list[tuple[str, float]], float, float]:
    """(drawn, above, below, low, high): the baselines within reach of the curves' range [low, high]
    are drawn and the range grows to hold them; the others are above or below it."""
    reach = BASELINE_REACH * max(high - low, abs(high) * 0.01)
    drawn = [(name, v) for name, v in baselines if low - reach <= v <= high + reach]
    above = [(name, v) for name, v in baselines if v > high + reach]
    below = [(name, v) for name, v in baselines if v < low - reach]
    values = [v for _, v in drawn]
    return drawn, above, below, min([low, *values]), max([high, *values])


def baseline_label(baselines: list[tuple[str, float]]) -> str:
    return " · ".join(f"{name} {format_loss(value)}" for name, value in baselines)


def window_label(window: int | None) -> str:
    return "all steps" if window is None else f"last {window:,} steps"


def compare_style(slot: int) -> tuple[tuple[int, int, int], str]:
    """A compared run's colour and marker."""
    return COMPARE_COLORS[slot % len(COMPARE_COLORS)], COMPARE_MARKERS[slot % len(COMPARE_MARKERS)]


def legend_entries(runs: list[tuple[str, tuple[int, int, int], str, RunFollower]], width: int) -> list[Text]:
    """One entry a run: its colour and marker, its name, its last loss at its last step and its
    last validation loss, aligned in columns; the validation loss is left out when an entry would
    be wider than `width`, and only then is a name cut short."""
    facts = []
    for name, color, marker, follower in runs:
        with follower.lock:
            last = last_loss(follower.history)
        facts.append((name, color, marker, last))
    name_width = max(len(name) for name, *_ in facts)
    loss_width = max(len(format_loss(last.loss if last else None)) for *_, last in facts)
    step_width = max(len(f"@{last.step:,}") if last else 0 for *_, last in facts)
    entries = []
    for with_val in (True, False):
        entries = []
        for name, color, marker, last in facts:
            text = Text("━", style=_hex(color))
            text.append(marker, style=_hex(color))
            text.append(f" {name:<{name_width}}  ")
            text.append(f"{format_loss(last.loss if last else None):>{loss_width}}", style="bold")
            text.append(f" {f'@{last.step:,}' if last else '':<{step_width}}", style="dim")
            if with_val:
                text.append(f"  val {format_loss(last.val_loss if last else None)}", style="dim")
            entries.append(text)
        if max(entry.cell_len for entry in entries) <= width:
            return entries
    for entry in entries:
        entry.truncate(width, overflow="ellipsis")
    return entries


def legend_lines(entries: list[Text], width: int, rows: int) -> list[Text]:
    """The entries one a line, on at most `rows` lines: in more columns, down each column first,
    when there are more entries than lines and `width` has room; when they still do not fit,
    the last place says how many were left out."""
    if not entries:
        return []
    column_width = max(entry.cell_len for entry in entries) + LEGEND_GAP
    lines = min(max(1, rows), len(entries))
    columns = min(max(1, (width + LEGEND_GAP) // column_width), math.ceil(len(entries) / lines))
    places = lines * columns
    if len(entries) > places:
        entries = [*entries[: places - 1], Text(f"+{len(entries) - places + 1} more", style="dim")]
    out = []
    for i in range(lines):
        line = Text()
        for j, entry in enumerate(entries[i::lines]):
            line.append(" " * (j * column_width - line.cell_len))
            line.append_text(entry)
        out.append(line)
    return out


class LossChart(PlotextPlot):
    """The loss of the followed run and of the runs compared with it."""

    log_scale: reactive[bool] = reactive(False)
    window: reactive[int | None] = reactive(None)
    show_raw: reactive[bool] = reactive(True)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.main: RunFollower | None = None
        self.compared: list[ComparedRun] = []
        self._seen: tuple = ()
        self._redrawn_at = -math.inf
        # The step axis last drawn.
        self.step_range: tuple[float, float] | None = None
        # The baselines last drawn as lines, and those named above and below the plot.
        self.baselines_shown: tuple[list, list, list] = ([], [], [])
        self._title_markup = ""
        self._subtitle_markup = ""

    def follow(self, main: RunFollower | None, compared: list[ComparedRun] | None = None) -> None:
        self.main, self.compared = main, list(compared or [])
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
        followers = [self.main, *(run.follower for run in self.compared)]
        versions = tuple((f, f.history.version) if f else None for f in followers)
        # And how the run stands, which the chart says until its first train row.
        versions += (self.main.state if self.main else None,)
        if versions != self._seen and time.monotonic() - self._redrawn_at >= MIN_REDRAW_S:
            self._seen = versions
            self._redrawn_at = time.monotonic()
            self.update_titles()
            self.refresh()

    def update_titles(self) -> None:
        title = self._compare_title() if self.compared else self._run_title()
        subtitle = Text(f"{window_label(self.window)} · {'log' if self.log_scale else 'linear'} y")
        # Setting a title repaints the chart even when it is unchanged.
        if title.markup != self._title_markup:
            self._title_markup = title.markup
            self.border_title = title
        if subtitle.markup != self._subtitle_markup:
            self._subtitle_markup = subtitle.markup
            self.border_subtitle = subtitle

    def _run_title(self) -> Text:
        """The followed run's legend: its last raw, smoothed and validation losses."""
        title = Text()
        history = self.main.history if self.main else None
        last_counted = history.last_counted if history else None
        last_eval = history.last_eval if history else None
        if self.show_raw:
            title.append("━ ", style=_hex(RAW_COLOR))
            title.append(f"loss {format_loss(last_counted.get('loss') if last_counted else None)}  ")
        title.append("━ ", style=_hex(EMA_COLOR))
        ema = history.series["ema"].last() if history and len(history) else None
        title.append(f"ema {format_loss(ema)}  ")
        title.append("● ", style=_hex(VAL_COLOR))
        title.append(f"val {format_loss(last_eval.get('val_loss') if last_eval else None)}")
        return title

    def _compare_title(self) -> Text:
        """Short enough for 80 columns: each run's figures are in the legend under the plot."""
        title = Text(f"loss · {len(self.compared) + 1} runs")
        if self.show_raw:
            title.append("  ━ ", style=_hex(RAW_COLOR))
            title.append("raw")
        return title

    def _styled_runs(self) -> list[tuple[str, tuple[int, int, int], str, RunFollower]]:
        """(name, colour, marker, follower) of each run drawn: the followed one first."""
        assert self.main is not None
        runs = [(self.main.path.name, EMA_COLOR, MAIN_MARKER, self.main)]
        for run in self.compared:
            runs.append((run.path.name, *compare_style(run.slot), run.follower))
        return runs

    def render(self):
        if self.main is None:
            return Text(WAITING, style="dim")
        if len(self.main.history) == 0:
            return no_rows_text(self.main.state)
        runs = self._styled_runs()
        legend = []
        if self.compared:
            entries = legend_entries(runs, self.size.width)
            rows = min(self.size.height - MIN_PLOT_ROWS, self.size.height // LEGEND_SHARE)
            legend = legend_lines(entries, self.size.width, rows)
        height = max(1, self.size.height - len(legend))
        buckets = max(8, (self.size.width - Y_AXIS_CELLS) * POINTS_PER_CELL)
        spans = []
        for *_, follower in runs:
            with follower.lock:
                spans.append(run_span(follower.history))
        low, high = step_axis(spans[0], spans[1:], self.window)
        lines = []
        for i, (_, color, marker, follower) in enumerate(runs):
            # Alone, the followed run's validation points are orange; compared, each run is one colour.
            val_color = VAL_COLOR if not self.compared else color
            with follower.lock:
                lines += self._run_lines(follower, buckets, color, val_color, marker, self.show_raw and i == 0,
                                         (low, high))
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
        self.step_range = (low, high)
        self.baselines_shown = ([], [], [])
        if lines:
            y_low = min(float(ys.min()) for _, ys, _, _ in lines)
            y_high = max(float(ys.max()) for _, ys, _, _ in lines)
            with self.main.lock:
                baselines = baseline_values(self.main.history.baselines)
                alerts = [(row["step"], row.get("action")) for row in self.main.history.alerts
                          if low <= row["step"] <= high]
            drawn, above, below, y_low, y_high = place_baselines(baselines, y_low, y_high)
            self.baselines_shown = (drawn, above, below)
            if drawn:
                plt.ylim(y_low, y_high)
            self._draw_baselines(drawn, above, below, (low, high), (y_low, y_high))
            for action in dict.fromkeys(action for _, action in alerts):
                steps = [float(step) for step, a in alerts if a == action]
                plt.scatter(steps, [y_high] * len(steps), marker=ALERT_MARKER,
                            color=ALERT_COLORS.get(action, ALERT_COLOR))
            y_ticks = loss_ticks(y_low, y_high, max(2, height // 2), self.log_scale)
            plt.yticks(y_ticks, [f"{t:.4g}" for t in y_ticks])
        if self.log_scale:
            plt.yscale("log")
        # PlotextPlot.render would draw over the whole widget; this is it, less the legend's lines.
        plt.plotsize(self.size.width, height)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        plot = Text.from_ansi(plt.build())
        if not legend:
            return plot
        # plotext ends its drawing with a newline: the legend goes right under the axis labels.
        plot.rstrip()
        return Text("\n").join([plot, *legend])

    def _draw_baselines(self, drawn: list[tuple[str, float]], above: list[tuple[str, float]],
                        below: list[tuple[str, float]], x: tuple[float, float], y: tuple[float, float]) -> None:
        """Each baseline within reach as a line labelled at its right end (where a falling curve is
        lowest); those out of reach named at the top right (above) or the bottom left (below),
        corners a falling curve leaves free."""
        plt = self.plt
        for name, value in drawn:
            plt.hline(value, color=BASELINE_COLOR)
            plt.text(f"{name} {format_loss(value)}", x=x[1], y=value, alignment="right", color=BASELINE_COLOR)
        if above:
            plt.text(f"↑ {baseline_label(above)}", x=x[1], y=y[1], alignment="right", color=BASELINE_COLOR)
        if below:
            plt.text(f"↓ {baseline_label(below)}", x=x[0], y=y[0], alignment="left", color=BASELINE_COLOR)

    def _run_lines(self, follower: RunFollower, buckets: int, line_color, val_color, val_marker: str, raw: bool,
                   clip: tuple[float, float]) -> list[tuple]:
        """One run's lines within the step range `clip`, as (xs, ys, color, marker)."""
        history = follower.history
        steps = history.steps.values
        start = int(np.searchsorted(steps, clip[0]))
        stop = int(np.searchsorted(steps, clip[1], side="right"))
        x = steps[start:stop].astype(np.float64)
        if len(x) == 0:
            return []
        lines = []
        if raw:
            lines.append((*envelope(x, history.series["loss"].values[start:stop], buckets), RAW_COLOR, "braille"))
        lines.append((*bucket_means(x, history.series["ema"].values[start:stop], buckets), line_color, "braille"))
        val_steps = history.val_steps.values
        shown = (val_steps >= clip[0]) & (val_steps <= x[-1])
        # A dot takes a whole cell: past one per two cells they would hide the lines.
        val_x, val_y = bucket_means(val_steps[shown], history.val_loss.values[shown], max(1, buckets // 4))
        lines.append((val_x, val_y, val_color, val_marker))
        return lines


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
