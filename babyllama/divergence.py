"""The trainer's defence against divergence: which steps are bad, and what the run does about them.

A step is bad when its loss or gradient norm is not finite, or when its loss is a spike: above
the ceiling `SpikeDetector` sets from the losses of recent applied steps. The compiled step
(babyllama.step) never applies a bad step; `DivergenceGuard` then follows the run's policy
(`on_divergence`): stop at once, or skip the batch and, when `rollback_after` bad steps fall
within `rollback_window` steps, stop ("skip") or roll back to the last good checkpoint, skipping
the batches of that stretch ("rollback", at most `max_rollbacks` times). Its state goes into the
checkpoint, so a resumed run meets the same events. The rules and their reasons:
docs/ARCHITECTURE.md, "Training". No MindSpore import at the top.
"""

from __future__ import annotations

import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from babyllama.checkpoint import LATEST_FILE, Checkpoint, list_checkpoints
from babyllama.config import TrainConfig
from babyllama.files import atomic_write_bytes

# The detector judges once it holds this many losses (or the whole window, if smaller).
SPIKE_MIN_HISTORY = 5
# The spread is at least this share of the median, so a flat stretch of losses does not make
# ordinary noise a spike.
SPREAD_FLOOR = 0.02
# 1.4826 x the median absolute deviation estimates a normal distribution's standard deviation.
MAD_TO_SIGMA = 1.4826
# A loss above this many times that of a model that knows nothing (ln vocab) is a spike from
# the first step on, history or not: the model has become worse than guessing.
KNOWS_NOTHING_FACTOR = 2.0


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class SpikeDetector:
    """The ceiling a step's loss must stay below: median + threshold x spread of recent losses.

    The losses are those of the last `window` applied steps; the spread is 1.4826 x their
    median absolute deviation, at least SPREAD_FLOOR of the median; robust statistics, so
    one earlier spike does not raise the ceiling. The ceiling is never above
    KNOWS_NOTHING_FACTOR x ln(vocab_size), and is only that until SPIKE_MIN_HISTORY losses
    are held. A window of 0 turns spike detection off (the ceiling is inf).
    """

    def __init__(self, window: int, threshold: float, vocab_size: int, losses=()):
        self.window = window
        self.threshold = threshold
        self.cap = KNOWS_NOTHING_FACTOR * math.log(vocab_size) if window else math.inf
        self.losses = [float(v) for v in losses][-window:] if window else []

    def add(self, loss: float) -> None:
        if self.window:
            self.losses = [*self.losses[-(self.window - 1):], loss] if self.window > 1 else [loss]

    @property
    def judging(self) -> bool:
        return len(self.losses) >= min(SPIKE_MIN_HISTORY, self.window) > 0

    def median(self) -> float:
        return statistics.median(self.losses)

    def ceiling(self) -> float:
        if not self.judging:
            return self.cap
        median = self.median()
        spread = max(MAD_TO_SIGMA * statistics.median(abs(v - median) for v in self.losses),
                     SPREAD_FLOOR * abs(median))
        return min(self.cap, median + self.threshold * spread)


@dataclass
class Alert:
    """What `RunDir.append_alert` records: the kind, what was done, the message, its fields."""

    alert: str
    action: str
    message: str
    fields: dict = field(default_factory=dict)


@dataclass
class Verdict:
    """What the run does after a step: record `alerts`, then roll back, stop, or go on."""

    alerts: list[Alert] = field(default_factory=list)
    rollback_from: int | None = None  # the first bad step of the stretch to undo
    skip: tuple[int, int] | None = None  # the data positions (first, last) the stretch read
    stop: str | None = None  # the reason, "diverged at step N: ..."


