"""Monitor screen: one run, live: loss with its baselines and alerts, bits per byte, speed and MFU,
memory, the latest benchmark score, samples, alerts and log; whether it stalled or slowed.

It follows the chosen run, else the newest running one, else the newest; a worker thread reads
what was appended since the last look. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from babyllama.devices import AcceleratorReading, read_accelerators
from babyllama.runs import ACTIVE_STATES, RunDir, state_words, stop_overdue
from babyllama_tui.screens.app_screen import AppScreen
from babyllama_tui.screens.commands import ScreenKeysProvider
from babyllama_tui.screens.job_dialogs import request_bench, request_cancel, request_eval, request_export
from babyllama_tui.screens.pick_run import PickRunScreen, PickRunsScreen
from babyllama_tui.screens.run_control import STOPPABLE_STATES, request_kill, request_stop
from babyllama_tui.textual_fixes import KeyFooter
from babyllama_tui.training.compare import ComparedRun, CompareSet, same_data_runs
from babyllama_tui.training.eta import eta_seconds
from babyllama_tui.training.formatting import (
    format_bench,
    format_count,
    format_flops,
    format_lr,
    format_mfu,
    format_mib_short,
    format_ms,
    format_number,
)
from babyllama_tui.training.history import MetricsHistory, bucket_means
from babyllama_tui.training.run_follower import RunFollower
from babyllama_tui.training.run_health import check_health
from babyllama_tui.training.run_jobs import has_checkpoint
from babyllama_tui.training.runs_watcher import RunRow, RunsWatcher
from babyllama_tui.widgets.alert_list import AlertList
from babyllama_tui.widgets.jobs_strip import JobsStrip
from babyllama_tui.widgets.log_tail import LogTail
from babyllama_tui.widgets.loss_chart import WINDOWS, LossChart
from babyllama_tui.widgets.metric_card import MetricCard
from babyllama_tui.widgets.mode_header import ModeHeader
from babyllama_tui.widgets.run_status import RunStatus, RunStatusBar
from babyllama_tui.widgets.sample_list import SampleList

POLL_S = 0.5
# Each reading runs nvidia-smi and npu-smi (where installed) as processes: less often than the run's files.
ACCELERATOR_POLL_S = 2.0
# Points a sparkline is given; it reduces them to its width.
SPARK_POINTS = 120
# From this width the screen is -wide (app.tcss): the metric cards have room for longer notes.
WIDE_FROM = 120
FOLLOWING_ACTIONS = {
    "compare", "compare_previous", "log_scale", "window", "raw", "show_config", "full_log", "cancel_job",
}

NO_RUN_HINT = (
    "No run yet.\n\n"
    "Start one on the Train screen (2). Runs started with `babyllama train` in this project "
    "show here too, as they start."
)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def elapsed_s(status: dict, state: str, now: float, history: MetricsHistory) -> float | None:
    """The run's training time: its earlier processes' (from their metrics rows) and the current one's."""
    started = status.get("started")
    if not isinstance(started, (int, float)):
        return None
    end = now if state in ACTIVE_STATES else status.get("updated", now)
    return history.seconds_before(started) + max(0.0, end - started)


def speed_note(row: dict, wide: bool) -> str:
    """The speed card's note: MFU where the device's peak is known, else the achieved FLOP/s; both
    when wide (24 columns hold one at 80)."""
    flops = format_flops(row.get("flops_per_s")) if isinstance(row.get("flops_per_s"), (int, float)) else ""
    mfu = f"MFU {format_mfu(row['mfu'])}" if isinstance(row.get("mfu"), (int, float)) else ""
    if wide:
        return " ".join(part for part in (flops, mfu) if part)
    return mfu or flops


