"""What is known of a run at a glance: `run_info` for one run directory, `list_runs` for all under a root,
`resolve_run` for a name or a path. See docs/ARCHITECTURE.md, "The run directory".
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from babyllama.checkpoint import Checkpoint, checkpoint_problem
from babyllama.errors import UserError
from babyllama.runs.liveness import RunState, effective_state, state_words, stop_overdue
from babyllama.runs.readers import METRICS_TAIL_BYTES, counts_in_loss, first_row_time, newest_of_each_kind, tail_rows
from babyllama.runs.rundir import RunDir, as_run

DEFAULT_ROOT = Path("out/runs")


@dataclass
class RunInfo:
    """One row of the runs table: status.json, the newest metrics rows and the latest checkpoint."""

    name: str
    path: Path
    state: str
    reason: str | None
    step: int | None
    max_steps: int | None
    loss: float | None
    val_loss: float | None
    tokens: int | None
    tokens_per_s: float | None
    # The newest bits per byte (validation, train estimate) and model FLOPs utilisation (0..1).
    val_bpb: float | None
    bpb: float | None
    mfu: float | None
    started: float | None
    # When the run began: its first metrics row, or the current start if that is earlier (or
    # there is no row yet). A resume rewrites `started`, never this.
    created: float | None
    updated: float | None
    # When a stop was asked (epoch seconds); it counts while the state is `stopping`.
    stop_requested: float | None
    host: str | None
    pid: int | None
    world_size: int | None
    latest_checkpoint: int | None
    # Set when the latest checkpoint is incomplete: what is wrong with it and what to do.
    latest_checkpoint_problem: str | None
    # The user's note (`babyllama runs note`).
    note: str | None
    # Health events recorded (status.json's `alerts`) and the newest one ({step, alert, message}).
    alerts: int = 0
    last_alert: dict | None = None
    hosts: list | None = None  # a run under msrun: status.json's `hosts` (host, address, ranks, pids, state)

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since the run was created, however often it was resumed since."""
        return None if self.created is None else (time.time() if now is None else now) - self.created

    def state_words(self, now: float) -> str:
        """The state as shown: "stopping 42s" for a stop asked 42 s ago."""
        return state_words(self.state, self.stop_requested, now)

    def stop_overdue(self, now: float) -> bool:
        """Still stopping STOP_OVERDUE_S after the stop was asked: a kill is offered."""
        return stop_overdue(self.state, self.stop_requested, now)

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def run_info(run: RunDir | str | os.PathLike, *, tail_bytes: int = METRICS_TAIL_BYTES,
             checkpoints: bool = True) -> RunInfo:
    """What the runs table shows of `run`; the newest rows are looked for in the last `tail_bytes` of its metrics.

    Without `checkpoints` the latest checkpoint is found but not checked (checking it opens its
    files): `latest_checkpoint_problem` is None.
    """
    run = as_run(run)
    try:
        status = run.read_status()
        current = effective_state(status)
    except (UserError, OSError) as e:
        status, current = {}, RunState("failed", str(e))
    tail = tail_rows(run.metrics_path, max_bytes=tail_bytes)
    rows = newest_of_each_kind(tail)
    train, evaluation = rows.get("train", {}), rows.get("eval", {})
    # The last loss is that of the newest step the trainer applied: a skipped spike's is not the run's.
    counted = next((row for row in tail if row.get("kind") == "train" and counts_in_loss(row)), {})
    latest = run.latest_checkpoint()
    step = status.get("step")
    if step is None:
        step = train.get("step")
    begun = [t for t in (first_row_time(run.metrics_path), status.get("started")) if isinstance(t, (int, float))]
    return RunInfo(
        name=run.name,
        path=run.path,
        state=current.state,
        reason=current.reason,
        step=step,
        max_steps=status.get("max_steps"),
        loss=counted.get("loss"),
        val_loss=evaluation.get("val_loss"),
        tokens=train.get("tokens"),
        tokens_per_s=train.get("tokens_per_s"),
        val_bpb=evaluation.get("val_bpb"),
        bpb=counted.get("bpb"),
        mfu=train.get("mfu"),
        started=status.get("started"),
        created=min(begun) if begun else None,
        updated=status.get("updated"),
        stop_requested=status.get("stop_requested"),
        host=status.get("host"),
        pid=status.get("pid"),
        world_size=status.get("world_size"),
        latest_checkpoint=latest.step if latest else None,
        latest_checkpoint_problem=_incomplete_latest(run, latest) if latest and checkpoints else None,
        note=run.read_note(),
        alerts=status.get("alerts") if isinstance(status.get("alerts"), int) else 0,
        last_alert=status.get("last_alert") if isinstance(status.get("last_alert"), dict) else None,
        hosts=status.get("hosts") if isinstance(status.get("hosts"), list) else None,
    )


def _incomplete_latest(run: RunDir, latest: Checkpoint) -> str | None:
    """What is wrong with the latest checkpoint and what to do, or None when it is complete."""
    problem = checkpoint_problem(latest.path)
    if problem is None:
        return None
    # Once it is deleted, `--resume` takes the newest checkpoint left (latest_checkpoint's fallback).
    also_incomplete = []
    resume = f"`babyllama train --run {run.path} --resume` starts again from step 0 (no complete checkpoint is left)"
    for older in reversed([c for c in run.checkpoints() if c != latest]):
        if checkpoint_problem(older.path) is None:
            resume = f"`babyllama train --run {run.path} --resume` continues from {older.path.name}"
            break
        also_incomplete.append(str(older.path))
    also = f" (and {', '.join(also_incomplete)}, incomplete too)" if also_incomplete else ""
    return f"{problem}: the checkpoint is incomplete; delete {latest.path}{also}, and {resume}"


def list_runs(root: str | os.PathLike = DEFAULT_ROOT) -> list[RunInfo]:
    """Every run directory directly under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [RunDir(entry.path) for entry in os.scandir(root) if entry.is_dir()]
    return sort_newest_first([run_info(run) for run in runs if run.exists()])


def sort_newest_first(infos: list[RunInfo]) -> list[RunInfo]:
    """Runs by their current start, newest first; a run never started by when its config was written."""

    def begun(info: RunInfo) -> float:
        if info.started is not None:
            return info.started
        try:
            return (info.path / "config.json").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    return sorted(infos, key=begun, reverse=True)


def resolve_run(name_or_path: str, root: str | os.PathLike = DEFAULT_ROOT) -> RunDir:
    """A run given by name (under `root`) or by path."""
    for candidate in (Path(name_or_path), Path(root) / name_or_path):
        if RunDir(candidate).exists():
            return RunDir(candidate)
    raise UserError(f"no run named {name_or_path!r} under {root} (and no run directory at that path); "
                    "`babyllama runs` lists them.")
