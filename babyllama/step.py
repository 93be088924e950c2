"""The compiled training step: forward, loss, gradients, accumulation, clipping, AdamW.

`setup_runtime` prepares MindSpore (graph mode, threads, seed, msrun's data parallelism);
`TrainStep` holds the model, its optimizer state and the step, one graph (`nn.Cell`), which
the trainer calls once per optimizer step. Why a graph, the fused loss, graph kernel fusion
and float32 on the CPU: docs/MINDSPORE.md.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from typing import NamedTuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from babyllama.config import ModelConfig, TrainConfig
from babyllama.data import IGNORE_ID
from babyllama.errors import UserError
from babyllama.kernel_cache import KernelWorkspace, compiler_failure
from babyllama.model import Transformer
from babyllama.msrun_env import expected_world_size

ADAM_EPS = 1e-8
LOSS_SCALE_WINDOW = 1000


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The seed's schedule: linear warm-up from 0, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if step < cfg.warmup_iters:
        return cfg.learning_rate * step / cfg.warmup_iters
    decay_iters = cfg.lr_decay_iters or cfg.max_steps
    if decay_iters <= 0:
        raise ValueError("lr_at needs a resolved TrainConfig (config.resolve_steps): max_steps is 0")
    if step > decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / (decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


# ---------------------------------------------------------------------------------------
# Runtime


@dataclass(frozen=True)
class Runtime:
    device: str  # "CPU", "GPU" or "Ascend"
    rank: int
    world_size: int
    dtype: str  # resolved: float32, bfloat16 or float16
    kernels: KernelWorkspace | None  # where fused kernels compile (the CPU's graph kernel fusion)


def resolve_dtype(dtype: str, device: str) -> str:
    """"auto" -> bfloat16 on Ascend/GPU, float32 on the CPU; refuses half precision on the CPU."""
    if dtype == "auto":
        return "float32" if device == "CPU" else "bfloat16"
    if dtype != "float32" and device == "CPU":
        raise UserError(
            f"train.dtype {dtype} needs a GPU or Ascend device; on the CPU only float32 trains "
            "(MindSpore has no bfloat16 CPU kernels, and float16 diverges): use --dtype float32 or auto"
        )
    return dtype


def setup_runtime(train: TrainConfig, device: str | None = None) -> Runtime:
    """Graph mode, device, threads, seed; under msrun, communication and data parallelism.

    Call once per process before building a TrainStep. `device` is "CPU", "GPU" or
    "Ascend"; None keeps MindSpore's choice (the best available device).

    On the CPU it turns on graph kernel fusion (`fuse_elementwise_kernels`), so call it before
    starting threads that use relative paths.
    """
    ms.set_context(mode=ms.GRAPH_MODE)
    if device is not None:
        ms.set_device(device)
    kernels = fuse_elementwise_kernels() if ms.get_context("device_target") == "CPU" else None
    if train.threads:
        ms.device_context.cpu.op_tuning.threads_num(train.threads)
    rank, world_size = 0, 1
    if expected_world_size() > 1:
        from mindspore.communication import get_group_size, get_rank, init

        init()
        rank, world_size = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    ms.set_seed(train.seed)
    target = ms.get_context("device_target")
    return Runtime(device=target, rank=rank, world_size=world_size, dtype=resolve_dtype(train.dtype, target),
                   kernels=kernels)


class _FusableChain(nn.Cell):
    """Elementwise work that graph kernel fusion compiles into one generated kernel."""

    def construct(self, x):
        return ops.exp(x * 2.0 + 1.0) * x


def fuse_elementwise_kernels() -> KernelWorkspace:
    """Graph kernel fusion (jit level O1), compiling in this process's own kernel workspace.

    Fusion takes much less peak memory than jit level O0, and less time (docs/MINDSPORE.md,
    "Graph kernel fusion"). Its kernel compiler (AKG) runs in a server process
    that MindSpore starts at the first fused kernel and keeps for the life of the process;
    the server writes into its working directory (dsa_transfrom.log), and no setting moves
    that. So the first fused kernel is compiled here, in an empty workspace that is also the
    working directory, which the server inherits; this process is there only for the call,
    before the trainer starts any thread. Then the workspace gets the shared cache's kernels:
    a later run of the same shapes skips their compilation. See babyllama.kernel_cache for why
    no two processes compile in the same folder.

    A compiler that cannot start is named here, in seconds, with what to install.
    """
    global _workspace
    if _workspace is not None:
        return _workspace
    workspace = KernelWorkspace()
    workspace.create()
    # Where MindSpore writes the kernels' descriptions (akg_kernel_meta/) and its build lock.
    os.environ["MS_COMPILER_CACHE_PATH"] = str(workspace.path)
    # AKG reads its tuning files only from under this path, warning once a kernel otherwise
    # (the default is the working directory, and the files ship inside MindSpore).
    os.environ["AKG_WHITE_LIST_PATH"] = os.path.dirname(ms.__file__)
    # The environment form: set_context's enable_graph_kernel and graph_kernel_flags warn as deprecated.
    os.environ.setdefault("MS_DEV_GRAPH_KERNEL_FLAGS", "--opt_level=1")
    # Where a graph that fails to compile leaves its analysis (rank_0/om/analyze_fail.ir).
    os.environ["MS_DEV_SAVE_GRAPHS_PATH"] = str(workspace.path)
    ms.set_context(jit_config={"jit_level": "O1"})
    started_in = os.getcwd()
    os.chdir(workspace.path)
    # The server inherits this thread's signal mask: with SIGINT blocked it outlives a Ctrl-C at the
    # terminal, which reaches the whole foreground process group, so a stop during a compile ends in
    # a checkpoint, not in "Response is empty". (MindSpore ends the server with SIGTERM when the
    # process exits: that one stays open.) A SIGINT that comes meanwhile is delivered after.
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        _FusableChain()(Tensor(np.ones((4, 4), np.float32))).asnumpy()
    except RuntimeError as e:
        raise compiler_failure(e) from e
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        os.chdir(started_in)
    workspace.fill()
    _workspace = workspace
    return workspace


_workspace: KernelWorkspace | None = None


def _world_size() -> int:
    from mindspore.communication import get_group_size
    from mindspore.communication.management import GlobalComm

    return get_group_size() if GlobalComm.INITED else 1


# ---------------------------------------------------------------------------------------
# Graph cells


class LossCell(nn.Cell):
    """Mean next-token loss of a micro-batch: -log softmax(logits)[target], averaged over tokens.

    SparseSoftmaxCrossEntropyWithLogits computes exactly that in one fused kernel, and its
    gradient, softmax - one_hot, in one more: less CPU time and memory than log-softmax +
    gather or ops.cross_entropy (docs/MINDSPORE.md, "The loss").
    """

    def __init__(self, model: Transformer):
        super().__init__(auto_prefix=False)
        self.model = model
        self.cross_entropy = ops.SparseSoftmaxCrossEntropyWithLogits()

    def construct(self, tokens, targets):
        logits = self.model.logits_of(self.model.hidden_states(tokens))
        return self.cross_entropy(logits, targets.reshape(-1))


class MaskedLossCell(nn.Cell):
    """Fine-tuning's loss: -log softmax(logits)[target] summed over the targets that are not IGNORE_ID,
    divided by `count`, the trained targets of the whole step on this rank (so its micro-batches' losses
    add up to the step's mean, see UpdateCell).

    Pretraining keeps LossCell's fused kernel; this one is log_softmax then a gather, its masked
    positions' targets replaced by 0 (any id) and their losses multiplied by 0.
    """

    def __init__(self, model: Transformer):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, tokens, targets, count):
        logits = self.model.logits_of(self.model.hidden_states(tokens))
        targets = targets.reshape(-1, 1)
        trained = targets != IGNORE_ID
        safe = targets * ops.cast(trained, targets.dtype)
        picked = ops.gather_elements(ops.log_softmax(logits, -1), 1, safe)
        return -(picked * ops.cast(trained, picked.dtype)).sum() / count


class ScaledLossCell(nn.Cell):
    """The loss times the dynamic loss scale (float16), so small gradients stay representable."""

    def __init__(self, loss_cell: LossCell, scaler):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.scaler = scaler

    def construct(self, *inputs):
        return self.scaler.scale(self.loss_cell(*inputs))


def _adamw_coefficients(lr, step, weight_decay, beta1, beta2):
    """(lr', eps', decay') that make AdamWeightDecay's update exactly torch's bias-corrected AdamW.

    AdamWeightDecay does p -= lr' * (m / (sqrt(v) + eps') + decay' * p). Torch does
    p -= lr * wd * p + lr / c1 * m / (sqrt(v) / sqrt(c2) + eps), with c1 = 1 - beta1^t and
    c2 = 1 - beta2^t. Multiplying through: lr' = lr * sqrt(c2) / c1, eps' = eps * sqrt(c2),
    decay' = wd * c1 / sqrt(c2).
    """
    c1 = 1.0 - ops.pow(beta1, step)
    root_c2 = ops.sqrt(1.0 - ops.pow(beta2, step))
    return lr * root_c2 / c1, ADAM_EPS * root_c2, weight_decay * c1 / root_c2


class UpdateCell(nn.Cell):
    """One optimizer step: gradients of the last micro-batch (plus any accumulated), clip, AdamW.

    The update is applied only when the gradient norm is finite and the step's loss (the mean over
    its micro-batches and, in data parallel, over the ranks, so every rank decides alike) is below
    `ceiling` (inf: no limit); else weights, moments and step count stay as they were
    (babyllama.divergence decides what follows). Returns (loss, gradient norm, applied, this
    rank's loss).

    Holds the weights (by reference, through the model), the AdamW moments and the step count;
    `auto_prefix=False` keeps every name as the model and checkpoints know it.
    """

    def __init__(self, model: Transformer, train: TrainConfig, accumulated: ParameterTuple | None,
                 loss_sum: Parameter | None, world_size: int, loss_scaling: bool, masked: bool = False):
        super().__init__(auto_prefix=False)
        # Masked (fine-tuning): each micro-batch's loss is already its share of the step's mean
        # (MaskedLossCell), so micro-batches add up, and ranks are weighted by their trained targets.
        self.masked = masked
        self.loss_cell = MaskedLossCell(model) if masked else LossCell(model)
        self.params = ParameterTuple(model.trainable_params())
        self.exp_avg = self.params.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="exp_avg_sq", init="zeros")
        self.optimizer_step = Parameter(Tensor(0.0, ms.float32), name="optimizer_step")
        self.decay_mask = tuple(p.ndim >= 2 for p in self.params)
        self.weight_decay = train.weight_decay
        self.beta1, self.beta2 = train.beta1, train.beta2
        self.grad_clip = train.grad_clip
        self.accumulated = accumulated
        self.micro_batches = train.grad_accum
        self.grad_fn = ms.value_and_grad(self.loss_cell, None, self.params)
        self.adam = ops.AdamWeightDecay()
        self.half_square_sum = ops.L2Loss()
        self.loss_sum = loss_sum
        self.world_size = world_size
        self.reducer = None
        if world_size > 1:
            from mindspore.communication.management import GlobalComm

            self.reducer = nn.DistributedGradReducer(self.params, mean=True, degree=world_size,
                                                     group=GlobalComm.WORLD_COMM_GROUP)
            self.loss_all_reduce = ops.AllReduce(ops.ReduceOp.SUM, GlobalComm.WORLD_COMM_GROUP)
        self.loss_scaling = loss_scaling
        if loss_scaling:
            self.loss_scaler = ms.amp.DynamicLossScaler(2.0**16, 2, LOSS_SCALE_WINDOW)
            self.scaled_grad_fn = ms.value_and_grad(ScaledLossCell(self.loss_cell, self.loss_scaler), None, self.params)

    def gradients(self, *inputs):
        if self.loss_scaling:
            loss, grads = self.scaled_grad_fn(*inputs)
            return self.loss_scaler.unscale(loss), self.loss_scaler.unscale(grads)
        return self.grad_fn(*inputs)

    def construct(self, tokens, targets, lr, ceiling, count):
        """`count`: this rank's trained targets over the step's micro-batches (masked only; else unused)."""
        if self.masked:
            loss, grads = self.gradients(tokens, targets, count)
        else:
            loss, grads = self.gradients(tokens, targets)
        if self.accumulated is not None:
            grads = tuple(g + a for g, a in zip(grads, self.accumulated))
            for a in self.accumulated:
                ops.assign(a, ops.zeros_like(a))
            loss = self.loss_sum + loss if self.masked else (self.loss_sum + loss) / self.micro_batches
            ops.assign(self.loss_sum, ops.zeros_like(self.loss_sum))
        if self.micro_batches > 1 and not self.masked:
            grads = tuple(g / self.micro_batches for g in grads)
        global_loss = loss
        if self.reducer is not None and self.masked:
            # The reducer averages over ranks: weighting each by its share of the trained targets makes
            # the average the gradient of the mean over all of them.
            total = self.loss_all_reduce(count)
            share = count * self.world_size / total
            grads = self.reducer(tuple(g * share for g in grads))
            global_loss = self.loss_all_reduce(loss * count) / total
        elif self.reducer is not None:
            grads = self.reducer(grads)
            global_loss = self.loss_all_reduce(loss) / self.world_size
        grad_norm = ops.sqrt(2.0 * ops.addn([self.half_square_sum(g) for g in grads]))
        if self.grad_clip > 0:
            scale = ops.minimum(1.0, self.grad_clip / (grad_norm + 1e-6))
            grads = tuple(g * scale for g in grads)
        # NaN < ceiling is false, and so is inf < inf: a non-finite loss is never applied.
        below_ceiling = global_loss < ceiling
        if self.loss_scaling:
            finite = ms.amp.all_finite(grads)
            self.loss_scaler.adjust(finite)
        else:
            finite = ops.isfinite(grad_norm)
        applied = ops.logical_and(finite, below_ceiling)
        self.apply_adamw(grads, lr, applied)
        return global_loss, grad_norm, applied, loss

    def apply_adamw(self, grads, lr, applied):
        """AdamW, or when `applied` is false an update that leaves everything as it was.

        No graph branch: parameters given new data after a branch has run (a checkpoint loaded
        for a rollback) were not seen by it (docs/MINDSPORE.md, "A step not applied"). So a
        step not applied runs the kernel with learning rate 0, betas 1 and zero gradients
        (p - 0 * finite = p, m = 1 * m + 0 * 0 = m): bit for bit the same state.
        """
        gate = ops.cast(applied, ms.float32)
        step = self.optimizer_step + gate
        ops.assign(self.optimizer_step, step)
        lr_folded, eps_folded, decay_folded = _adamw_coefficients(lr, ops.maximum(step, 1.0), self.weight_decay,
                                                                  self.beta1, self.beta2)
        lr_folded = lr_folded * gate
        one = ops.ones_like(gate)
        beta1 = ops.select(applied, one * self.beta1, one)
        beta2 = ops.select(applied, one * self.beta2, one)
        no_decay = ops.zeros_like(decay_folded)
        for param, m, v, grad, decays in zip(self.params, self.exp_avg, self.exp_avg_sq, grads, self.decay_mask):
            self.adam(param, m, v, lr_folded, beta1, beta2, eps_folded,
                      decay_folded if decays else no_decay,
                      ops.select(ops.broadcast_to(applied, grad.shape), grad, ops.zeros_like(grad)))


class AccumulateCell(nn.Cell):
    """Adds one micro-batch's gradients and loss into the accumulation buffers."""

    def __init__(self, model: Transformer, accumulated: ParameterTuple, loss_sum: Parameter, masked: bool = False):
        super().__init__(auto_prefix=False)
        self.masked = masked
        self.loss_cell = MaskedLossCell(model) if masked else LossCell(model)
        self.params = ParameterTuple(model.trainable_params())
        self.accumulated = accumulated
        self.loss_sum = loss_sum
        self.grad_fn = ms.value_and_grad(self.loss_cell, None, self.params)

    def construct(self, tokens, targets, count):
        if self.masked:
            loss, grads = self.grad_fn(tokens, targets, count)
        else:
            loss, grads = self.grad_fn(tokens, targets)
        for a, g in zip(self.accumulated, grads):
            ops.assign_add(a, g)
        ops.assign_add(self.loss_sum, loss)
        return loss


# ---------------------------------------------------------------------------------------
# The trainer's handle


class StepResult(NamedTuple):
    loss: float  # the step's mean loss over its micro-batches (and data-parallel ranks)
    grad_norm: float  # the global gradient norm before clipping
    applied: bool  # whether the update was applied (see UpdateCell)
    local_loss: float  # this rank's mean loss


class TrainStep:
    """A model, its optimizer state and the compiled step; call `setup_runtime` first.

        runtime = setup_runtime(train_cfg)            # graph mode, threads, seed, msrun workers
        trainer = TrainStep(model_cfg, train_cfg)     # builds the model (seeded) and the graphs
        for step in range(start, train_cfg.max_steps):
            lr = lr_at(step, train_cfg)               # train_cfg resolved (config.resolve_steps)
            result = trainer.step(x, y, lr, ceiling)  # x, y int32 (grad_accum, batch, seq) or (batch, seq)
            result.loss, result.grad_norm, result.applied  # applied: grad norm finite, loss < ceiling
        val = trainer.eval_loss(x_val, y_val)         # (batch, seq) or (n, batch, seq): mean loss
        ms.save_checkpoint(trainer.parameters_for_checkpoint(), path)
        ms.load_param_into_net(trainer.checkpoint_cell, ms.load_checkpoint(path))   # to resume
        trainer.compile_seconds                       # the first step's time, graph compile included

    `trainer.model` is the `babyllama.model.Transformer` (for sampling with
    `model.CachedDecoder(trainer.model)` between steps).

    What one `step` does, exactly:
    - each micro-batch's loss is the mean over its tokens of -log softmax(logits)[target]
      (one fused kernel, see LossCell); the step's gradient is the mean of the micro-batches'
      gradients, so grad_accum micro-batches of B give the gradient of one batch of
      grad_accum * B; the reported loss is their mean;
    - with several data-parallel workers (communication initialised, world size > 1) the
      gradients are averaged across workers with nn.DistributedGradReducer;
    - the global gradient norm (before clipping) is reported; gradients are scaled by
      min(1, grad_clip / (norm + 1e-6)) when grad_clip > 0 (torch's clip_grad_norm_);
    - AdamW as torch.optim.AdamW: bias-corrected moments, eps 1e-8, decoupled weight decay
      p -= lr * weight_decay * p on matrices (every 2-D parameter, the tied embedding
      included, as the seed's configure_optimizers) and not on norm weights; run by
      MindSpore's fused CPU/GPU/Ascend AdamWeightDecay kernel with the bias corrections folded
      into its learning rate, epsilon and decay (exact; see `_adamw_coefficients`);
    - the update is applied only when the gradient norm is finite and the step's loss is below
      `ceiling`, inside the one compiled graph (see `UpdateCell.apply_adamw`); the result says whether.

    Checkpoint names are clean: the weights keep the model's names ("layers.0.attention.wq.weight"),
    the moments are "exp_avg.<name>" and "exp_avg_sq.<name>", the update count "optimizer_step".

    Precision: float32 everywhere on the CPU, the only dtype that trains there. On GPU/Ascend,
    bfloat16 or float16 run the matmuls in that dtype with float32 weights, optimizer, norms,
    softmax and loss; float16 adds dynamic loss scaling (skip the update and halve the scale
    on overflow, double it after 1,000 clean steps). Those two paths cannot be run on this
    CPU-only machine and are untested here.
    """

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, model: Transformer | None = None,
                 dtype: str | None = None, masked: bool = False):
        model_cfg.validate()
        train_cfg.validate()
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.world_size = _world_size()
        device = ms.get_context("device_target")
        self.dtype = resolve_dtype(dtype or train_cfg.dtype, device)
        self.model = model if model is not None else Transformer(model_cfg, train_cfg.seed, self.dtype)
        self.model.set_train(True)
        accumulated = loss_sum = None
        if train_cfg.grad_accum > 1:
            accumulated = ParameterTuple(self.model.trainable_params()).clone(prefix="grad_accum", init="zeros")
            loss_sum = Parameter(Tensor(0.0, ms.float32), name="grad_accum.loss_sum", requires_grad=False)
            self.accumulate = AccumulateCell(self.model, accumulated, loss_sum, masked)
        self.update = UpdateCell(self.model, train_cfg, accumulated, loss_sum, self.world_size,
                                 loss_scaling=self.dtype == "float16", masked=masked)
        self.masked = masked
        self.evaluate = MaskedLossCell(self.model) if masked else LossCell(self.model)
        self.compile_seconds: float | None = None

    @property
    def checkpoint_cell(self) -> nn.Cell:
        """The cell whose parameters are the checkpoint (weights, moments, step count)."""
        return self.update

    def parameters_for_checkpoint(self) -> list[Parameter]:
        """Weights, AdamW moments and the update count, under their clean names."""
        return [p for p in self.update.get_parameters() if not p.name.startswith("grad_accum.")]

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, ceiling: float = math.inf) -> StepResult:
        """One optimizer step on grad_accum micro-batches, applied only when its gradient norm is
        finite and its mean loss is below `ceiling` (see UpdateCell)."""
        micro = self.train_cfg.grad_accum
        x = np.asarray(x, np.int32).reshape(micro, -1, x.shape[-1])
        y = np.asarray(y, np.int32).reshape(micro, -1, y.shape[-1])
        # Masked: the step's loss is the mean over the trained targets of all its micro-batches.
        count = Tensor(float(max(1, np.count_nonzero(y != IGNORE_ID))) if self.masked else 1.0, ms.float32)
        self.model.set_train(True)
        started = time.perf_counter()
        for i in range(micro - 1):
            self.accumulate(Tensor(x[i]), Tensor(y[i]), count)
        loss, grad_norm, applied, local_loss = self.update(Tensor(x[-1]), Tensor(y[-1]), Tensor(lr, ms.float32),
                                                           Tensor(ceiling, ms.float32), count)
        result = StepResult(float(loss.asnumpy()), float(grad_norm.asnumpy()), bool(applied.asnumpy()),
                            float(local_loss.asnumpy()))
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - started
        return result

    def eval_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean loss over one or more (batch, seq) batches, without dropout or updates; masked, the mean
        over their trained targets."""
        x = np.asarray(x, np.int32)
        y = np.asarray(y, np.int32)
        x = x.reshape(-1, *x.shape[-2:])
        y = y.reshape(-1, *y.shape[-2:])
        self.model.set_train(False)
        if self.masked:
            count = Tensor(float(max(1, np.count_nonzero(y != IGNORE_ID))), ms.float32)
            loss = sum(float(self.evaluate(Tensor(xb), Tensor(yb), count).asnumpy()) for xb, yb in zip(x, y))
        else:
            losses = [float(self.evaluate(Tensor(xb), Tensor(yb)).asnumpy()) for xb, yb in zip(x, y)]
            loss = sum(losses) / len(losses)
        self.model.set_train(True)
        return loss
