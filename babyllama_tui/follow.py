"""Following run directories cheaply: what the runs table and the monitor poll twice a second.

`RunsWatcher` lists the runs under out/runs and re-reads a run's files only when their
size or modification time changed; between changes a poll is a few stat calls a run
(plus a pid check for live runs, which is what notices a trainer that was SIGKILLed).

`RunFollower` follows one run: new metrics rows (`MetricsReader` keeps a byte offset),
status.json when it changed, and the lines appended to train.log.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from babyllama.errors import UserError
from babyllama.runs import (
    CREATED,
    LineFollower,
    MetricsReader,
    RunDir,
    RunState,
    effective_state,
    tail_lines,
)
from babyllama_tui.history import MetricsHistory, eta_seconds

# Metrics rows read back from the end of a file for the runs table: enough train rows for a
# speed estimate even when eval and sample rows come in between.
TABLE_TAIL_LINES = 60
LOG_LINES = 200
# A first read of a long metrics file is done in pieces of this size, so progress can be shown.
METRICS_CHUNK_BYTES = 8 * 2**20


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or appended to."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_status(run: RunDir) -> tuple[dict, str | None]:
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
    updated: float | None
    eta_s: float | None
    world_size: int | None

    def age_s(self, now: float) -> float | None:
        return None if self.started is None else now - self.started


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
        self.sort_key = 0.0

    def refresh(self) -> None:
        stamp = _stamp(self.run.status_path)
        if stamp != self.status_stamp:
            self.status_stamp = stamp
            self.status, self.problem = _read_status(self.run)
        stamp = _stamp(self.run.metrics_path)
        if stamp != self.metrics_stamp:
            self.metrics_stamp = stamp
            self.tail = _read_tail(self.run.metrics_path)
        started = self.status.get("started")
        if isinstance(started, (int, float)):
            self.sort_key = started
        else:
            config = _stamp(self.run.config_path)
            self.sort_key = config[0] / 1e9 if config else 0.0

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
            updated=status.get("updated"),
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
            if watched.status_stamp is not None or _stamp(watched.run.config_path) is not None:
                present.append(watched)
        present.sort(key=lambda w: w.sort_key, reverse=True)
        return [w.row(now) for w in present]


class RunFollower:
    """One run, followed from where the last poll stopped.

    Polls run in a worker thread while the screen draws from `history` on the main
    thread; both hold `lock` while they touch it.
    """

    def __init__(self, path: Path, *, log_lines: int = LOG_LINES):
        self.run = RunDir(path)
        self.history = MetricsHistory()
        self.lock = threading.Lock()
        self.status: dict = {}
        self.state = RunState(CREATED, None)
        self.config: dict = {}
        self._metrics = MetricsReader(self.run.metrics_path)
        self._log = LineFollower(self.run.log_path, last_lines=log_lines)
        self._status_stamp: object = ()
        self._config_stamp: object = ()

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def bad_lines(self) -> int:
        return self._metrics.bad_lines

    @property
    def metrics_offset(self) -> int:
        """Bytes of metrics.jsonl read so far, a held-back half line included."""
        return self._metrics.offset

    def poll_metrics(self, progress: Callable[[int, int], None] | None = None) -> bool:
        """Take in every complete row appended since the last poll; returns whether any came.

        `progress(bytes_read, file_size)` is called between pieces of a long first read.
        """
        changed = False
        while True:
            rows = self._metrics.poll(max_bytes=METRICS_CHUNK_BYTES)
            restarted = self._metrics.restarted
            with self.lock:
                if restarted:
                    self.history.clear()
                    changed = True
                changed = self.history.add(rows) or changed
            size = _stamp(self.run.metrics_path)
            if size is None or self._metrics.offset >= size[1]:
                return changed
            if progress is not None:
                progress(self._metrics.offset, size[1])

    def poll_status(self) -> bool:
        """Read status.json and config.json again if they changed; returns whether the run's state did."""
        before = (self.state, self.status)
        stamp = _stamp(self.run.status_path)
        if stamp != self._status_stamp:
            self._status_stamp = stamp
            self.status, problem = _read_status(self.run)
            if problem:
                self.state = RunState("failed", problem)
                return True
        stamp = _stamp(self.run.config_path)
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                self.config = json.loads(self.run.config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.config = {}
        self.state = effective_state(self.status)
        return (self.state, self.status) != before

    def poll_log(self) -> tuple[list[str], bool]:
        """(new lines of train.log, whether the file started over)."""
        lines = self._log.poll()
        # A progress bar redraws its line with carriage returns; its last state is what counts.
        return [line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines], self._log.restarted

    @property
    def max_steps(self) -> int | None:
        steps = self.status.get("max_steps")
        if isinstance(steps, int) and steps > 0:
            return steps
        train = self.config.get("train") if isinstance(self.config.get("train"), dict) else {}
        steps = train.get("max_steps")
        return steps if isinstance(steps, int) and steps > 0 else None
