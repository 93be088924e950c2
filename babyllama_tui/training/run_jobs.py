"""Export, evaluation and benchmarks of a run's checkpoint as detached jobs (`babyllama.runs.jobs`):
the commands the dialogs start, their checks, and a job in one line for the Monitor and the runs table.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from babyllama.checkpoint import Checkpoint
from babyllama.errors import UserError
from babyllama.mcq import TASKS, find_subjects
from babyllama.runs import ACTIVE_STATES, RunDir
from babyllama.runs.jobs import JobInfo, launch_job, list_jobs

EXPORTS_DIR = Path("out") / "exports"
EXPORT_FORMATS = {
    "hf": "hf: a Hugging Face folder (transformers)",
    "llama2c": "llama2c: llama2.c's model.bin",
    "gguf": "gguf: one file for llama.cpp, Ollama, LM Studio",
}
# babyllama.export_gguf.GGUF_TYPES, described; the first is the default (the engine's, as llama.cpp's
# converter's). Named here, not imported: that module brings numpy, which the app does not load to start.
GGUF_TYPES = {
    "f16": "f16: half of f32's bytes",
    "q8_0": "q8_0: a quarter of f32's bytes",
    "f32": "f32: the weights exactly",
}


@dataclass(frozen=True)
class ExportRequest:
    checkpoint: Checkpoint
    format: str
    out: Path  # absolute
    gguf_type: str | None = None  # a key of GGUF_TYPES, for the gguf format


@dataclass(frozen=True)
class EvalRequest:
    checkpoint: Checkpoint
    data: Path
    batches: int
    split: str = "all"


@dataclass(frozen=True)
class BenchRequest:
    checkpoint: Checkpoint
    task: str  # a key of babyllama.mcq.TASKS
    data: Path  # absolute
    shots: int


SPLIT_NOTES = {
    "val": "the run trained on this file: its held-out windows, as the run's val loss",
    "all": "windows spread over the whole file",
}


def run_checkpoints(run_path: Path) -> list[Checkpoint]:
    """The run's complete checkpoints, newest first."""
    return list(reversed(RunDir(run_path).checkpoints()))


def has_checkpoint(run_path: Path) -> bool:
    return RunDir(run_path).latest_checkpoint() is not None


def shown_path(path: Path | str, root: Path) -> str:
    """`path` relative to the project when inside it, as a user would type it there."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def default_export_path(root: Path, run_name: str, step: int, fmt: str, gguf_type: str = "f16") -> Path:
    """out/exports/RUN-STEP-hf/ (a folder), out/exports/RUN-STEP-llama2c.bin (its tokenizer beside it), or
    out/exports/RUN-STEP-TYPE.gguf (its Modelfile beside it)."""
    if fmt == "gguf":
        return root / EXPORTS_DIR / f"{run_name}-{step}-{gguf_type}.gguf"
    name = f"{run_name}-{step}-{fmt}"
    return root / EXPORTS_DIR / (f"{name}.bin" if fmt == "llama2c" else name)


def resolve(typed: str, root: Path) -> Path:
    path = Path(typed.strip()).expanduser()
    return path if path.is_absolute() else root / path


def export_problem(out: Path, fmt: str) -> str | None:
    """Why the export cannot be written at `out`, or None. An empty folder may be written into."""
    if not str(out).strip() or out == out.parent:
        return "give the output"
    if fmt in ("llama2c", "gguf") and out.is_dir():
        example = "model.bin" if fmt == "llama2c" else "model.gguf"
        return f"{out} is a folder; {fmt} writes one file, e.g. {out / example}"
    modelfile = out.with_name(out.stem + ".Modelfile")
    if fmt == "gguf" and modelfile.exists():
        return f"{modelfile} exists (the Ollama Modelfile beside the file); choose another output"
    if out.is_dir():
        with os.scandir(out) as entries:
            if next(entries, None) is not None:
                return f"{out} exists and is not empty; choose another output"
    elif out.exists():
        return f"{out} exists; choose another output"
    return None


def batches_problem(typed: str) -> str | None:
    try:
        return None if int(typed) >= 1 else "batches must be at least 1"
    except ValueError:
        return "batches must be a whole number, at least 1"


def default_bench_folder(data_dir: Path, task: str) -> Path:
    """data/ceval or data/cmmlu: where a user unpacks the benchmark."""
    return data_dir / task


def bench_folder_problem(task: str, folder: Path) -> str | None:
    """Why `folder` is not the task's folder as published, or None (its files are read by the job)."""
    try:
        find_subjects(TASKS[task], folder)
    except UserError as e:
        return str(e)
    return None


def shots_problem(typed: str) -> str | None:
    try:
        return None if int(typed) >= 0 else "shots must be 0 or more"
    except ValueError:
        return "shots must be a whole number, 0 or more"


def default_batches(run_path: Path) -> int:
    """The run's eval_iters: as many batches as the trainer's validation loss takes."""
    from babyllama.config import TrainConfig

    try:
        train = RunDir(run_path).read_config().get("train") or {}
    except (UserError, OSError):  # an unreadable config: the dialog still opens, with the default
        train = {}
    eval_iters = train.get("eval_iters") if isinstance(train, dict) else None
    return eval_iters if isinstance(eval_iters, int) and eval_iters > 0 else TrainConfig().eval_iters


def run_data_files(run_path: Path) -> set[Path]:
    """The token files the run trained on and held windows out of, as its config.json lists them:
    none when it held none out (val_fraction 0), so no --split val is offered on them."""
    try:
        config = RunDir(run_path).read_config()
    except (UserError, OSError):
        return set()
    train = config.get("train")
    if isinstance(train, dict) and train.get("val_fraction") == 0:
        return set()
    data = config.get("data")
    files = data.get("files") if isinstance(data, dict) else None
    return {Path(f["path"]) for f in files or [] if isinstance(f, dict) and isinstance(f.get("path"), str)}


