"""babyllama.divergence without MindSpore: the spike ceiling, the policies, the state a checkpoint
carries, and which checkpoint a rollback returns to. The trainer's runs: tests/test_train.py."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import NamedTuple

import pytest

from babyllama.checkpoint import latest_checkpoint
from babyllama.config import TrainConfig
from babyllama.divergence import (
    DivergenceGuard,
    SpikeDetector,
    drop_checkpoints_after,
    rollback_target,
)

VOCAB = 1000
CFG = TrainConfig(spike_window=8, spike_threshold=6.0, rollback_after=3, rollback_window=10, max_rollbacks=2,
                  rollback_lr_scale=0.5)


class Step(NamedTuple):
    """The fields of step.StepResult the guard reads."""

    loss: float
    grad_norm: float
    applied: bool


def run_steps(guard: DivergenceGuard, losses, first_step: int = 1):
    """Feed losses through the guard as the trainer does (the step applies what is below the ceiling)."""
    verdicts = []
    for step, loss in enumerate(losses, first_step):
        ceiling = guard.ceiling()
        verdicts.append(guard.judge(step, Step(loss, 1.0, math.isfinite(loss) and loss < ceiling), step - 1))
    return verdicts


def test_the_ceiling_is_the_median_plus_threshold_spreads_capped_at_twice_what_knowing_nothing_scores():
    detector = SpikeDetector(8, 6.0, VOCAB)
    cap = 2 * math.log(VOCAB)
    assert detector.ceiling() == cap
    for loss in (4.0, 3.0, 5.0, 3.5):
        detector.add(loss)
    assert detector.ceiling() == cap  # fewer than SPIKE_MIN_HISTORY losses
    for loss in (4.5, 3.8, 4.2, 4.1, 4.0):
        detector.add(loss)
    # The window keeps the last 8: 3.0 5.0 3.5 4.5 3.8 4.2 4.1 4.0; median 4.05, deviations
    # 1.05 .95 .55 .45 .25 .15 .05 .05, their median 0.35.
    assert detector.losses == [3.0, 5.0, 3.5, 4.5, 3.8, 4.2, 4.1, 4.0]
    assert detector.ceiling() == pytest.approx(4.05 + 6.0 * 1.4826 * 0.35)
    flat = SpikeDetector(8, 6.0, VOCAB, [2.0] * 8)
    assert flat.ceiling() == pytest.approx(2.0 + 6.0 * 0.02 * 2.0)  # the spread's floor
    assert SpikeDetector(0, 6.0, VOCAB, [2.0] * 8).ceiling() == math.inf


def test_stop_ends_the_run_at_the_first_bad_step_with_the_reason():
    guard = DivergenceGuard(dataclasses.replace(CFG, on_divergence="stop"), VOCAB)
    first, bad = run_steps(guard, [4.0, float("nan")])
    assert first.alerts == [] and first.stop is None
    assert [(a.alert, a.action) for a in bad.alerts] == [("nonfinite", "skipped"), ("diverged", "stopped")]
    assert bad.stop == ("diverged at step 2: the loss became nan; lower learning_rate or grad_clip and resume from "
                        "the last checkpoint")
    assert bad.alerts[0].fields == {"loss": None, "grad_norm": 1.0, "ceiling": 2 * math.log(VOCAB), "data_position": 1}


def test_skip_skips_bad_steps_and_stops_only_when_rollback_after_fall_within_the_window():
    guard = DivergenceGuard(dataclasses.replace(CFG, on_divergence="skip"), VOCAB)
    # Bad steps 6, 12 and 18: never three within 10 steps.
    losses = [4.0] * 5 + [50.0] + [4.0] * 5 + [math.inf] + [4.0] * 5 + [50.0] + [4.0] * 2
    verdicts = run_steps(guard, losses)
    assert [(s, a.alert) for s, v in enumerate(verdicts, 1) for a in v.alerts] == [
        (6, "spike"), (12, "nonfinite"), (18, "spike")]
    assert all(v.stop is None and v.rollback_from is None for v in verdicts)
    verdicts = run_steps(guard, [50.0, 4.0, 50.0], first_step=21)
    assert verdicts[-1].stop.startswith("diverged at step 23: 3 bad steps within 10 steps, the last: the loss "
                                        "jumped to 50.0000")


def test_rollback_skips_the_stretch_scales_the_learning_rate_and_stops_after_max_rollbacks():
    guard = DivergenceGuard(CFG, VOCAB)
    verdicts = run_steps(guard, [4.0] * 10 + [50.0, 4.0, 50.0, 50.0])
    verdict = verdicts[-1]
    assert (verdict.rollback_from, verdict.skip, verdict.stop) == (11, (10, 13), None)
    restored = {"losses": [4.0] * 8}
    alert = guard.rolled_back(14, verdict, None, restored)
    assert (alert.alert, alert.action) == ("rollback", "rolled_back")
    assert alert.message == ("step 14: 3 bad steps within 10 steps; rolled back to the run's start (step 0), skipping "
                             "batches 10-13, learning rate x0.5 (rollback 1 of 2)")
    assert alert.fields == {"checkpoint": None, "to_step": 0, "skipped_batches": [10, 13], "lr_scale": 0.5,
                            "rollbacks": 1}
    assert guard.lr_scale == 0.5 and guard.bad == [] and guard.detector.losses == [4.0] * 8
    # The batches rolled back over are read no more.
    assert [guard.position(p) for p in (9, 10, 12, 13, 14)] == [9, 14, 14, 14, 14]

    guard.rolled_back(14, run_steps(guard, [50.0] * 3, first_step=11)[-1], None, restored)
    assert guard.rollbacks == 2 and guard.lr_scale == 0.25
    last = run_steps(guard, [50.0] * 3, first_step=11)[-1]
    assert last.rollback_from is None
    assert last.stop.startswith("diverged at step 13: 3 bad steps within 10 steps after 2 rollbacks")
    assert [(a.alert, a.action) for a in last.alerts] == [("spike", "skipped"), ("diverged", "stopped")]


def test_the_guard_state_survives_a_json_round_trip_and_judges_alike():
    guard = DivergenceGuard(CFG, VOCAB)
    run_steps(guard, [4.1, 3.9, 4.3, 4.0, 50.0, 4.2, 3.8, 4.05, 50.0])
    guard.rolled_back(9, dataclasses.replace(run_steps(guard, [50.0])[-1], skip=(4, 8)), None, None)
    run_steps(guard, [4.0, 4.4, 50.0, 3.7])
    again = DivergenceGuard(CFG, VOCAB, json.loads(json.dumps(guard.state())))
    assert again.state() == guard.state()
    assert again.ceiling() == guard.ceiling()
    assert again.position(5) == guard.position(5) == 9


def test_float16_overflow_is_the_loss_scalers_and_not_a_bad_step():
    guard = DivergenceGuard(CFG, VOCAB, loss_scaling=True)
    guard.ceiling()
    assert guard.judge(1, Step(4.0, math.inf, False), 0).alerts == []
    assert guard.judge(2, Step(math.nan, math.inf, False), 1).alerts[0].alert == "nonfinite"


def make_checkpoints(folder: Path, steps) -> Path:
    checkpoints = folder / "checkpoints"
    for step in steps:
        (checkpoints / f"step_{step:07d}").mkdir(parents=True)
    (checkpoints / "latest").write_text(f"step_{max(steps):07d}\n")
    return checkpoints


def test_a_rollback_returns_to_the_newest_checkpoint_before_the_trouble_and_drops_the_later_ones(tmp_path):
    checkpoints = make_checkpoints(tmp_path, [10, 20, 30])
    target = rollback_target(checkpoints, 25)
    assert target.step == 20
    dropped = drop_checkpoints_after(checkpoints, target)
    assert [p.name for p in dropped] == ["step_0000030"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_0000010", "step_0000020"]
    assert latest_checkpoint(checkpoints).step == 20
    # All of them saved after the first bad step: the newest; none at all: the run's start.
    assert rollback_target(checkpoints, 5).step == 20
    assert rollback_target(tmp_path / "none", 5) is None
    drop_checkpoints_after(checkpoints, None)
    assert list(checkpoints.iterdir()) == []
