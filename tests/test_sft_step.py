"""The masked training step of fine-tuning: targets equal to IGNORE_ID do not count, and the loss is
the sum of the trained targets' losses over the number of trained targets of the whole step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from babyllama.config import ModelConfig, TrainConfig
from babyllama.data import IGNORE_ID

ms = pytest.importorskip("mindspore")

from babyllama.step import TrainStep, setup_runtime  # noqa: E402

MODEL = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, max_seq_len=16)
TRAIN = TrainConfig(batch_size=4, learning_rate=1e-2, min_lr=1e-3, warmup_iters=0, max_steps=100,
                    weight_decay=0.5, grad_clip=1.0, dtype="float32", seed=5)
LR = 1e-2


def masked_batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch whose rows have different numbers of trained targets (one row has a single one)."""
    rng = np.random.default_rng(seed)
    window = rng.integers(0, MODEL.vocab_size, (4, 17))
    x, y = window[:, :-1].astype(np.int32), window[:, 1:].astype(np.int32)
    y[0, :15] = IGNORE_ID
    y[1, ::2] = IGNORE_ID
    y[2, 5:9] = IGNORE_ID
    return x, y


def state_of(trainer: TrainStep) -> dict[str, np.ndarray]:
    return {p.name: p.asnumpy().copy() for p in trainer.parameters_for_checkpoint()}


def restore(trainer: TrainStep, state: dict[str, np.ndarray]) -> None:
    for p in trainer.parameters_for_checkpoint():
        p.set_data(ms.Tensor(state[p.name]))


@pytest.fixture(scope="module")
def masked():
    setup_runtime(TRAIN)
    return TrainStep(MODEL, TRAIN, masked=True)


@pytest.fixture(scope="module")
def initial(masked):
    return state_of(masked)


@pytest.fixture()
def fresh(masked, initial):
    restore(masked, initial)
    return masked


def hand_loss(trainer: TrainStep, x: np.ndarray, y: np.ndarray) -> float:
    """The mean over trained targets of -log softmax(logits)[target], in float64 numpy."""
    trainer.model.set_train(False)
    logits = trainer.model(ms.Tensor(x)).asnumpy().astype(np.float64)
    trainer.model.set_train(True)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    trained = y != IGNORE_ID
    return float(-log_probs[trained, y[trained]].mean())


def test_the_loss_of_a_batch_is_the_mean_over_its_trained_targets_only(fresh):
    x, y = masked_batch(1)
    expected = hand_loss(fresh, x, y)
    assert fresh.eval_loss(x, y) == pytest.approx(expected, rel=1e-6)
    # The step reports the same loss (before its update).
    assert fresh.step(x, y, LR).loss == pytest.approx(expected, rel=1e-6)
    # IGNORE_ID is what masks: the same targets trained would give another loss.
    other = y.copy()
    other[other == IGNORE_ID] = 3
    assert hand_loss(fresh, x, other) != pytest.approx(expected, rel=1e-3)


def test_the_ids_of_masked_targets_change_neither_the_loss_nor_the_gradients(fresh, initial):
    # A row whose targets are all masked (a window of question and template only): its ids, those of
    # the masked targets and the inputs before them, may be anything. The gradients are compared
    # through the parameters one step from the same state takes them to.
    x, y = masked_batch(5)
    y[0] = IGNORE_ID
    changed = x.copy()
    changed[0] = (x[0] + 1 + np.arange(x.shape[1])) % MODEL.vocab_size
    assert fresh.eval_loss(changed, y) == fresh.eval_loss(x, y)
    loss = fresh.step(x, y, LR).loss
    stepped = state_of(fresh)
    restore(fresh, initial)
    assert fresh.step(changed, y, LR).loss == loss
    after = state_of(fresh)
    assert any(not np.array_equal(stepped[name], initial[name]) for name in stepped)
    for name, value in stepped.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_a_masked_step_lowers_the_masked_loss(fresh):
    x, y = masked_batch(2)
    before = fresh.step(x, y, LR).loss
    assert fresh.eval_loss(x, y) < before


def test_two_masked_micro_batches_equal_one_big_batch(fresh, initial):
    """Micro-batches with different numbers of trained targets: the step's loss is the mean over all
    of them (not the mean of the micro-batches' means), and so is its gradient."""
    accumulating = TrainStep(MODEL, dataclasses.replace(TRAIN, batch_size=2, grad_accum=2), masked=True)
    restore(accumulating, initial)
    x, y = masked_batch(3)
    expected = hand_loss(fresh, x, y)
    halves = [hand_loss(fresh, x[i:i + 2], y[i:i + 2]) for i in (0, 2)]
    assert expected != pytest.approx(sum(halves) / 2, rel=1e-3)
    loss_one, norm_one = fresh.step(x, y, LR)[:2]
    loss_two, norm_two = accumulating.step(x.reshape(2, 2, -1), y.reshape(2, 2, -1), LR)[:2]
    assert loss_one == pytest.approx(expected, rel=1e-6)
    assert loss_two == pytest.approx(expected, rel=1e-5)
    assert norm_two == pytest.approx(norm_one, rel=1e-4)
    one, two = state_of(fresh), state_of(accumulating)
    for name in (n for n in one if n.startswith("exp_avg.")):
        scale = np.abs(one[name]).max()
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def test_a_masked_step_above_the_ceiling_is_not_applied(fresh, initial):
    """The divergence guard judges the masked step's loss, the mean over trained targets."""
    x, y = masked_batch(4)
    expected = hand_loss(fresh, x, y)
    skipped = fresh.step(x, y, LR, ceiling=expected * 0.99)
    assert not skipped.applied and skipped.loss == pytest.approx(expected, rel=1e-6)
    unchanged = state_of(fresh)
    assert all(np.array_equal(unchanged[k], initial[k]) for k in initial)
    assert fresh.step(x, y, LR, ceiling=expected * 1.01).applied