def accelerator_text(readings: list[AcceleratorReading]) -> tuple[str, str]:
    """The device card's value and note for the host's GPUs or NPUs: memory used/total summed
    over all chips, then the kind and the chips' mean utilisation (24 columns at 80)."""
    used = [r.memory_used_mb for r in readings if r.memory_used_mb is not None]
    total = [r.memory_total_mb for r in readings if r.memory_total_mb is not None]
    busy = [r.utilization_percent for r in readings if r.utilization_percent is not None]
    kinds = "/".join(sorted({r.kind for r in readings}))
    note = f"{kinds} {sum(busy) / len(busy):.0f}%" if busy else kinds
    memory = f"{format_mib_short(sum(used) if used else None)}/{format_mib_short(sum(total) if total else None)}"
    return memory, note


class MonitorScreen(AppScreen):
    COMMANDS = {ScreenKeysProvider}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_FROM, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    # Up and Down scroll the log at once; Tab moves to the samples.
    AUTO_FOCUS = "#log-tail"
    BINDINGS = [
        Binding("o", "open_run", "Open"),
        Binding("c", "compare", "Compare"),
        # In the palette and the help: the footer is full at 80 columns; the compare dialog names it.
        Binding("p", "compare_previous", "Compare with the previous run of the same data and tokenizer", show=False),
        Binding("l", "log_scale", "Log y"),
        Binding("w", "window", "Window"),
        # In the palette only: with Stop, all the keys would not fit in the footer at 80 columns.
        Binding("r", "raw", "Raw loss line", show=False),
        Binding("s", "stop_run", "Stop"),
        # Offered in Stop's place once a stop has waited STOP_OVERDUE_S.
        Binding("K", "kill_run", "Kill"),
        Binding("i", "show_config", "How the run was started", show=False),
        Binding("L", "full_log", "Whole log from its first line", show=False),
        # In the palette (ctrl+p) only, as Raw: the footer is full at 80 columns.
        Binding("x", "export", "Export a checkpoint (hf, llama2.c, gguf)", show=False),
        Binding("v", "evaluate", "Evaluate a checkpoint on a token file", show=False),
        Binding("b", "benchmark", "Benchmark a checkpoint (ceval, cmmlu)", show=False),
        Binding("X", "cancel_job", "Cancel the run's export, evaluation or benchmark at work", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.follower: RunFollower | None = None
        # The runs whose loss is drawn with the followed run's.
        self.compared = CompareSet()
        self._polling = False
        self._loading: str = ""
        self._watcher: RunsWatcher | None = None
        self._shown_version = -1
        # The followed run's state and whether its stop is overdue, as the footer's keys last followed them.
        self._shown_state: tuple[str, bool] | None = None
        self._shown_process_memory: dict | None = None
        # What nvidia-smi and npu-smi report; empty where neither is installed.
        self.accelerators: list[AcceleratorReading] = []
        self._reading_accelerators = False
        # Kept as attributes: a poll may finish before the nested containers have mounted them.
        self.status_bar = RunStatusBar(id="run-status")
        self.chart = LossChart(id="loss-chart")
        self.cards = {
            "lr": MetricCard("lr", id="card-lr"),
            "speed": MetricCard("tok/s", id="card-speed"),
            "memory": MetricCard("mem", id="card-memory"),
            "device": MetricCard("device", id="card-device"),
            # Shown when the screen is tall enough (the -tall rules in app.tcss).
            "grad": MetricCard("grad", id="card-grad", classes="-extra"),
            "step": MetricCard("step", id="card-step", classes="-extra"),
            "tokens": MetricCard("tokens", id="card-tokens", classes="-extra"),
        }
        self.sample_view = SampleList(id="sample")
        self.alert_list = AlertList(id="alerts")
        self.log_tail = LogTail(id="log-tail")
        # Whether the speed card's note was last made for the wide layout.
        self._wide_cards: bool | None = None

    def compose(self) -> ComposeResult:
        yield ModeHeader("monitor")
        yield Static(NO_RUN_HINT, id="monitor-hint")
        yield self.status_bar
        self.jobs_strip = JobsStrip(self.app.root, id="monitor-jobs")
        yield self.jobs_strip
        with Horizontal(id="monitor-main"):
            yield self.chart
            with Vertical(id="metric-cards"):
                yield from self.cards.values()
        with Horizontal(id="monitor-bottom"):
            yield self.sample_view
            yield self.alert_list
            yield self.log_tail
        yield KeyFooter()

    def on_mount(self) -> None:
        self._watcher = RunsWatcher(self.app.runs_dir, self.app.stall_after_s)
        # Registered before the first _follow, whose tick may itself choose the run to follow.
        self.watch(self.app, "current_run", self._chosen, init=False)
        self.set_interval(POLL_S, self._tick)
        self.set_interval(ACCELERATOR_POLL_S, self._poll_accelerators)
        self.app.runs_moved.subscribe(self, self._run_moved)
        self._chosen(self.app.current_run)

    def on_screen_resume(self) -> None:
        self._tick()
        self._poll_accelerators()

    # Which run

    def _follow(self, path: Path | None) -> None:
        if path is not None and self.follower is not None and self.follower.path == path:
            return
        self.follower = RunFollower(path) if path is not None else None
        if path is not None:
            self.compared.drop(path)
        self.chart.follow(self.follower, self.compared.runs)
        self.log_tail.clear()
        self.sample_view.show([])
        self._show_alerts()
        self.set_class(self.follower is None, "-no-run")
        self.sub_title = path.name if path is not None else ""
        self.jobs_strip.show_run(path)
        self._loading = ""
        self._shown_version = -1
        self._shown_state = None
        self._show_status()
        self.refresh_bindings()
        self._tick()

    def _run_moved(self, moved: tuple[Path, Path | None]) -> None:
        """A run renamed or trashed from the app: a compared one is drawn under its new name, or taken away."""
        old, new = moved
        if old in self.compared.paths:
            self.compared.move(old, new)
            self.chart.follow(self.follower, self.compared.runs)

    def _chosen(self, path: Path | None) -> None:
        self._follow(path if path is not None else self._default_run())

    def _default_run(self) -> Path | None:
        """The run shown when none was chosen: the newest running one, else the newest."""
        assert self._watcher is not None
        rows = self._watcher.poll(self.app.clock())
        return next((row.path for row in rows if row.state in ACTIVE_STATES), rows[0].path if rows else None)

    # Polling

    def _tick(self) -> None:
        if not self.is_current:
            return
        chosen = self.app.current_run
        if chosen is not None and not RunDir(chosen).exists():
            # Renamed or deleted outside the app (`babyllama runs`): show the run shown when none is chosen.
            self.app.current_run = None
            return
        if gone := [path for path in self.compared.paths if not path.is_dir()]:
            # The same for a compared run: its new name is not known here.
            self.compared.choose(path for path in self.compared.paths if path not in gone)
            self.chart.follow(self.follower, self.compared.runs)
        if self.app.current_run is None:
            default = self._default_run()
            if default != (self.follower.path if self.follower else None):
                self._follow(default)
        if self.follower is None:
            return
        if not self._polling:
            self._polling = True
            self._poll(self.follower, self.compared.runs)
        self._show_status()
        self.jobs_strip.refresh_jobs()

    @work(thread=True, group="monitor-poll")
    def _poll(self, follower: RunFollower, compared: list[ComparedRun]) -> None:
        follower.poll_status()
        follower.poll_process_memory()
        # The log first: the first read of a long metrics file takes a while.
        lines, restarted = follower.poll_log()
        self.app.call_from_thread(self._show_log, follower, lines, restarted)
        follower.poll_metrics(progress=lambda done, size: self.app.call_from_thread(
            self._show_loading, follower, done, size))
        for run in compared:
            run.poll()
        self.app.call_from_thread(self._show_polled, follower)

    def _poll_accelerators(self) -> None:
        if self.is_current and not self._reading_accelerators:
            self._reading_accelerators = True
            self._read_accelerators()

    @work(thread=True, group="monitor-accelerators")
    def _read_accelerators(self) -> None:
        self.app.call_from_thread(self._show_accelerators, read_accelerators())

    def _show_accelerators(self, readings: list[AcceleratorReading]) -> None:
        self._reading_accelerators = False
        if readings != self.accelerators:
            self.accelerators = readings
            self._show_cards()

    def _show_log(self, follower: RunFollower, lines: list[str], restarted: bool) -> None:
        if follower is self.follower:
            self.log_tail.add(lines, restarted)

    def _show_loading(self, follower: RunFollower, done: int, size: int) -> None:
        """Between pieces of a long first read: the curve grows while the rest is read."""
        if follower is not self.follower:
            return
        self._loading = f"reading metrics {done / max(size, 1):.0%}"
        self._show_status()
        self._show_rows()

    def _show_polled(self, follower: RunFollower) -> None:
        self._polling = False
        if follower is not self.follower:
            return
        self._loading = ""
        self._show_status()
        self._show_rows()
        if follower.process_memory != self._shown_process_memory:
            self._shown_process_memory = follower.process_memory
            self._show_cards()

    def _show_rows(self) -> None:
        assert self.follower is not None
        self.chart.redraw_if_changed()
        # Redrawn only when a row came: over a slow link every repaint costs.
        if self.follower.history.version != self._shown_version:
            self._shown_version = self.follower.history.version
            self._show_cards()
            self._show_sample()
            self._show_alerts()

    # Drawing

    def _show_status(self) -> None:
        bar = self.status_bar
        follower = self.follower
        if follower is None:
            bar.show(None)
            return
        now = self.app.clock()
        started = follower.status.get("started")
        if isinstance(started, (int, float)) and now > started:
            # Whole seconds since the start: elapsed and ETA then tick together, one repaint a second.
            now = started + math.floor(now - started)
        history = follower.history
        last = history.last_train or {}
        state = follower.state.state
        steps = [s for s in (follower.status.get("step"), last.get("step")) if isinstance(s, int)]
        eta = None
        with follower.lock:
            points = list(history.recent)
            elapsed = elapsed_s(follower.status, state, now, history)
        if state in ACTIVE_STATES:
            eta = eta_seconds(points, follower.max_steps, now, since=started)
        note = self._loading
        if follower.bad_lines:
            note = f"{note} {follower.bad_lines} unreadable metrics lines".strip()
        health = None
        if state == "running":
            with follower.lock:
                times = [at for _, at in history.recent]
                speeds = history.process_speeds().tolist()
            health = check_health(state=state, now=now, started=started, last_row_at=follower.metrics_changed_at,
                                  heartbeat_at=follower.status.get("updated"), train_times=times, speeds=speeds,
                                  stall_after_s=self.app.stall_after_s, checkpoints_dir=follower.run.checkpoints_dir)
        if health is not None and health.mark == "stalled":
            # A run that does not move has no time to finish.
            eta = None
        evaluation = history.last_eval or {}
        bench = history.last_bench
        reason = follower.state.reason or (follower.status.get("error") if state != "finished" else None)
        if state not in ACTIVE_STATES and not len(history):
            # The chart, with no train row to draw, says how the run ended and why, whole.
            reason = None
        asked = follower.status.get("stop_requested")
        overdue = stop_overdue(state, asked, now)
        if (state, overdue) != self._shown_state:
            self._shown_state = (state, overdue)
            self.refresh_bindings()
        bar.show(RunStatus(
            name=follower.path.name,
            state=state,
            reason=reason,
            step=max(steps) if steps else None,
            max_steps=follower.max_steps,
            tokens=last.get("tokens"),
            elapsed_s=elapsed,
            eta_s=eta,
            note=note,
            state_words=state_words(state, asked, now),
            stop_overdue=overdue,
            bpb=_number((history.last_counted or {}).get("bpb")),
            val_bpb=_number(evaluation.get("val_bpb")),
            bench=format_bench(bench) if bench else None,
            bench_short=format_bench(bench, short=True) if bench else None,
            health=health,
        ))

    def _series(self, name: str) -> list[float]:
        """A train series over the chart's window, as SPARK_POINTS means (the sparkline reduces further)."""
        assert self.follower is not None
        history = self.follower.history
        with self.follower.lock:
            start = history.start_index(self.chart.window)
            _, values = bucket_means(history.steps.values[start:], history.series[name].values[start:], SPARK_POINTS)
        return values.tolist()

    def _show_cards(self) -> None:
        follower = self.follower
        if follower is None or follower.history.last_train is None:
            # A run waiting for its first row shows no figures, not those of the run shown before,
            # but the memory its process holds.
            for card in self.cards.values():
                card.show("-")
            if follower is not None and follower.process_memory is not None:
                self._show_memory(follower.process_memory, None)
            return
        last = follower.history.last_train
        mem = last.get("mem") if isinstance(last.get("mem"), dict) else follower.process_memory or {}
        self.cards["lr"].show(format_lr(last.get("lr")), self._series("lr"))
        self._wide_cards = self.size.width >= WIDE_FROM
        self.cards["speed"].show(format_count(last.get("tokens_per_s")), self._series("tokens_per_s"),
                                 speed_note(last, self._wide_cards))
        self._show_memory(mem, self._series("rss_mb"))
        device = str(mem.get("device") or "-")
        if self.accelerators:
            memory, note = accelerator_text(self.accelerators)
            self.cards["device"].show(memory, None, note)
        elif mem.get("device_alloc_mb") is not None:
            peak = mem.get("device_peak_mb")
            note = device + (f" peak {format_mib_short(peak)}" if peak is not None else "")
            self.cards["device"].show(format_mib_short(mem["device_alloc_mb"]), self._series("device_mb"), note)
        else:
            self.cards["device"].show(Text(device, style="bold"), None, "(host mem)" if device == "cpu" else "")
        train = follower.config.get("train") if isinstance(follower.config.get("train"), dict) else {}
        clip = train.get("grad_clip")
        self.cards["grad"].show(format_number(last.get("grad_norm")), self._series("grad_norm"),
                                f"clip {clip:g}" if isinstance(clip, (int, float)) and clip > 0 else "")
        self.cards["step"].show(format_ms(last.get("step_ms")), self._series("step_ms"))
        tokens, step = last.get("tokens"), last.get("step")
        per_step = f"{format_count(tokens / step)}/step" if isinstance(tokens, int) and step else ""
        self.cards["tokens"].show(format_count(tokens), None, per_step)

    def _show_memory(self, mem: dict, series: list[float] | None) -> None:
        hosts = [h for h in mem.get("hosts") or [] if isinstance(h, dict)]
        if len(hosts) > 1:
            # A run across hosts: each host's ranks' memory and the host's use, as its ranks reported them.
            note = "  ".join(f"{h.get('host')} {format_mib_short(h.get('rss_mb'))} "
                             f"({format_mib_short(h.get('host_used_mb'))}/{format_mib_short(h.get('host_total_mb'))})"
                             for h in hosts)
            self.cards["memory"].show(format_mib_short(mem.get("rss_mb")), series, note)
            return
        used, total = mem.get("host_used_mb"), mem.get("host_total_mb")
        host = f"host {format_mib_short(used)}/{format_mib_short(total)}" if total else ""
        self.cards["memory"].show(format_mib_short(mem.get("rss_mb")), series, host)

    def on_resize(self) -> None:
        if self._wide_cards is not None and self._wide_cards != (self.size.width >= WIDE_FROM):
            self._show_cards()

    def _show_alerts(self) -> None:
        follower = self.follower
        if follower is None:
            self.alert_list.show([], 0)
        else:
            with follower.lock:
                alerts, count = list(follower.history.alerts), follower.history.alert_count
            self.alert_list.show(alerts, count)
        self.set_class(self.alert_list.count > 0, "-alerts")

    def _show_sample(self) -> None:
        """The newest sample first, then older ones below it (the panel scrolls): the model learning to write.
        A fine-tuning run's sample is an answer, shown after its question."""
        samples = list(self.follower.history.samples) if self.follower else []
        self.sample_view.show([(sample["step"], f"{sample.get('prompt')} → {sample['text']}" if sample.get("chat")
                                else sample["text"]) for sample in reversed(samples)])

    # Actions

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in FOLLOWING_ACTIONS:
            return self.follower is not None
        if action == "stop_run":
            return self.follower is not None and self.follower.state.state in STOPPABLE_STATES
        if action == "kill_run":
            return self._shown_state is not None and self._shown_state[1]
        if action in ("export", "evaluate", "benchmark"):
            return self.follower is not None and has_checkpoint(self.follower.path)
        return True

    def _run_rows(self) -> list[RunRow]:
        assert self._watcher is not None
        return self._watcher.poll(self.app.clock())

    def action_open_run(self) -> None:
        current = self.follower.path if self.follower else None

        def picked(path: Path | None) -> None:
            if path is not None:
                self.app.current_run = path

        self.app.push_screen(PickRunScreen("Monitor which run?", self._run_rows(), current=current), picked)

    def _compare_with(self, paths: list[Path]) -> None:
        self.compared.choose(paths)
        self.chart.follow(self.follower, self.compared.runs)
        self._tick()

    def action_compare(self) -> None:
        """The runs of the same data and tokenizer first (their losses compare directly), then the others."""
        assert self.follower is not None
        rows = self._run_rows()
        same = same_data_runs(self.follower.path, rows)
        suggested = {row.path for row in same}
        others = [row for row in rows if row.path != self.follower.path and row.path not in suggested]

        def picked(paths: list[Path] | None) -> None:
            if paths is not None:
                self._compare_with(paths)

        self.app.push_screen(PickRunsScreen("Compare the loss with which runs?", same + others, self.compared.paths,
                                            suggested=suggested), picked)

    def action_compare_previous(self) -> None:
        """Draw (or take away) the curve of the previous run of the same data and tokenizer: one key."""
        assert self.follower is not None
        same = same_data_runs(self.follower.path, self._run_rows())
        if not same:
            self.notify("No other run of the same data and tokenizer: c compares with any run.", severity="warning")
            return
        previous = same[0].path
        if previous in self.compared.paths:
            self._compare_with([path for path in self.compared.paths if path != previous])
        else:
            self._compare_with([*self.compared.paths, previous])

    def action_log_scale(self) -> None:
        self.chart.log_scale = not self.chart.log_scale

    def action_window(self) -> None:
        """All steps, then the last 10k, 1k and 100: the cards' sparklines follow the chart."""
        self.chart.window = WINDOWS[(WINDOWS.index(self.chart.window) + 1) % len(WINDOWS)]
        self._show_cards()

    def action_raw(self) -> None:
        self.chart.show_raw = not self.chart.show_raw

    def _on_followed(self, act: Callable[[Path], object]) -> None:
        """Apply `act` to the followed run's folder, if a run is followed."""
        if self.follower is not None:
            act(self.follower.path)

    def action_stop_run(self) -> None:
        self._on_followed(partial(request_stop, self))

    def action_kill_run(self) -> None:
        self._on_followed(partial(request_kill, self))

    def action_show_config(self) -> None:
        from babyllama_tui.screens.run_config import RunConfigScreen

        self._on_followed(lambda path: self.app.push_screen(RunConfigScreen(path)))

    def action_full_log(self) -> None:
        from babyllama_tui.screens.full_log import FullLogScreen

        self._on_followed(lambda path: self.app.push_screen(FullLogScreen(path)))

    def action_export(self) -> None:
        self._on_followed(partial(request_export, self))

    def action_evaluate(self) -> None:
        self._on_followed(partial(request_eval, self))

    def action_benchmark(self) -> None:
        self._on_followed(partial(request_bench, self))

    def action_cancel_job(self) -> None:
        self._on_followed(partial(request_cancel, self))
