"""`RunsWatcher`: the runs table's cheap poll of out/runs.

A run's facts come from the engine's `babyllama.runs.run_info`, read again only when its files
changed or while it is active; `RunRow` adds the time to finish and whether it has stalled or
slowed (`run_health`). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from babyllama.runs import ACTIVE_STATES, RunDir, RunInfo, run_info, sort_newest_first, tail_lines
from babyllama.runs.settings import run_lineage
from babyllama_tui.training.eta import eta_seconds
from babyllama_tui.training.run_health import STALL_AFTER_S, Health, check_health

# The table looks for a run's newest train and eval rows in the last bytes of its metrics (about
# as many rows as TABLE_TAIL_LINES: `babyllama runs` reads 256 KiB, a few milliseconds a run), and
# takes the speed from the train rows among its last lines.
TABLE_TAIL_BYTES = 16 * 1024
TABLE_TAIL_LINES = 60


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or appended to."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


@dataclass
class RunRow(RunInfo):
    """One line of the runs table: the engine's facts about a run, its time to finish, and whether
    it has stalled or slowed."""

    eta_s: float | None = None
    health: Health | None = None
    # A run's parent and what it is in a few words ("fine-tuned from base@1200"), from its config.json.
    parent: str | None = None


def train_points(metrics_path: Path) -> list[tuple[int, float, float | None]]:
    """(step, time, tokens/s) of the train rows among the file's last TABLE_TAIL_LINES lines."""
    points = []
    for line in tail_lines(metrics_path, TABLE_TAIL_LINES):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if (isinstance(row, dict) and row.get("kind") == "train" and isinstance(row.get("step"), int)
                and isinstance(row.get("time"), (int, float))):
            speed = row.get("tokens_per_s")
            points.append((row["step"], row["time"], speed if isinstance(speed, (int, float)) else None))
    return points


class _Watched:
    """One run's files as last read."""

    def __init__(self, path: Path):
        self.run = RunDir(path)
        # The stamps of status.json, metrics.jsonl, config.json, checkpoints/ and note.txt as last
        # read; () is never read.
        self.stamps: tuple = ((), (), (), (), ())
        self.info: RunInfo | None = None
        self.parent: str | None = None
        self.points: list[tuple[int, float, float | None]] = []

    @property
    def exists(self) -> bool:
        """A status or a config: what makes a folder a run (RunDir.exists)."""
        status, _, config, _, _ = self.stamps
        return status is not None or config is not None

    def refresh(self) -> None:
        run = self.run
        stamps = (file_stamp(run.status_path), file_stamp(run.metrics_path), file_stamp(run.config_path),
                  file_stamp(run.checkpoints_dir), file_stamp(run.note_path))
        if stamps != self.stamps or self.info is None or self.info.state in ACTIVE_STATES:
            if stamps[1] != self.stamps[1]:
                self.points = train_points(run.metrics_path)
            if stamps[2] != self.stamps[2]:
                self.parent = run_lineage(run)
            self.stamps = stamps
            if self.exists:
                self.info = run_info(run, tail_bytes=TABLE_TAIL_BYTES, checkpoints=False)

    def row(self, now: float, stall_after_s: float) -> RunRow:
        info = self.info
        eta = None
        if info.state in ("starting", "running") and self.points:
            eta = eta_seconds([(step, time) for step, time, _ in self.points], info.max_steps, now, since=info.started)
        # Only the current process's rows say how fast it usually goes.
        mine = [(time, speed) for _, time, speed in self.points if info.started is None or time >= info.started]
        metrics = self.stamps[1]
        health = check_health(
            state=info.state, now=now, started=info.started,
            last_row_at=metrics[0] / 1e9 if metrics else None, heartbeat_at=info.updated,
            train_times=[time for time, _ in mine], speeds=[speed for _, speed in mine if speed is not None],
            stall_after_s=stall_after_s, checkpoints_dir=self.run.checkpoints_dir)
        if health is not None and health.mark == "stalled":
            # A run that does not move has no time to finish.
            eta = None
        return RunRow(**vars(info), eta_s=eta, health=health, parent=self.parent)


class RunsWatcher:
    """The runs under a folder, newest first, read again only where files changed or runs are active."""

    def __init__(self, root: Path, stall_after_s: float = STALL_AFTER_S):
        self.root = root
        self.stall_after_s = stall_after_s
        self._watched: dict[Path, _Watched] = {}

    def poll(self, now: float) -> list[RunRow]:
        try:
            folders = [Path(e.path) for e in os.scandir(self.root) if e.is_dir()]
        except FileNotFoundError:
            folders = []
        self._watched = {path: self._watched.get(path) or _Watched(path) for path in folders}
        for watched in self._watched.values():
            watched.refresh()
        return sort_newest_first([w.row(now, self.stall_after_s) for w in self._watched.values() if w.exists])
