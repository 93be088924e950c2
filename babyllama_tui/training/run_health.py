"""Whether a running run has stalled or slowed down, in words: what the Monitor and the runs table mark.

Stalled: a run that says `running` has written no metrics row (or its heartbeat has not refreshed
status.json) for `stall_after_s`, or for ROW_GAP_FACTOR times its usual gap between rows when that
is longer. Before a process's first train row it compiles its step, minutes for a big model: it
is given FIRST_ROW_FACTOR times as long. A checkpoint being written (its temporary folder exists)
is not a stall. Slowed: its newest tokens/s is below SLOW_FRACTION of the median of its process's
rows before it.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from babyllama.runs import format_duration

# The default of `babyllama-tui --stall-after` (minutes there).
STALL_AFTER_S = 600.0
FIRST_ROW_FACTOR = 3
ROW_GAP_FACTOR = 3
SLOW_FRACTION = 0.5
# Rows of the process a speed is compared with: at least SLOW_MIN_ROWS before it, the last SLOW_ROWS.
SLOW_MIN_ROWS = 5
SLOW_ROWS = 20


@dataclass(frozen=True)
class Health:
    """`mark` is the word shown in place of `running` ("stalled", "slow"); `reason` says why, in words."""

    mark: str
    reason: str


def usual_gap(times: Sequence[float]) -> float | None:
    """The median time between successive train rows, or None with fewer than two."""
    gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
    return statistics.median(gaps) if gaps else None


def saving_checkpoint(checkpoints_dir: Path) -> bool:
    """Whether a checkpoint is being written: its temporary folder (`.step_NNNNNNN.tmp-PID`) exists."""
    try:
        return any(e.name.startswith(".step_") and ".tmp-" in e.name for e in os.scandir(checkpoints_dir))
    except OSError:
        return False


def check_health(*, state: str, now: float, started: float | None, last_row_at: float | None,
                 heartbeat_at: float | None, train_times: Sequence[float], speeds: Sequence[float],
                 stall_after_s: float, checkpoints_dir: Path | None = None) -> Health | None:
    """How a `running` run looks: None when well.

    `last_row_at` is when metrics.jsonl last grew, `heartbeat_at` status.json's `updated`,
    `train_times` the times of the current process's newest train rows and `speeds` their
    tokens/s, oldest first."""
    if state != "running":
        return None
    if isinstance(heartbeat_at, (int, float)) and now - heartbeat_at > stall_after_s:
        return Health("stalled", f"no heartbeat for {format_duration(now - heartbeat_at)}: the trainer process is "
                                 "alive but has not updated status.json (frozen, swapping, or stopped by a signal)")
    first_row_seen = bool(train_times) and (started is None or train_times[-1] >= started)
    since = [t for t in (last_row_at, started) if isinstance(t, (int, float))]
    if since:
        quiet = now - max(since)
        if not first_row_seen:
            limit = stall_after_s * FIRST_ROW_FACTOR
            if quiet > limit and not (checkpoints_dir and saving_checkpoint(checkpoints_dir)):
                return Health("stalled", f"no first step after {format_duration(quiet)} (compiling takes minutes; "
                                         f"more than {format_duration(limit)} is a stall)")
        else:
            gap = usual_gap(train_times)
            limit = max(stall_after_s, ROW_GAP_FACTOR * gap) if gap else stall_after_s
            if quiet > limit and not (checkpoints_dir and saving_checkpoint(checkpoints_dir)):
                usual = f"; rows came every {format_duration(gap)}" if gap else ""
                return Health("stalled", f"no new metrics row for {format_duration(quiet)}{usual}")
    finite = [s for s in speeds if isinstance(s, (int, float)) and math.isfinite(s) and s > 0]
    if first_row_seen and len(finite) > SLOW_MIN_ROWS:
        median = statistics.median(finite[-SLOW_ROWS - 1:-1])
        if finite[-1] < SLOW_FRACTION * median:
            return Health("slow", f"{finite[-1]:,.0f} tokens/s, {finite[-1] / median:.0%} of its recent median "
                                  f"{median:,.0f}")
    return None