class DivergenceGuard:
    """The policy of one run, the same on every data-parallel rank (it sees only global values).

        guard = DivergenceGuard(train_cfg, vocab_size, state.get("divergence"))
        position = guard.position(data_position)            # skips the batches rolled back over
        result = trainer.step(x, y, lr_at(step) * guard.lr_scale, guard.ceiling())
        verdict = guard.judge(step + 1, result, position)   # alerts; rollback_from/skip; stop
        state["divergence"] = guard.state()                 # in every checkpoint
    """

    def __init__(self, cfg: TrainConfig, vocab_size: int, state: dict | None = None, loss_scaling: bool = False):
        state = state or {}
        self.cfg = cfg
        self.loss_scaling = loss_scaling
        self.detector = SpikeDetector(cfg.spike_window, cfg.spike_threshold, vocab_size, state.get("losses", ()))
        self.bad: list[tuple[int, int]] = [tuple(b) for b in state.get("bad_steps", [])]
        self.rollbacks: int = state.get("rollbacks", 0)
        self.lr_scale: float = state.get("lr_scale", 1.0)
        self.skipped: list[tuple[int, int]] = [tuple(s) for s in state.get("skipped", [])]
        self._ceiling = math.inf

    def state(self) -> dict:
        return {"losses": list(self.detector.losses), "bad_steps": [list(b) for b in self.bad],
                "rollbacks": self.rollbacks, "lr_scale": self.lr_scale, "skipped": [list(s) for s in self.skipped]}

    def position(self, data_position: int) -> int:
        """The data position a step reads: `data_position`, or the first one after the skipped
        stretches it falls in."""
        for first, last in self.skipped:
            if first <= data_position <= last:
                data_position = last + 1
        return data_position

    def ceiling(self) -> float:
        """The loss the next step must stay below to be applied (inf: any finite loss)."""
        self._ceiling = self.detector.ceiling()
        return self._ceiling

    def judge(self, step: int, result, position: int) -> Verdict:
        """After step `step` (counted from 1), which read data position `position`."""
        loss, grad_norm = result.loss, result.grad_norm
        if result.applied:
            self.detector.add(loss)
            return Verdict()
        loss_ok = math.isfinite(loss) and loss < self._ceiling
        if loss_ok and self.loss_scaling:
            # float16: gradients that overflowed are the loss scaler's to skip (it halves the scale).
            return Verdict()
        self.bad = [b for b in self.bad if b[0] > step - self.cfg.rollback_window] + [(step, position)]
        fields = {"loss": _finite_or_none(loss), "grad_norm": _finite_or_none(grad_norm),
                  "ceiling": _finite_or_none(self._ceiling), "data_position": position}
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            kind = "nonfinite"
            what = f"the loss became {loss}" if not math.isfinite(loss) else f"the gradient norm became {grad_norm}"
            said = what
        else:
            kind = "spike"
            basis = (f"the median of the last {len(self.detector.losses)} steps is {self.detector.median():.4f}"
                     if self._ceiling < self.detector.cap else "2 ln vocab, twice what a model that knows nothing scores")
            what = f"the loss jumped to {loss:.4f}, above {self._ceiling:.4f} ({basis})"
            said = f"the loss jumped to {loss:.4f} (limit {self._ceiling:.4f})"
        verdict = Verdict([Alert(kind, "skipped", f"step {step}: {what}; the step was skipped", fields)])
        advice = "lower learning_rate or grad_clip and resume from the last checkpoint"
        if self.cfg.on_divergence == "stop":
            verdict.stop = f"diverged at step {step}: {said}; {advice}"
        elif len(self.bad) >= self.cfg.rollback_after:
            stretch = f"{len(self.bad)} bad steps within {self.cfg.rollback_window} steps"
            if self.cfg.on_divergence == "rollback" and self.rollbacks < self.cfg.max_rollbacks:
                verdict.rollback_from = self.bad[0][0]
                verdict.skip = (self.bad[0][1], position)
            else:
                after = f" after {self.rollbacks} rollback{'s' if self.rollbacks != 1 else ''}" if self.rollbacks else ""
                verdict.stop = f"diverged at step {step}: {stretch}{after}, the last: {said}; {advice}"
        if verdict.stop:
            verdict.alerts.append(Alert("diverged", "stopped", verdict.stop, {"rollbacks": self.rollbacks}))
        return verdict

    def rolled_back(self, step: int, verdict: Verdict, checkpoint: Checkpoint | None, restored: dict | None) -> Alert:
        """Count the rollback decided after step `step`; the run now continues from `checkpoint`
        (None: the run's start) with `restored`, that checkpoint's guard state."""
        self.rollbacks += 1
        self.lr_scale *= self.cfg.rollback_lr_scale
        self.skipped = sorted({*self.skipped, verdict.skip})
        bad = len(self.bad)
        self.detector.losses = list((restored or {}).get("losses", []))[-self.detector.window:] \
            if self.detector.window else []
        self.bad = []
        first, last = verdict.skip
        target = f"{checkpoint.path.name} (step {checkpoint.step})" if checkpoint else "the run's start (step 0)"
        batches = f"batch {first}" if first == last else f"batches {first}-{last}"
        message = (f"step {step}: {bad} bad steps within {self.cfg.rollback_window} steps; rolled back "
                   f"to {target}, skipping {batches}, learning rate x{self.lr_scale:g} "
                   f"(rollback {self.rollbacks} of {self.cfg.max_rollbacks})")
        return Alert("rollback", "rolled_back", message, {
            "checkpoint": checkpoint.path.name if checkpoint else None, "to_step": checkpoint.step if checkpoint else 0,
            "skipped_batches": [first, last], "lr_scale": self.lr_scale, "rollbacks": self.rollbacks})


def rollback_target(checkpoints_dir: Path, first_bad_step: int) -> Checkpoint | None:
    """The newest checkpoint saved before `first_bad_step`; else the newest one; None when the
    run has none (it then starts over from its initial weights)."""
    found = list_checkpoints(checkpoints_dir)
    before = [c for c in found if c.step < first_bad_step]
    return (before or found or [None])[-1]


def drop_checkpoints_after(checkpoints_dir: Path, target: Checkpoint | None) -> list[Path]:
    """Delete the checkpoints newer than `target` (they hold the stretch rolled back over) after
    pointing `latest` at it, so a resume continues from where the run now is."""
    newer = [c for c in list_checkpoints(checkpoints_dir) if target is None or c.step > target.step]
    if target is not None:
        atomic_write_bytes(checkpoints_dir / LATEST_FILE, f"{target.path.name}\n".encode())
    elif newer:
        (checkpoints_dir / LATEST_FILE).unlink(missing_ok=True)
    for checkpoint in newer:
        shutil.rmtree(checkpoint.path, ignore_errors=True)
    return [c.path for c in newer]


def reset_to_start(trainer, seed: int) -> None:
    """The state a new run starts from: the seed's initial weights, zero moments, step count and
    dropout counters."""
    from mindspore import Tensor

    trainer.model.init_weights(np.random.default_rng(seed))
    weights = {p.name for p in trainer.model.trainable_params()}
    for param in trainer.parameters_for_checkpoint():
        if param.name not in weights:
            param.set_data(Tensor(np.zeros(param.shape, param.asnumpy().dtype)))
