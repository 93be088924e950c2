"""Watching the runs under out/runs cheaply: what the runs table polls twice a second.

`RunsWatcher` lists the runs and re-reads a run's files only when their size or
modification time changed; between changes a poll is a few stat calls a run (plus a pid
check for live runs, which is what notices a trainer that was SIGKILLed). The monitor's
`RunFollower` (run_follower.py) follows one run in full.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from babyllama.errors import UserError
from babyllama.runs import RunDir, RunState, effective_state, first_row_time, tail_lines
from babyllama_tui.eta import eta_seconds

# Metrics rows read back from the end of a file for the runs table: enough train rows for a
# speed estimate even when eval and sample rows come in between.
TABLE_TAIL_LINES = 60


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or appended to."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _appended(before: tuple | None, after: tuple[int, int, int] | None) -> bool:
    """The same file (inode), no shorter: its first line is unchanged."""
    return bool(before) and after is not None and before[2] == after[2] and after[1] >= before[1]


def read_status(run: RunDir) -> tuple[dict, str | None]:
    """(status, problem reading it)."""
    try:
        return run.read_status(), None
    except (UserError, OSError) as e:
        return {}, str(e)


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    path: Path
    name: str
    state: str
    reason: str | None
    step: int | None
    max_steps: int | None
    loss: float | None
    val_loss: float | None
    tokens_per_s: float | None
    started: float | None
    created: float | None
    eta_s: float | None
    world_size: int | None

    def age_s(self, now: float) -> float | None:
        """Seconds since the run was created, however often it was resumed since."""
        return None if self.created is None else now - self.created


@dataclass
class _Tail:
    train: dict
    eval: dict
    points: list[tuple[int, float]]


def _read_tail(metrics_path: Path) -> _Tail:
    train: dict = {}
    evaluation: dict = {}
    points = []
    for line in tail_lines(metrics_path, TABLE_TAIL_LINES):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        if row.get("kind") == "train" and isinstance(row.get("step"), int):
            train = row
            if isinstance(row.get("time"), (int, float)):
                points.append((row["step"], row["time"]))
        elif row.get("kind") == "eval":
            evaluation = row
    return _Tail(train, evaluation, points)


class _Watched:
    """One run's files as last read."""

    def __init__(self, path: Path):
        self.run = RunDir(path)
        self.status_stamp: object = ()
        self.metrics_stamp: object = ()
        self.status: dict = {}
        self.problem: str | None = None
        self.tail = _Tail({}, {}, [])
        self.first_row_time: float | None = None
        self.sort_key = 0.0

    def refresh(self) -> None:
        stamp = file_stamp(self.run.status_path)
        if stamp != self.status_stamp:
            self.status_stamp = stamp
            self.status, self.problem = read_status(self.run)
        stamp = file_stamp(self.run.metrics_path)
        if stamp != self.metrics_stamp:
            if self.first_row_time is None or not _appended(self.metrics_stamp, stamp):
                self.first_row_time = first_row_time(self.run.metrics_path)
            self.metrics_stamp = stamp
            self.tail = _read_tail(self.run.metrics_path)
        started = self.status.get("started")
        if isinstance(started, (int, float)):
            self.sort_key = started
        else:
            config = file_stamp(self.run.config_path)
            self.sort_key = config[0] / 1e9 if config else 0.0

    def created(self) -> float | None:
        """When the run began: its first metrics row, or before there is one, the current start."""
        times = [t for t in (self.first_row_time, self.status.get("started")) if isinstance(t, (int, float))]
        return min(times) if times else None

    def row(self, now: float) -> RunRow:
        status, tail = self.status, self.tail
        current = RunState("failed", self.problem) if self.problem else effective_state(status)
        steps = [s for s in (status.get("step"), tail.train.get("step")) if isinstance(s, int)]
        max_steps = status.get("max_steps")
        eta = None
        if current.state in ("starting", "running") and tail.points:
            eta = eta_seconds(tail.points, max_steps, now, since=status.get("started"))
        return RunRow(
            path=self.run.path,
            name=self.run.path.name,
            state=current.state,
            reason=current.reason,
            step=max(steps) if steps else None,
            max_steps=max_steps,
            loss=tail.train.get("loss"),
            val_loss=tail.eval.get("val_loss"),
            tokens_per_s=tail.train.get("tokens_per_s"),
            started=status.get("started"),
            created=self.created(),
            eta_s=eta,
            world_size=status.get("world_size"),
        )


class RunsWatcher:
    """The runs under a folder, newest first, read again only where files changed."""

    def __init__(self, root: Path):
        self.root = root
        self._watched: dict[Path, _Watched] = {}

    def poll(self, now: float) -> list[RunRow]:
        try:
            folders = [Path(e.path) for e in os.scandir(self.root) if e.is_dir()]
        except FileNotFoundError:
            folders = []
        self._watched = {path: self._watched.get(path) or _Watched(path) for path in folders}
        present = []
        for watched in self._watched.values():
            watched.refresh()
            if watched.status_stamp is not None or file_stamp(watched.run.config_path) is not None:
                present.append(watched)
        present.sort(key=lambda w: w.sort_key, reverse=True)
        return [w.row(now) for w in present]
