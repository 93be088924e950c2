"""Export, evaluate or benchmark a run's checkpoint from any screen: a dialog, then a detached job.

The job outlives the app (`babyllama.runs.jobs`); while this app runs, it says in a
notification how each job it started ended, whatever screen is shown. The run's jobs strip
(widgets/jobs_strip.py) shows their progress and their results.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Label, Select, Static

from babyllama.checkpoint import Checkpoint
from babyllama.errors import UserError
from babyllama.mcq import TASKS
from babyllama.runs import ACTIVE_STATES
from babyllama.runs.jobs import JobInfo, cancel_job, read_job
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.training.run_jobs import (
    EXPORT_FORMATS,
    GGUF_TYPES,
    SPLIT_NOTES,
    BenchRequest,
    EvalRequest,
    ExportRequest,
    batches_problem,
    bench_folder_problem,
    default_batches,
    default_bench_folder,
    default_export_path,
    describe_job,
    eval_split,
    eval_token_files,
    export_problem,
    job_title,
    resolve,
    run_checkpoints,
    run_data_files,
    shots_problem,
    shown_job,
    shown_path,
    start_bench,
    start_eval,
    start_export,
)
from babyllama_tui.widgets.dialog import Dialog
from babyllama_tui.widgets.field_input import FieldInput

JOB_POLL_S = 0.5
NO_TOKEN_FILES = "no token files in data/ yet: make one on the Corpora screen (1)"


def checkpoint_options(checkpoints: list[Checkpoint]) -> list[tuple[str, int]]:
    """(label, step), newest first; the newest is the latest."""
    return [(f"step {c.step:,}" + (" (latest)" if i == 0 else ""), c.step) for i, c in enumerate(checkpoints)]


class JobDialog(Dialog):
    """What the export and eval dialogs share: a checkpoint to choose, an error line, two buttons."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("enter", "submit", "Start", show=False),
    ]
    TITLE_TEXT = ""
    START = ""

    def __init__(self, run_name: str, checkpoints: list[Checkpoint], root: Path) -> None:
        """`checkpoints` newest first: the newest is chosen, the others offered."""
        super().__init__(classes="dialog-screen")
        self.run_name = run_name
        self.checkpoints = {c.step: c for c in checkpoints}
        self.root = root
        # Kept apart from the Select, whose value is blank until it is mounted.
        self.checkpoint = checkpoints[0]
        self.checkpoint_select = Select(checkpoint_options(checkpoints), value=self.checkpoint.step,
                                        allow_blank=False, compact=True, id="job-checkpoint")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog job-dialog"):
            yield Label(f"{self.TITLE_TEXT} {self.run_name}", classes="dialog-title")
            with Horizontal(classes="dialog-field"):
                yield Label("checkpoint", classes="field-label")
                yield self.checkpoint_select
            yield from self.fields()
            yield Static("", id="job-error", classes="field-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.START} (enter)", id="start", variant="success", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    @on(Select.Changed, "#job-checkpoint")
    def _checkpoint_chosen(self, event: Select.Changed) -> None:
        self.checkpoint = self.checkpoints[event.value]
        self.choices_changed()

    def choices_changed(self) -> None:
        self.show_error("")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_submit()
        else:
            self.dismiss(None)

    def show_error(self, message: str) -> None:
        self.query_one("#job-error", Static).update(message)

    def on_field_input_changed(self) -> None:
        self.show_error("")


class ExportScreen(JobDialog):
    """Format (and a GGUF's type) and output of an export; the output follows the checkpoint, the format
    and the type until edited."""

    TITLE_TEXT = "Export"
    START = "Export"

    def __init__(self, run_name: str, checkpoints: list[Checkpoint], root: Path) -> None:
        super().__init__(run_name, checkpoints, root)
        self.format = "hf"
        self.format_select = Select([(label, name) for name, label in EXPORT_FORMATS.items()], value=self.format,
                                    allow_blank=False, compact=True, id="export-format")
        self.gguf_type = next(iter(GGUF_TYPES))
        self.type_select = Select([(label, name) for name, label in GGUF_TYPES.items()], value=self.gguf_type,
                                  allow_blank=False, compact=True, id="export-type")
        self.type_row = Horizontal(classes="dialog-field", id="export-type-row")
        self.type_row.display = False
        self._default_out = self._default()
        self.out_input = FieldInput(self._default_out, id="export-out")

    def on_mount(self) -> None:
        # Enter starts from here; on a Select it would open the Select.
        self.out_input.focus()

    def fields(self) -> ComposeResult:
        with Horizontal(classes="dialog-field"):
            yield Label("format", classes="field-label")
            yield self.format_select
        with self.type_row:
            yield Label("type", classes="field-label")
            yield self.type_select
        with Horizontal(classes="dialog-field"):
            yield Label("output", classes="field-label")
            yield self.out_input

    def _default(self) -> str:
        path = default_export_path(self.root, self.run_name, self.checkpoint.step, self.format, self.gguf_type)
        return shown_path(path, self.root)

    @on(Select.Changed, "#export-format")
    def _format_chosen(self, event: Select.Changed) -> None:
        self.format = str(event.value)
        self.type_row.display = self.format == "gguf"
        self.choices_changed()

    @on(Select.Changed, "#export-type")
    def _type_chosen(self, event: Select.Changed) -> None:
        self.gguf_type = str(event.value)
        self.choices_changed()

    def choices_changed(self) -> None:
        """The output follows the checkpoint and the format until it is edited."""
        if self.out_input.value == self._default_out:
            self.out_input.value = self._default()
        self._default_out = self._default()
        self.show_error("")

    def action_submit(self) -> None:
        out = resolve(self.out_input.value, self.root)
        problem = export_problem(out, self.format) if self.out_input.value.strip() else "give the output"
        if problem:
            self.show_error(problem)
            return
        self.dismiss(ExportRequest(self.checkpoint, self.format, out,
                                   self.gguf_type if self.format == "gguf" else None))


class EvalScreen(JobDialog):
    """A token file from data/ and how many batches of it to score."""

    TITLE_TEXT = "Evaluate"
    START = "Evaluate"

    def __init__(self, run_name: str, checkpoints: list[Checkpoint], root: Path, token_files: list[Path],
                 batches: int, run_data: set[Path]) -> None:
        super().__init__(run_name, checkpoints, root)
        self.token_files = token_files
        self.run_data = run_data
        # The run's own data first: its held-out windows give the run's validation loss.
        self.data = next((p for p in token_files if eval_split(p, run_data) == "val"),
                         token_files[0] if token_files else None)
        options = [(shown_path(p, root), str(p)) for p in token_files]
        self.data_select = Select(options, value=str(self.data) if self.data else Select.NULL,
                                  allow_blank=not options, compact=True, id="eval-data")
        self.batches_input = FieldInput(str(batches), kind="integer", id="eval-batches")
        self.split_note = Static("", id="eval-split", classes="dialog-note", markup=False)

    def fields(self) -> ComposeResult:
        with Horizontal(classes="dialog-field"):
            yield Label("token file", classes="field-label")
            yield self.data_select
        yield self.split_note
        with Horizontal(classes="dialog-field"):
            yield Label("batches", classes="field-label")
            yield self.batches_input

    def on_mount(self) -> None:
        self.batches_input.focus()
        self.choices_changed()

    @on(Select.Changed, "#eval-data")
    def _data_chosen(self, event: Select.Changed) -> None:
        if event.value != Select.NULL:
            self.data = Path(str(event.value))
        self.choices_changed()

    def choices_changed(self) -> None:
        data = self.data
        self.split_note.update(SPLIT_NOTES[eval_split(data, self.run_data)] if data is not None else "")
        self.show_error("" if data is not None else NO_TOKEN_FILES)

    def action_submit(self) -> None:
        data = self.data
        if data is None:
            self.show_error(NO_TOKEN_FILES)
            return
        problem = batches_problem(self.batches_input.value)
        if problem:
            self.show_error(problem)
            return
        self.dismiss(EvalRequest(self.checkpoint, data, int(self.batches_input.value), eval_split(data, self.run_data)))


class BenchScreen(JobDialog):
    """A C-Eval or CMMLU folder as published, and how many examples go before each question; the
    folder follows the task until edited."""

    TITLE_TEXT = "Benchmark"
    START = "Score"
    NOTE = "published scores are mostly 5-shot (examples from dev/)"

    def __init__(self, run_name: str, checkpoints: list[Checkpoint], root: Path, data_dir: Path) -> None:
        super().__init__(run_name, checkpoints, root)
        self.data_dir = data_dir
        self.bench_task = next(iter(TASKS))
        options = [(f"{task.title} ({task.eval_split} split)", name) for name, task in TASKS.items()]
        self.task_select = Select(options, value=self.bench_task, allow_blank=False, compact=True, id="bench-task")
        self._default_data = self._default()
        self.data_input = FieldInput(self._default_data, id="bench-data")
        self.shots_input = FieldInput("0", kind="integer", id="bench-shots")

    def fields(self) -> ComposeResult:
        with Horizontal(classes="dialog-field"):
            yield Label("benchmark", classes="field-label")
            yield self.task_select
        with Horizontal(classes="dialog-field"):
            yield Label("folder", classes="field-label")
            yield self.data_input
        with Horizontal(classes="dialog-field"):
            yield Label("shots", classes="field-label")
            yield self.shots_input
        yield Static(self.NOTE, classes="dialog-note", markup=False)

    def on_mount(self) -> None:
        self.data_input.focus()

    def _default(self) -> str:
        return shown_path(default_bench_folder(self.data_dir, self.bench_task), self.root)

    @on(Select.Changed, "#bench-task")
    def _task_chosen(self, event: Select.Changed) -> None:
        self.bench_task = str(event.value)
        self.choices_changed()

    def choices_changed(self) -> None:
        if self.data_input.value == self._default_data:
            self.data_input.value = self._default()
        self._default_data = self._default()
        self.show_error("")

    def action_submit(self) -> None:
        typed = self.data_input.value
        folder = resolve(typed, self.root)
        problem = (bench_folder_problem(self.bench_task, folder) if typed.strip() else "give the benchmark's folder") \
            or shots_problem(self.shots_input.value)
        if problem:
            self.show_error(problem)
            return
        self.dismiss(BenchRequest(self.checkpoint, self.bench_task, folder, int(self.shots_input.value)))


def _checkpoints_or_say(screen: Screen, run_path: Path, doing: str) -> list[Checkpoint] | None:
    checkpoints = run_checkpoints(run_path)
    if not checkpoints:
        screen.notify(f"{run_path.name} has no checkpoint yet to {doing}; runs save one every save_interval steps.",
                      severity="error")
        return None
    return checkpoints


def request_export(screen: Screen, run_path: Path) -> None:
    checkpoints = _checkpoints_or_say(screen, run_path, "export")
    if checkpoints is None:
        return
    app = screen.app

    def chosen(request: ExportRequest | None) -> None:
        if request is not None:
            _start(screen, lambda: start_export(run_path, request, app.root))

    app.push_screen(ExportScreen(run_path.name, checkpoints, app.root), chosen)


def request_eval(screen: Screen, run_path: Path) -> None:
    checkpoints = _checkpoints_or_say(screen, run_path, "evaluate")
    if checkpoints is None:
        return
    app = screen.app
    token_files = eval_token_files(app.data_dir)

    def chosen(request: EvalRequest | None) -> None:
        if request is not None:
            _start(screen, lambda: start_eval(run_path, request, app.root))

    dialog = EvalScreen(run_path.name, checkpoints, app.root, token_files, default_batches(run_path),
                        run_data_files(run_path))
    app.push_screen(dialog, chosen)


def request_bench(screen: Screen, run_path: Path) -> None:
    checkpoints = _checkpoints_or_say(screen, run_path, "benchmark")
    if checkpoints is None:
        return
    app = screen.app

    def chosen(request: BenchRequest | None) -> None:
        if request is not None:
            _start(screen, lambda: start_bench(run_path, request, app.root))

    app.push_screen(BenchScreen(run_path.name, checkpoints, app.root, app.data_dir), chosen)


def request_cancel(screen: Screen, run_path: Path) -> None:
    """Stop the run's job the strip shows, after asking, while it is at work: it ends cancelled."""
    job, _ = shown_job(run_path)
    if job is None or job.state not in ACTIVE_STATES:
        screen.notify(f"{run_path.name} has no export, evaluation or benchmark at work to cancel.", severity="warning")
        return
    title = job_title(job)

    def answered(yes: bool | None) -> None:
        if not yes:
            return
        try:
            cancel_job(job.path)
        except UserError as e:
            screen.notify(str(e), severity="error")
            return
        screen.notify(f"cancelling: {title}", timeout=4)

    message = "It ends where it is, cancelled, and what it was writing is removed; x, v or b starts one again."
    screen.app.push_screen(ConfirmScreen(f"Stop {title}?", message, "Stop it", cancel_first=True), answered)


def _start(screen: Screen, start) -> None:
    try:
        job = start()
    except (UserError, OSError) as e:
        screen.notify(f"could not start the job: {e}", severity="error")
        return
    screen.notify(f"started: {job_title(job)}; its progress shows with the run", timeout=4)
    announce_when_ended(screen.app, job)


def announce_when_ended(app: App, job: JobInfo) -> None:
    """Notify how `job` ended, once, on whatever screen is shown then."""

    def check() -> None:
        try:
            current = read_job(job.path)
        except UserError as e:  # its status.json damaged: say so once, and stop watching
            timer.stop()
            app.notify(str(e), severity="error")
            return
        if current.state not in ACTIVE_STATES:
            timer.stop()
            severity = {"finished": "information", "cancelled": "warning"}.get(current.state, "error")
            app.notify(describe_job(current, app.root), severity=severity, timeout=10)

    timer = app.set_interval(JOB_POLL_S, check)
