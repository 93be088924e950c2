"""The runs compared on the Monitor's loss chart: which runs, each one's last loss, the step axis
that covers them all, and the runs of the same data and tokenizer (`same_data_runs`), whose curves
compare directly. A compared run that has ended is read once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from babyllama.runs import ACTIVE_STATES, RunInfo
from babyllama_tui.training.history import MetricsHistory
from babyllama_tui.training.run_follower import RunFollower


@dataclass(frozen=True)
class LastLoss:
    """A run's newest train row whose loss counts (its step and loss), and its newest validation loss."""

    step: int
    loss: float | None
    val_loss: float | None


def last_loss(history: MetricsHistory) -> LastLoss | None:
    """None before the run's first train row whose loss counts."""
    last = history.last_counted
    if last is None:
        return None
    loss = last.get("loss")
    val = history.last_eval.get("val_loss") if history.last_eval else None
    return LastLoss(
        step=last["step"],
        loss=float(loss) if isinstance(loss, (int, float)) else None,
        val_loss=float(val) if isinstance(val, (int, float)) else None,
    )


def run_span(history: MetricsHistory) -> tuple[float, float] | None:
    """The steps a run's lines cover: from its first train row (or the evaluation before it, at
    step 0) to its last train row; None before its first train row."""
    if not len(history):
        return None
    first = float(history.steps.values[0])
    if len(history.val_steps):
        first = min(first, float(history.val_steps.values[0]))
    return first, float(history.steps.last())


def step_axis(main: tuple[float, float], others: Iterable[tuple[float, float] | None],
              window: int | None) -> tuple[float, float]:
    """The chart's step range. All steps: from the first step of any run to the last step of the
    longest. A window: the followed run's last `window` steps, the others drawn within them."""
    low, high = main
    if window is not None:
        low = max(low, high - window)
    else:
        for span in others:
            if span is not None:
                low, high = min(low, span[0]), max(high, span[1])
    return low, max(high, low + 1.0)


def data_key(run_path: Path) -> tuple | None:
    """What a run trained on, from its config.json: its token files (path and token count) and its
    tokenizer (sha256, else name and vocabulary); None when the config does not say."""
    try:
        config = json.loads((run_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    data = config.get("data") if isinstance(config, dict) else None
    files = data.get("files") if isinstance(data, dict) else None
    tokenizer = config.get("tokenizer")
    if not isinstance(files, list) or not files or not isinstance(tokenizer, dict):
        return None
    which = tokenizer.get("sha256") or (tokenizer.get("name"), tokenizer.get("vocab_size"))
    return tuple(sorted((str(f.get("path")), f.get("tokens")) for f in files if isinstance(f, dict))), which


def same_data_runs(followed: Path, rows: Sequence[RunInfo]) -> list[RunInfo]:
    """The runs that trained on the followed run's data with its tokenizer, the most recent one that
    was created before it first (the previous run), then the others newest first. By `created`, not
    `started`: a resume rewrites a run's start, not the order in which the runs were made."""
    key = data_key(followed)
    if key is None:
        return []
    mine = next((row for row in rows if row.path == followed), None)
    began = mine.created if mine is not None and mine.created is not None else float("inf")
    same = sorted((row for row in rows if row.path != followed and data_key(row.path) == key),
                  key=lambda row: float("-inf") if row.created is None else row.created, reverse=True)
    earlier = [row for row in same if row.created is not None and row.created < began]
    return earlier + [row for row in same if row.path not in {r.path for r in earlier}]


class ComparedRun:
    """One compared run: its follower, and the slot (a colour and a marker) it keeps while chosen."""

    def __init__(self, path: Path, slot: int):
        self.follower = RunFollower(path, log_lines=0)
        self.slot = slot
        # Its metrics were read after its status said it had ended: nothing more will come.
        self._read_to_end = False

    @property
    def path(self) -> Path:
        return self.follower.path

    def poll(self) -> bool:
        """Read what the run appended since the last poll; returns whether a row came.

        Once an ended run has been read, only its status file is looked at (a stat): if it
        changes (the run was resumed), the metrics are followed again."""
        if self.follower.poll_status():
            self._read_to_end = False
        if self._read_to_end:
            return False
        # The state is taken before the read, so the read sees every row an ended run wrote.
        ended = self.follower.state.state not in ACTIVE_STATES
        changed = self.follower.poll_metrics()
        self._read_to_end = ended
        return changed


class CompareSet:
    """The runs compared with the followed one, in the order they were chosen.

    A run keeps its slot, and what was read of it, for as long as it stays chosen: adding a
    run neither recolours nor re-reads the others."""

    def __init__(self) -> None:
        self.runs: list[ComparedRun] = []

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def paths(self) -> list[Path]:
        return [run.path for run in self.runs]

    def choose(self, paths: Iterable[Path]) -> None:
        kept = {run.path: run for run in self.runs}
        paths = list(dict.fromkeys(paths))
        taken = {kept[path].slot for path in paths if path in kept}
        runs = []
        for path in paths:
            if path not in kept:
                slot = next(i for i in range(len(paths) + 1) if i not in taken)
                taken.add(slot)
                kept[path] = ComparedRun(path, slot)
            runs.append(kept[path])
        self.runs = runs

    def drop(self, path: Path) -> None:
        self.choose(p for p in self.paths if p != path)

    def move(self, old: Path, new: Path | None) -> None:
        """The run at `old` was renamed to `new` (read again there, in its slot), or trashed (None)."""
        self.runs = [run if run.path != old else ComparedRun(new, run.slot) for run in self.runs
                     if run.path != old or new is not None]