def eval_token_files(data_dir: Path) -> list[Path]:
    """The token files in data/ that eval reads: pretraining text, and SFT files (scored on their answers)."""
    from babyllama_tui.training.new_run import find_token_files

    return [entry.path for entry in find_token_files(data_dir)
            if entry.token_file is not None or _readable_sft_file(entry.path)]


def _readable_sft_file(path: Path) -> bool:
    from babyllama.data import is_sft_data, open_token_file

    if not is_sft_data(path):
        return False
    try:
        open_token_file(path, sft=True)
    except UserError:
        return False
    return True


def eval_split(data: Path, run_data: set[Path]) -> str:
    """val (the held-out windows) for a file the run trained on, else all (spread over the file)."""
    return "val" if data.resolve() in run_data else "all"


def start_export(run_path: Path, request: ExportRequest, root: Path) -> JobInfo:
    args = ["export", "--ckpt", str(request.checkpoint.path), "--format", request.format, "--out", str(request.out)]
    if request.out.is_dir():  # empty: export_problem refuses any other
        args.append("--force")
    details = {"step": request.checkpoint.step, "format": request.format}
    if request.format == "gguf":
        args += ["--type", request.gguf_type or next(iter(GGUF_TYPES))]
        details["type"] = request.gguf_type or next(iter(GGUF_TYPES))
    return launch_job(run_path, "export", args, output=str(request.out), details=details, cwd=root)


def start_eval(run_path: Path, request: EvalRequest, root: Path) -> JobInfo:
    args = ["eval", "--ckpt", str(request.checkpoint.path), "--data", str(request.data),
            "--batches", str(request.batches), "--split", request.split]
    details = {"step": request.checkpoint.step, "data": shown_path(request.data, root)}
    return launch_job(run_path, "eval", args, details=details, cwd=root)


def start_bench(run_path: Path, request: BenchRequest, root: Path) -> JobInfo:
    args = ["eval", "--ckpt", str(request.checkpoint.path), "--task", request.task, "--data", str(request.data),
            "--shots", str(request.shots)]
    details = {"step": request.checkpoint.step, "task": request.task, "shots": request.shots,
               "data": shown_path(request.data, root)}
    return launch_job(run_path, "bench", args, details=details, cwd=root)


def shown_job(run_path: Path) -> tuple[JobInfo | None, int]:
    """The job a run's strip shows (the newest active one, else the newest), and how many
    other jobs are active: one line, as the Monitor at 24 rows has few to give."""
    jobs = list_jobs(run_path)
    active = [job for job in jobs if job.state in ACTIVE_STATES]
    return (active or jobs or [None])[0], max(0, len(active) - 1)


def job_title(job: JobInfo) -> str:
    """What the job does: "export step 400 as hf", "eval step 400 on data/x.bin"."""
    details = job.details
    step = f"step {details['step']:,}" if isinstance(details.get("step"), int) else "a checkpoint"
    if job.kind == "export":
        kind = " ".join(str(details[key]) for key in ("format", "type") if details.get(key))
        return f"export {step} as {kind or '?'}"
    if job.kind == "bench":
        task = TASKS.get(str(details.get("task")))
        return f"{task.title if task else 'benchmark'} {step}, {details.get('shots', 0)}-shot"
    return f"{job.kind} {step} on {details.get('data', '?')}"


def describe_job(job: JobInfo, root: Path, width: int | None = None) -> str:
    """The job in a line: what, on which checkpoint, and how far it got or how it ended. A finished
    evaluation longer than `width` leaves its perplexity out (the loss says it: e to the loss), then
    how many tokens it scored."""
    what = job_title(job)
    if job.state == "cancelled":
        return f"{what}: cancelled"
    if job.kind == "export":
        target = shown_path(job.output, root) if job.output else ""
        if job.state == "finished":
            parameters = (job.result or {}).get("parameters")
            size = f" ({parameters:,} parameters)" if isinstance(parameters, int) else ""
            return f"{what}: done, {target}{size}"
        if job.state in ACTIVE_STATES:
            stage = (job.progress or {}).get("message") or job.state
            return f"{what} → {target}: {stage}"
    elif job.kind == "bench":
        if job.state == "finished":
            result = job.result or {}
            return (f"{what}: {_number(result.get('accuracy'), '.1%')} over {_number(result.get('questions'), ',')} "
                    f"questions (guessing {_number(result.get('chance'), '.0%')})")
        if job.state in ACTIVE_STATES:
            return _counted(what, job, "questions")
    else:
        if job.state == "finished":
            result = job.result or {}
            loss = f"{what}: loss {_number(result.get('loss'), '.4f')}"
            tokens = f"{_number(result.get('tokens'), ',')} {'answer tokens' if result.get('sft') else 'tokens'}"
            lines = (f"{loss}, perplexity {_number(result.get('perplexity'), ',.2f')} over {tokens}",
                     f"{loss} over {tokens}", loss)
            return next((line for line in lines if width is None or len(line) <= width), loss)
        if job.state in ACTIVE_STATES:
            return _counted(what, job, "windows")
    return f"{what}: {job.state}: {job.reason or 'no reason recorded'}"


def _counted(what: str, job, unit: str) -> str:
    """An active job's progress in `unit` ("windows", "questions": its events' `unit` and `total_unit`)."""
    progress = job.progress or {}
    done, total = progress.get(unit, 0), progress.get(f"total_{unit}")
    if isinstance(total, int) and total > 0:
        return f"{what}: {done:,}/{total:,} {unit} ({math.floor(100 * done / total)}%)"
    return f"{what}: {job.state}"


def _number(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"
