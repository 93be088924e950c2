"""Following one run from where the last look stopped: what the monitor polls twice a second.

New metrics rows (`MetricsReader` keeps a byte offset, so a poll costs the bytes appended
since the last one) go into a `MetricsHistory`; status.json and config.json are read again
only when they changed; train.log is followed from its last lines.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from babyllama.devices import host_memory_mb
from babyllama.errors import UserError
from babyllama.runs import (
    ACTIVE_STATES,
    CREATED,
    LineFollower,
    MetricsReader,
    RunDir,
    RunState,
    effective_state,
    process_memory_mb,
)
from babyllama_tui.training.history import MetricsHistory
from babyllama_tui.training.runs_watcher import file_stamp

LOG_LINES = 200
# A first read of a long metrics file is done in pieces of this size, so progress can be shown.
METRICS_CHUNK_BYTES = 8 * 2**20


def read_status(run: RunDir) -> tuple[dict, str | None]:
    """(status, problem reading it)."""
    try:
        return run.read_status(), None
    except (UserError, OSError) as e:
        return {}, str(e)


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
        # The trainer's memory read from its process, shaped as a train row's `mem`, while no row carries it.
        self.process_memory: dict | None = None
        self._metrics = MetricsReader(self.run.metrics_path)
        self._log = LineFollower(self.run.log_path, last_lines=log_lines)
        self._status_stamp: object = ()
        self._config_stamp: object = ()
        # When metrics.jsonl last grew (epoch seconds), as of the last poll: how long the run has been quiet.
        self.metrics_changed_at: float | None = None

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
            size = file_stamp(self.run.metrics_path)
            self.metrics_changed_at = size[0] / 1e9 if size else None
            if size is None or self._metrics.offset >= size[1]:
                return changed
            if progress is not None:
                progress(self._metrics.offset, size[1])

    def poll_status(self) -> bool:
        """Read status.json and config.json again if they changed; returns whether the run's state did."""
        before = (self.state, self.status)
        stamp = file_stamp(self.run.status_path)
        if stamp != self._status_stamp:
            self._status_stamp = stamp
            self.status, problem = read_status(self.run)
            if problem:
                self.state = RunState("failed", problem)
                return True
        stamp = file_stamp(self.run.config_path)
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                self.config = json.loads(self.run.config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.config = {}
        self.state = effective_state(self.status)
        return (self.state, self.status) != before

    def poll_process_memory(self) -> None:
        """Until a train row carries the run's memory (the first step may compile for minutes, and
        a big model grows meanwhile), read it from the process its status names."""
        last = self.history.last_train
        rss = None
        if not (last and isinstance(last.get("mem"), dict)) and self.state.state in ACTIVE_STATES:
            rss = process_memory_mb(self.status)
        if rss is None:
            self.process_memory = None
            return
        used, total = host_memory_mb()
        self.process_memory = {"rss_mb": rss, "host_used_mb": used, "host_total_mb": total}

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
