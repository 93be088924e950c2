"""Train screen: the form for a new run, and the table of runs.

Side by side on a wide terminal; below 120 columns one at a time, switched with n (new run)
and t (runs table) or the tabs. The table is read twice a second through `RunsWatcher`,
which touches a run's files only when they changed. Launching starts a detached
`babyllama train` (through msrun for more than one worker) and shows it on the monitor.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Button, DataTable, Static, Tab, Tabs

from babyllama.errors import UserError
from babyllama.runs import ACTIVE_STATES, ENDED_STATES, alert_words, launch_detached
from babyllama_tui.screens.app_screen import AppScreen
from babyllama_tui.screens.commands import ScreenKeysProvider
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.screens.job_dialogs import request_bench, request_cancel, request_eval, request_export
from babyllama_tui.screens.run_control import STOPPABLE_STATES, request_kill, request_resume, request_stop
from babyllama_tui.screens.run_manage import request_delete, request_note, request_rename
from babyllama_tui.textual_fixes import KeyFooter
from babyllama_tui.training.run_jobs import has_checkpoint
from babyllama_tui.training.runs_watcher import RunRow, RunsWatcher
from babyllama_tui.widgets.jobs_strip import JobsStrip
from babyllama_tui.widgets.mode_header import ModeHeader
from babyllama_tui.widgets.runs_table import ALERTS_STYLE, HEALTH_STYLES, RunsTable, state_text, state_with_hint

if TYPE_CHECKING:
    from babyllama.devices import AcceleratorReading
    from babyllama.planning import MemoryFit
    from babyllama_tui.training.new_run import FormCheck, RunPlan
    from babyllama_tui.widgets.new_run_form import NewRunForm
    from babyllama_tui.widgets.run_summary import RunSummary

REFRESH_S = 0.5
# Columns from which the form and the runs table are shown side by side.
WIDE_FROM = 120
PANES = {"runs": "#runs-pane", "new": "#new-run-pane"}
RUN_ACTIONS = {
    "open_run", "stop_run", "resume_run", "kill_run", "delete_run", "rename_run", "note_run", "show_config", "export",
    "evaluate", "benchmark", "fine_tune", "cancel_job",
}
SECTION_NAMES = {"model": "the model section", "train": "the training section"}
# Delete, rename and note share one place in the footer: named one by one they did not fit in 80 columns.
MANAGE_KEYS = Binding.Group("manage", compact=True)
# On a narrow terminal a pane's key is shown only while the other pane is.
PANE_ACTIONS = {"new_run": "new", "runs": "runs"}


def run_detail(row: RunRow, now: float) -> Text:
    text = Text(str(row.path), style="dim")
    if row.world_size and row.world_size > 1:
        text.append(f"  {row.world_size} workers", style="dim")
    if row.parent:
        text.append(f"  {row.parent}")
    if row.note:
        text.append(f"\n{row.note}", style="italic")
    if row.stop_overdue(now):
        text.append("\n")
        text.append_text(state_with_hint(row.state, row.state_words(now), overdue=True))
        text.append(" it, without a checkpoint: the trainer has not ended since the stop was asked")
    if row.reason:
        text.append("\n")
        text.append_text(state_text(row.state))
        text.append(f": {row.reason}")
    if row.health is not None:
        text.append("\n")
        text.append(f"{row.state}, {row.health.mark}", style=HEALTH_STYLES[row.health.mark])
        text.append(f": {row.health.reason}")
    if row.alerts:
        text.append("\n")
        text.append(f"{row.alerts:,} alert{'s' if row.alerts != 1 else ''}", style=ALERTS_STYLE)
        last = row.last_alert or {}
        if isinstance(last.get("step"), int) and isinstance(last.get("message"), str):
            text.append(f", the last at step {last['step']:,}: {alert_words(last['step'], last['message'])}")
    return text


class TrainScreen(AppScreen):
    COMMANDS = {ScreenKeysProvider}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_FROM, "-wide")]
    BINDINGS = [
        Binding("n", "new_run", "New run"),
        # esc is shown for the runs: it works from inside a field too, where t is typed.
        Binding("escape", "runs", "Runs"),
        Binding("t", "runs", "Runs", show=False),
        Binding("o", "open_run", "Monitor"),
        Binding("s", "stop_run", "Stop"),
        Binding("r", "resume_run", "Resume"),
        Binding("K", "kill_run", "Kill"),
        Binding("d", "delete_run", "Delete", group=MANAGE_KEYS),
        Binding("R", "rename_run", "Rename", group=MANAGE_KEYS),
        Binding("N", "note_run", "Note", group=MANAGE_KEYS),
        Binding("ctrl+l", "launch", "Launch"),
        Binding("i", "show_config", "How the run was started", show=False),
        Binding("x", "export", "Export a checkpoint (hf, llama2.c, gguf)", show=False),
        Binding("v", "evaluate", "Evaluate a checkpoint on a token file", show=False),
        Binding("b", "benchmark", "Benchmark a checkpoint (ceval, cmmlu)", show=False),
        Binding("X", "cancel_job", "Cancel the run's export, evaluation or benchmark at work", show=False),
        Binding("f", "fine_tune", "Fine-tune from this run (a new run)", show=False),
        Binding("H", "host_commands", "Write the form's run as a launch across hosts (a script)", show=False),
    ]

    pane: reactive[str] = reactive("runs", init=False)

    def __init__(self) -> None:
        super().__init__()
        self.form_check: FormCheck | None = None
        # The host's GPUs and NPUs (empty without nvidia-smi or npu-smi), read once the form is built.
        self._accelerators: list[AcceleratorReading] = []
        self._launching = False
        self._known_runs: tuple = ()
        self._rows: list[RunRow] = []
        self._detail: Text | None = None
        self.form: NewRunForm | None = None
        self.summary: RunSummary | None = None

    def compose(self) -> ComposeResult:
        self._watcher = RunsWatcher(self.app.runs_dir, self.app.stall_after_s)
        self._rows = self._watcher.poll(self.app.clock())
        # A first-time user starts at the form; someone with runs, at the table.
        self.set_reactive(TrainScreen.pane, "runs" if self._rows else "new")
        yield ModeHeader("train")
        tabs = Tabs(Tab("Runs", id="tab-runs"), Tab("New run", id="tab-new"), id="train-tabs", active=f"tab-{self.pane}")
        # n and t switch panes; a focusable tab bar would only be one more Tab press on the way to the form.
        tabs.can_focus = False
        yield tabs
        with Horizontal(id="train-panes"):
            with Vertical(id="new-run-pane", classes="pane") as new_pane:
                new_pane.border_title = "New run"
                yield Static("Reading the form's fields…", id="form-loading")
            with Vertical(id="runs-pane", classes="pane") as runs_pane:
                runs_pane.border_title = "Runs"
                yield RunsTable(id="runs-table")
                yield Static("", id="run-detail")
                yield JobsStrip(self.app.root, id="run-jobs")
                yield Static("No runs yet: fill in the form (n) and launch it (ctrl+l).", id="no-runs")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._show_runs(self._rows, self.app.clock())
        self._show_pane()
        if self.pane == "runs":
            self.query_one(RunsTable).focus()
        self.set_interval(REFRESH_S, self._refresh_runs)

    async def build_form(self) -> None:
        """Build the new-run form, if not yet built. Called once the screen's first frame is on the
        terminal (see on_screen_resume and the app's on_ready): built before that, the form's widgets delayed the first frame by half, and
        importing its modules (the engine's config among them) by a further twentieth."""
        from babyllama_tui.training.new_run import find_token_files
        from babyllama_tui.widgets.new_run_form import NewRunForm
        from babyllama_tui.widgets.run_summary import RunSummary

        pane = self.query_one("#new-run-pane")
        if self.form is not None:
            return
        if not pane.is_mounted:
            self.call_after_refresh(self.build_form)
            return
        app = self.app
        self.form = NewRunForm(root=app.root, data_dir=app.data_dir, runs_dir=app.runs_dir, now=app.clock(),
                                entries=find_token_files(app.data_dir), id="new-run-form")
        self.summary = RunSummary(id="run-summary")
        await self.query_one("#form-loading").remove()
        await pane.mount(self.form, self.summary)
        if self.pane == "new":
            self.form.focus_first()
        self._read_accelerators()

    @work(thread=True, group="train-accelerators")
    def _read_accelerators(self) -> None:
        """The summary judges memory on the devices when the host has some; nvidia-smi and npu-smi
        take a moment, so they run beside the form."""
        from babyllama.devices import read_accelerators

        readings = read_accelerators()
        if readings:
            self.app.call_from_thread(self._show_accelerators, readings)

    def _show_accelerators(self, readings: list[AcceleratorReading]) -> None:
        self._accelerators = readings
        self._recheck()

    def on_screen_resume(self) -> None:
        if self.form is None and self.app.first_frame_shown:
            # First shown from another screen: the form is built once this frame is on the terminal,
            # so the screen appears at once and the form a moment later. At the app's start, its
            # on_ready builds it.
            self.call_after_refresh(self.build_form)
        self._show_pane()
        self._refresh_runs()
        # Back from the Corpora screen, where new token files may have been made.
        self._rescan_token_files()

    # The runs table

    def _refresh_runs(self) -> None:
        """Twice a second while this screen is shown: nobody reads a table on a hidden screen."""
        now = self.app.clock()
        if self.is_current:
            self._show_runs(self._watcher.poll(now), now, poll_jobs=True)
        if self.form is not None and not self._form_in_sight():
            self.form.follow_clock(now)

    def _form_in_sight(self) -> bool:
        """Whether the form is on the terminal, maybe under a dialog. Its default run name follows
        the clock only while it is not: a launch takes the name the user saw."""
        return self in self.app.screen_stack and self.query_one("#new-run-pane").display

    def _show_runs(self, rows: list[RunRow], now: float, *, poll_jobs: bool = False) -> None:
        """`poll_jobs`: read the highlighted run's jobs again even if it is the same run."""
        self._rows = rows
        table = self.query_one(RunsTable)
        table.show(rows, now)
        self.query_one("#no-runs").display = not rows
        table.display = bool(rows)
        self._show_detail(now, poll_jobs=poll_jobs)
        paths = tuple(row.path for row in rows)
        if paths != self._known_runs:
            # A run name the form holds may have just been taken.
            self._known_runs = paths
            self._recheck()

    def _show_detail(self, now: float | None = None, *, poll_jobs: bool = False) -> None:
        """The highlighted run's folder and why it ended, and its jobs; the footer's keys follow its state."""
        row = self.query_one(RunsTable).highlighted_run
        detail = self.query_one("#run-detail", Static)
        detail.display = row is not None
        shown = run_detail(row, self.app.clock() if now is None else now) if row is not None else None
        self.query_one(JobsStrip).show_run(row.path if row is not None else None, poll=poll_jobs)
        if shown != self._detail:
            self._detail = shown
            if shown is not None:
                detail.update(shown)
        self.refresh_bindings()

    @on(DataTable.RowHighlighted, "#runs-table")
    def _row_highlighted(self) -> None:
        self._show_detail()

    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self) -> None:
        self.action_open_run()

    def _highlighted(self) -> RunRow | None:
        return self.query_one(RunsTable).highlighted_run

    def _narrow(self) -> bool:
        """Judged by the terminal's width, not the screen's -narrow class: this screen's on_resize
        runs before Textual's own resize handler moves the class across the breakpoint, and a
        screen resized while hidden gets no resize event of its own."""
        return self.app.size.width < WIDE_FROM

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        narrow = self._narrow()
        if narrow and action in PANE_ACTIONS:
            return self.pane != PANE_ACTIONS[action]
        if action in RUN_ACTIONS:
            if narrow and self.pane != "runs":
                return False
            row = self._highlighted() if self.is_mounted else None
            if row is None:
                return False
            if action == "stop_run":
                return row.state in STOPPABLE_STATES
            if action == "kill_run":
                return row.state in ACTIVE_STATES
            if action == "resume_run":
                return row.state in ENDED_STATES and row.latest_checkpoint is not None
            if action == "delete_run" or action == "rename_run":
                return row.state not in ACTIVE_STATES
            if action in ("export", "evaluate", "benchmark", "fine_tune"):
                return has_checkpoint(row.path)
        if action == "launch":
            # Shown and live even while the form has errors: ctrl+l then says what to fix.
            return not narrow or self.pane == "new"
        return True

    def _on_highlighted(self, act: Callable[[Path], object]) -> None:
        """Apply `act` to the highlighted run's folder, if a run is highlighted."""
        row = self._highlighted()
        if row is not None:
            act(row.path)

    def action_open_run(self) -> None:
        self._on_highlighted(self.app.monitor_run)

    def action_stop_run(self) -> None:
        self._on_highlighted(partial(request_stop, self))

    def action_kill_run(self) -> None:
        self._on_highlighted(partial(request_kill, self))

    def action_resume_run(self) -> None:
        self._on_highlighted(partial(request_resume, self))

    def action_delete_run(self) -> None:
        self._on_highlighted(lambda path: request_delete(self, path, self._refresh_runs))

    def action_rename_run(self) -> None:
        self._on_highlighted(lambda path: request_rename(self, path, self._show_renamed))

    def action_note_run(self) -> None:
        self._on_highlighted(lambda path: request_note(self, path, self._refresh_runs))

    def _show_renamed(self, path: Path) -> None:
        self._refresh_runs()
        self.query_one(RunsTable).highlight(path)

    def action_show_config(self) -> None:
        from babyllama_tui.screens.run_config import RunConfigScreen

        self._on_highlighted(lambda path: self.app.push_screen(RunConfigScreen(path)))

    def action_export(self) -> None:
        self._on_highlighted(partial(request_export, self))

    def action_evaluate(self) -> None:
        self._on_highlighted(partial(request_eval, self))

    def action_benchmark(self) -> None:
        self._on_highlighted(partial(request_bench, self))

    def action_cancel_job(self) -> None:
        self._on_highlighted(partial(request_cancel, self))

    async def action_fine_tune(self) -> None:
        """The new-run form, to fine-tune from the highlighted run."""
        row = self._highlighted()
        if row is None:
            return
        from babyllama_tui.training.new_run import shown_path

        self.pane = "new"
        await self.build_form()
        if self.form is not None:
            self.form.fine_tune_from(shown_path(row.path, self.app.root))
            self.form.focus_first()

    # Panes

    async def action_new_run(self) -> None:
        self.pane = "new"
        await self.build_form()
        if self.form is not None:
            self.form.focus_first()

    def action_runs(self) -> None:
        self.pane = "runs"
        self.query_one(RunsTable).focus()

    def on_resize(self) -> None:
        # Crossing the 120-column breakpoint shows or hides a pane and changes which keys apply.
        self._show_pane()

    def watch_pane(self) -> None:
        self._show_pane()

    def _show_pane(self) -> None:
        """Both panes when wide, the chosen one when narrow. Set as `display` rather than as a
        class on the screen, which would restyle the form's few hundred widgets."""
        narrow = self._narrow()
        for pane, selector in PANES.items():
            self.query_one(selector).display = not narrow or self.pane == pane
        tabs = self.query_one(Tabs)
        if tabs.active != f"tab-{self.pane}":
            tabs.active = f"tab-{self.pane}"
        self.refresh_bindings()

    @on(Tabs.TabActivated, "#train-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        chosen = event.tab.id.removeprefix("tab-")
        if chosen != self.pane:
            self.pane = chosen

    # The form

    def _rescan_token_files(self) -> None:
        if self.form is not None:
            from babyllama_tui.training.new_run import find_token_files

            self.form.show_token_files(find_token_files(self.app.data_dir))

    def on_new_run_form_changed(self) -> None:
        self._recheck()

    def _recheck(self) -> None:
        form, summary = self.form, self.summary
        if form is None or summary is None:
            return
        from babyllama.planning import memory_fit
        from babyllama_tui.training.new_run import check_form

        values = form.read()
        check = self.form_check = check_form(values, self.app.runs_dir, self.app.root)
        form.show_check(check)
        fit = None
        if check.model is not None and check.train is not None:
            fit = memory_fit(check.model, check.train, check.workers, accelerators=self._accelerators)
        summary.show(check, values.token_files, fit)
        self.refresh_bindings()

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        if self.form is None or self.form_check is None:
            self.notify("cannot launch yet: the form is still being read", severity="warning")
            return
        if self.form_check.plan is None:
            self._show_what_to_fix(self.form, self.form_check.errors)
            return
        if not self._launching:
            self._launching = True
            self._judge_memory(self.form_check)

    @work(thread=True, group="train-launch")
    def _judge_memory(self, check: FormCheck) -> None:
        """Memory is judged afresh at each launch, on the devices when the host has some (their
        tools run in this thread)."""
        from babyllama.devices import read_accelerators
        from babyllama.planning import memory_fit

        plan = check.plan
        assert plan is not None
        fit = memory_fit(plan.model, plan.train, plan.workers, accelerators=read_accelerators())
        self.app.call_from_thread(self._launch_if_it_fits, check, fit)

    def _launch_if_it_fits(self, check: FormCheck, fit: MemoryFit) -> None:
        """Launch, or when the run would not fit ask first, with Cancel focused."""
        plan = check.plan
        assert plan is not None
        self._launching = False
        if fit.fits:
            self._launch(check, plan)
            return
        problem = fit.problem()
        question = ConfirmScreen(
            f"{plan.run.path.name} may not fit in memory",
            f"{problem[:1].upper()}{problem[1:]}.\n\nLaunched anyway, it may fail when its memory runs out, "
            "or slow everything else on the host.",
            "Launch anyway", cancel_first=True,
        )
        self.app.push_screen(question, lambda anyway: self._launch(check, plan) if anyway else None)

    def action_host_commands(self) -> None:
        from babyllama_tui.screens.host_commands import request_host_commands

        if self.form_check is None or self.form_check.plan is None:
            if self.form is not None and self.form_check is not None:
                self._show_what_to_fix(self.form, self.form_check.errors)
            return
        plan = self.form_check.plan
        request_host_commands(self, plan.run.path, plan.args, plan.workers)

    def _launch(self, check: FormCheck, plan: RunPlan) -> None:
        assert self.form is not None
        try:
            launch_detached(plan.run, plan.args, workers=plan.workers, program=self.app.train_program,
                            cwd=self.app.root)
        except UserError as e:
            self.notify(str(e), severity="error")
            return
        self.notify(f"launched {plan.run.path.name}")
        if check.warnings:
            self.notify("; ".join(check.warnings.values()), severity="warning")
        self.form.renew_default_name(self.app.clock())
        self._refresh_runs()
        self.app.monitor_run(plan.run.path)

    def _show_what_to_fix(self, form: NewRunForm, errors: dict[str, str]) -> None:
        """Name the fields to fix, and focus the first: its message is beside it."""
        from babyllama_tui.training.new_run import NO_TOKEN_FILES

        if self.pane != "new":
            self.pane = "new"
        if errors.get("data") == NO_TOKEN_FILES:
            self.notify(f"cannot launch: {NO_TOKEN_FILES}", severity="error")
            return
        keys = [key for key in form.field_order() if key in errors] or list(errors)
        labels = [form.rows[key].label if key in form.rows else SECTION_NAMES.get(key, key) for key in keys]
        first = errors[keys[0]]
        self.notify(f"cannot launch: fix {', '.join(labels)}. {labels[0]}: {first}", severity="error", timeout=8)
        form.focus_field(keys[0])
