"""The compiled training step: schedule, loss, AdamW, accumulation, checkpoints.

Two trainers are compiled once for the module and shared; tests that train start from a
snapshot of the initial state (weights, moments, update count) so their order never matters.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from babyllama.config import ModelConfig, TrainConfig
from babyllama.errors import UserError

ms = pytest.importorskip("mindspore")

from babyllama.step import TrainStep, lr_at, resolve_dtype, setup_runtime  # noqa: E402

MODEL = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, max_seq_len=16)
TRAIN = TrainConfig(batch_size=4, learning_rate=1e-2, min_lr=1e-3, warmup_iters=0, max_steps=100,
                    weight_decay=0.5, beta1=0.9, beta2=0.95, grad_clip=1.0, dtype="float32", seed=5)
LR = 1e-2


def batch(seed: int, shape=(4, 16)) -> tuple[np.ndarray, np.ndarray]:
    window = np.random.default_rng(seed).integers(0, MODEL.vocab_size, (*shape[:-1], shape[-1] + 1))
    return window[..., :-1].astype(np.int32), window[..., 1:].astype(np.int32)


def state_of(trainer: TrainStep) -> dict[str, np.ndarray]:
    return {p.name: p.asnumpy().copy() for p in trainer.parameters_for_checkpoint()}


def restore(trainer: TrainStep, state: dict[str, np.ndarray]) -> None:
    for p in trainer.parameters_for_checkpoint():
        p.set_data(ms.Tensor(state[p.name]))


@pytest.fixture(scope="module")
def trainer():
    setup_runtime(TRAIN)
    return TrainStep(MODEL, TRAIN)


@pytest.fixture(scope="module")
def initial(trainer):
    return state_of(trainer)


@pytest.fixture()
def fresh(trainer, initial):
    restore(trainer, initial)
    return trainer


def test_lr_schedule_warms_up_then_follows_the_cosine():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110, max_steps=200)
    assert lr_at(0, cfg) == 0.0
    assert lr_at(5, cfg) == pytest.approx(5e-4)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(5.5e-4)
    assert lr_at(35, cfg) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert lr_at(150, cfg) == 1e-4
    assert lr_at(7, dataclasses.replace(cfg, decay_lr=False)) == 1e-3
    assert lr_at(55, dataclasses.replace(cfg, lr_decay_iters=0, max_steps=100)) == pytest.approx(5.5e-4)
    with pytest.raises(ValueError, match="resolved"):
        lr_at(50, dataclasses.replace(cfg, lr_decay_iters=0, max_steps=0, epochs=1.0))


def test_half_precision_is_refused_on_the_cpu():
    assert resolve_dtype("auto", "CPU") == "float32"
    assert resolve_dtype("auto", "Ascend") == "bfloat16"
    with pytest.raises(UserError, match="train.dtype bfloat16 needs a GPU or Ascend"):
        resolve_dtype("bfloat16", "CPU")


def test_checkpoint_names_are_clean(trainer):
    names = [p.name for p in trainer.parameters_for_checkpoint()]
    weights = [p.name for p in trainer.model.trainable_params()]
    assert names[: len(weights)] == weights
    assert sorted(names[len(weights):]) == sorted(
        [f"exp_avg.{n}" for n in weights] + [f"exp_avg_sq.{n}" for n in weights] + ["optimizer_step"])


def test_loss_is_the_mean_negative_log_softmax_of_the_logits(fresh):
    x, y = batch(1)
    fresh.model.set_train(False)
    logits = fresh.model(ms.Tensor(x)).asnumpy().astype(np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, y[..., None], -1).mean()
    assert fresh.eval_loss(x, y) == pytest.approx(expected, rel=1e-6)
    assert fresh.eval_loss(np.stack([x, x]), np.stack([y, y])) == pytest.approx(expected, rel=1e-6)


def test_eval_changes_nothing(fresh, initial):
    fresh.eval_loss(*batch(2))
    after = state_of(fresh)
    assert all(np.array_equal(after[k], initial[k]) for k in initial)


def adamw_reference(params, grads, m, v, t, names):
    """torch.optim.AdamW after torch.nn.utils.clip_grad_norm_, decaying only 2-D parameters."""
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    scale = min(1.0, TRAIN.grad_clip / (norm + 1e-6))
    out = []
    for name, p, g, mi, vi in zip(names, params, grads, m, v):
        g = g * scale
        mi[...] = TRAIN.beta1 * mi + (1 - TRAIN.beta1) * g
        vi[...] = TRAIN.beta2 * vi + (1 - TRAIN.beta2) * g * g
        decay = TRAIN.weight_decay if p.ndim == 2 else 0.0
        p = p * (1 - LR * decay)
        denom = np.sqrt(vi) / math.sqrt(1 - TRAIN.beta2**t) + 1e-8
        out.append(p - LR / (1 - TRAIN.beta1**t) * mi / denom)
    return out, norm


def test_two_steps_equal_torch_style_adamw_with_clipping(fresh):
    params = fresh.model.trainable_params()
    names = [p.name for p in params]
    m = [np.zeros(p.shape, np.float32) for p in params]
    v = [np.zeros(p.shape, np.float32) for p in params]
    for t, seed in ((1, 3), (2, 4)):
        x, y = batch(seed)
        before = [p.asnumpy() for p in params]
        _, grads = fresh.update.grad_fn(ms.Tensor(x), ms.Tensor(y))
        expected, norm = adamw_reference(before, [g.asnumpy() for g in grads], m, v, t, names)
        grad_norm = fresh.step(x, y, LR).grad_norm
        assert grad_norm == pytest.approx(norm, rel=1e-5)
        for name, p, want in zip(names, params, expected):
            np.testing.assert_allclose(p.asnumpy(), want, rtol=1e-5, atol=1e-6, err_msg=f"{name} at step {t}")
    assert int(fresh.update.optimizer_step.asnumpy()) == 2
    # Norm weights start at 1, so decaying them would have moved them by lr * weight_decay.
    norm_weight = fresh.model.norm.weight.asnumpy()
    assert np.abs(norm_weight - expected[names.index("norm.weight")]).max() < 1e-6 < LR * TRAIN.weight_decay


def test_loss_falls_when_overfitting_one_batch(fresh):
    x, y = batch(5)
    losses = [fresh.step(x, y, LR)[0] for _ in range(30)]
    assert losses[0] == pytest.approx(math.log(MODEL.vocab_size), rel=0.05)
    assert losses[-1] < 0.5 * losses[0]
    assert all(np.isfinite(losses))


def test_two_micro_batches_equal_one_double_batch(fresh, initial):
    accumulating = TrainStep(MODEL, dataclasses.replace(TRAIN, batch_size=2, grad_accum=2))
    restore(accumulating, initial)
    x, y = batch(6)
    loss_one, norm_one = fresh.step(x, y, LR)[:2]
    loss_two, norm_two = accumulating.step(x.reshape(2, 2, -1), y.reshape(2, 2, -1), LR)[:2]
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    assert norm_two == pytest.approx(norm_one, rel=1e-4)
    # The first moments are the clipped gradients times (1 - beta1), so they compare the
    # gradients themselves.
    one, two = state_of(fresh), state_of(accumulating)
    for name in (n for n in one if n.startswith("exp_avg.")):
        scale = np.abs(one[name]).max()
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)
    # A second step shows the accumulation buffers were emptied. Looser: Adam's division by
    # sqrt(v) magnified rounding where gradients were near 0, so the weights now differ a little.
    x, y = batch(7)
    loss_one, norm_one = fresh.step(x, y, LR)[:2]
    loss_two, norm_two = accumulating.step(x.reshape(2, 2, -1), y.reshape(2, 2, -1), LR)[:2]
    assert loss_two == pytest.approx(loss_one, rel=1e-4)
    assert norm_two == pytest.approx(norm_one, rel=1e-3)


def test_checkpoint_resumes_bit_identically(fresh, tmp_path):
    fresh.step(*batch(8), LR)
    path = str(tmp_path / "step.ckpt")
    ms.save_checkpoint(fresh.parameters_for_checkpoint(), path)
    x, y = batch(9)
    loss, norm = fresh.step(x, y, LR)[:2]
    after = state_of(fresh)
    fresh.step(*batch(10), LR)

    not_loaded, _ = ms.load_param_into_net(fresh.checkpoint_cell, ms.load_checkpoint(path))
    assert not_loaded == []
    assert int(fresh.update.optimizer_step.asnumpy()) == 1
    assert fresh.step(x, y, LR)[:2] == (loss, norm)
    again = state_of(fresh)
    assert all(np.array_equal(again[k], after[k]) for k in after)


def test_a_step_not_below_the_ceiling_changes_nothing_and_the_next_one_is_as_if_it_never_ran(fresh, initial):
    x, y = batch(11)
    skipped = fresh.step(x, y, LR, ceiling=1.0)
    assert not skipped.applied and skipped.loss == pytest.approx(math.log(MODEL.vocab_size), rel=0.05)
    assert skipped.loss == skipped.local_loss and math.isfinite(skipped.grad_norm)
    unchanged = state_of(fresh)
    assert all(np.array_equal(unchanged[k], initial[k]) for k in initial)
    # Strictly below: a loss equal to the ceiling is not applied either.
    assert not fresh.step(x, y, LR, ceiling=skipped.loss).applied
    applied = fresh.step(x, y, LR)
    assert applied.applied and applied[:2] == skipped[:2]
    after_skips = state_of(fresh)
    restore(fresh, initial)
    fresh.step(x, y, LR)
    assert all(np.array_equal(after_skips[k], v) for k, v in state_of(fresh).items())
    assert int(fresh.update.optimizer_step.asnumpy()) == 1


def test_a_non_finite_loss_is_never_applied(fresh, initial):
    # A finite weight whose activations overflow: the loss is not finite, the update not applied.
    weight = fresh.model.norm.weight
    poisoned = initial["norm.weight"].copy()
    poisoned[0] = 3e38
    weight.set_data(ms.Tensor(poisoned))
    result = fresh.step(*batch(12), LR)
    assert not result.applied and not math.isfinite(result.loss)
    after = state_of(fresh)
    assert all(np.array_equal(after[k], initial[k]) for k in initial if k != "norm.weight")
    assert np.array_equal(after["norm.weight"], poisoned)


def test_the_ceiling_judges_the_mean_loss_of_all_micro_batches(initial):
    accumulating = TrainStep(MODEL, dataclasses.replace(TRAIN, batch_size=2, grad_accum=2))
    restore(accumulating, initial)
    x, y = batch(13)
    x, y = x.reshape(2, 2, -1), y.reshape(2, 2, -1)
    losses = sorted(accumulating.eval_loss(x[i], y[i]) for i in range(2))
    assert losses[0] < losses[1]
    mean = sum(losses) / 2
    # Between the first micro-batch's loss and the mean: the mean is judged, so not applied.
    result = accumulating.step(x, y, LR, ceiling=(losses[0] + mean) / 2)
    assert not result.applied and result.loss == pytest.approx(mean, rel=1e-6)
    assert int(accumulating.update.optimizer_step.asnumpy()) == 0
    assert accumulating.step(x, y, LR, ceiling=(mean + losses[1]) / 2).applied
