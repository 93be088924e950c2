"""What a run trains: the model's shape (`ModelConfig`) and how it is trained (`TrainConfig`).

Presets, parameter estimates, TOML/JSON config files, `--field value` overrides and
`resolve_steps`; no MindSpore import, so the CLI and the app read configs cheaply.
Presets, files and the seed's knobs: docs/ARCHITECTURE.md, "The model and its configs".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from babyllama.errors import UserError

DTYPES = ("float32", "bfloat16", "float16", "auto")
# The benchmarks `babyllama eval --task` scores (babyllama.mcq.TASKS).
BENCH_TASKS = ("ceval", "cmmlu")
DIVERGENCE_POLICIES = ("rollback", "skip", "stop")

# MindSpore itself (libraries, kernels, graph compiler) before any tensor exists: about
# 400 MiB after import plus the compiled graphs, measured on this CPU.
RUNTIME_OVERHEAD_BYTES = 600 * 2**20


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class ModelConfig:
    """The shape of a Llama2 model: everything needed to rebuild its parameters."""

    vocab_size: int = field(default=64794, metadata=_help("token ids are 0 .. vocab_size-1; the tokenizer decides"))
    dim: int = field(default=288, metadata=_help("width of the residual stream"))
    n_layers: int = field(default=6, metadata=_help("number of transformer blocks"))
    n_heads: int = field(default=6, metadata=_help("attention heads (query heads)"))
    n_kv_heads: int | None = field(
        default=None, metadata=_help("key/value heads for grouped-query attention; none = n_heads")
    )
    multiple_of: int = field(default=32, metadata=_help("the feed-forward width is rounded up to a multiple of this"))
    norm_eps: float = field(default=1e-5, metadata=_help("epsilon inside RMSNorm"))
    max_seq_len: int = field(default=256, metadata=_help("context length in tokens (training window)"))
    dropout: float = field(default=0.0, metadata=_help("dropout probability (0 for pretraining)"))
    rope_theta: float = field(default=10000.0, metadata=_help("base of the rotary position frequencies"))

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU width: 2/3 of 4*dim, truncated to an integer, rounded up to multiple_of (Meta's rule)."""
        return self.multiple_of * math.ceil(int(2 * 4 * self.dim / 3) / self.multiple_of)

    def validate(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "multiple_of", "max_seq_len"):
            _require(getattr(self, name) > 0, f"model.{name}", f"must be positive, got {getattr(self, name)}")
        _require(
            self.dim % self.n_heads == 0,
            "model.n_heads",
            f"({self.n_heads}) must divide model.dim ({self.dim})",
        )
        if self.head_dim % 2:
            raise UserError(f"model.dim / model.n_heads = {self.head_dim} must be even for rotary embeddings",
                            field="model.dim")
        if self.n_kv_heads is not None:
            _require(self.n_kv_heads > 0, "model.n_kv_heads", f"must be positive, got {self.n_kv_heads}")
            _require(
                self.n_heads % self.n_kv_heads == 0,
                "model.n_kv_heads",
                f"({self.n_kv_heads}) must divide model.n_heads ({self.n_heads})",
            )
        _require(self.norm_eps > 0, "model.norm_eps", f"must be positive, got {self.norm_eps}")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.rope_theta > 0, "model.rope_theta", f"must be positive, got {self.rope_theta}")


@dataclass
class TrainConfig:
    """How a model is trained: batch, optimizer, schedule, intervals, numerics."""

    batch_size: int = field(default=8, metadata=_help("sequences per micro-batch"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches whose gradients are summed into one step"))
    learning_rate: float = field(default=3e-4, metadata=_help("peak learning rate"))
    min_lr: float = field(default=1e-5, metadata=_help("learning rate at the end of the cosine decay"))
    decay_lr: bool = field(default=True, metadata=_help("warm up then decay the learning rate (else constant)"))
    warmup_iters: int = field(default=1000, metadata=_help("steps of linear warm-up from 0"))
    lr_decay_iters: int = field(default=0, metadata=_help("step where the cosine decay reaches min_lr; 0 = max_steps"))
    weight_decay: float = field(default=0.1, metadata=_help("AdamW decoupled weight decay (matrices only)"))
    beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    beta2: float = field(default=0.95, metadata=_help("AdamW beta2"))
    grad_clip: float = field(default=1.0, metadata=_help("clip the global gradient norm to this; 0 = no clipping"))
    max_steps: int = field(default=2000, metadata=_help("optimizer steps to train; 0 = use epochs"))
    epochs: float = field(default=0.0, metadata=_help("passes over the training data; used when max_steps is 0"))
    eval_interval: int = field(default=200, metadata=_help("steps between validation evaluations (and samples)"))
    eval_iters: int = field(default=20, metadata=_help("validation batches per evaluation"))
    eval_only: bool = field(default=False, metadata=_help("evaluate once and exit"))
    log_interval: int = field(default=10, metadata=_help("steps between train rows in metrics.jsonl"))
    save_interval: int = field(default=500, metadata=_help("steps between checkpoints"))
    keep_checkpoints: int = field(default=3, metadata=_help("newest checkpoints kept; older ones are deleted"))
    sample_tokens: int = field(default=64, metadata=_help("tokens generated for the sample row at each evaluation"))
    sample_prompt: str = field(default="话说天下大势", metadata=_help("prompt continued for the sample row"))
    seed: int = field(default=1337, metadata=_help("random seed (initialisation, data order, dropout)"))
    dtype: str = field(
        default="auto",
        metadata=_help("float32 | bfloat16 | float16 | auto (float32 on the CPU, bfloat16 on Ascend/GPU)", choices=DTYPES),
    )
    val_fraction: float = field(default=0.01, metadata=_help("share of the token files held out for validation"))
    threads: int = field(default=0, metadata=_help("CPU threads for MindSpore kernels; 0 = its default"))
    # Benchmark scores during training: every bench_interval steps rank 0 scores the same
    # bench_questions questions of a C-Eval or CMMLU folder with the current weights (a `bench` row).
    bench_interval: int = field(default=0, metadata=_help("steps between benchmark scores; 0 = off"))
    bench_task: str = field(default="ceval", metadata=_help("ceval | cmmlu", choices=BENCH_TASKS))
    bench_data: str = field(default="", metadata=_help(
        "the benchmark's folder as published (C-Eval: dev/ and val/; CMMLU: dev/ and test/)"))
    bench_questions: int = field(default=200, metadata=_help("questions scored, spread over the subjects"))
    bench_shots: int = field(default=0, metadata=_help("examples before each question, from the dev split"))
    # Run health: the trainer's watch on its memory (babyllama.memory_watch) and the overfitting alert
    # (babyllama.overfitting).
    memory_limit: float = field(default=0.9, metadata=_help(
        "share of the machine's memory (host, or container limit) the trainer may use"))
    memory_limit_mb: int = field(default=0, metadata=_help("that limit in MiB instead; 0 = use memory_limit"))
    memory_stop_at: float = field(default=0.9, metadata=_help(
        "share of the limit where training stops after the step, with a checkpoint"))
    overfit_evals: int = field(default=3, metadata=_help(
        "evaluations of rising val loss (train loss falling) that alert; 0 = never"))
    # Divergence (babyllama.divergence): a step whose loss or gradient norm is not finite, or whose loss
    # is a spike, is never applied; these say what is a spike and what the run does next.
    on_divergence: str = field(
        default="rollback",
        metadata=_help("after rollback_after bad steps within rollback_window: rollback (to the last good "
                       "checkpoint, at most max_rollbacks times, then stop) | skip (bad steps; then stop) | "
                       "stop (at the first bad step)", choices=DIVERGENCE_POLICIES),
    )
    spike_window: int = field(default=50, metadata=_help("recent applied steps whose losses define a spike; "
                                                         "0 = no spike detection"))
    spike_threshold: float = field(default=6.0, metadata=_help("a loss this many spreads above the recent median "
                                                               "is a spike"))
    rollback_after: int = field(default=3, metadata=_help("bad steps within rollback_window that roll the run back "
                                                          "(or stop it)"))
    rollback_window: int = field(default=20, metadata=_help("steps within which rollback_after bad steps count"))
    max_rollbacks: int = field(default=3, metadata=_help("rollbacks before the run stops as diverged"))
    rollback_lr_scale: float = field(default=0.5, metadata=_help("the learning rate is multiplied by this at each "
                                                                 "rollback; 1 = unchanged"))
    # Fine-tuning (a run on SFT token files, usually started with --init-from): its sample row is the
    # greedy answer to this question, asked through the tokenizer's chat template.
    sample_question: str = field(default="刘备的两个结义兄弟是谁？", metadata=_help(
        "question a fine-tuning run answers for its sample row (instead of continuing sample_prompt)"))

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval",
                     "save_interval", "keep_checkpoints"):
            _require(getattr(self, name) > 0, f"train.{name}", f"must be positive, got {getattr(self, name)}")
        for name in ("warmup_iters", "lr_decay_iters", "max_steps", "sample_tokens", "threads", "memory_limit_mb",
                     "overfit_evals"):
            _require(getattr(self, name) >= 0, f"train.{name}", f"must not be negative, got {getattr(self, name)}")
        _require(self.epochs >= 0, "train.epochs", f"must not be negative, got {self.epochs}")
        if (self.max_steps > 0) == (self.epochs > 0):
            raise UserError("set exactly one of train.max_steps and train.epochs (the other 0), got "
                            f"max_steps={self.max_steps}, epochs={self.epochs}", field="train.max_steps")
        _require(self.learning_rate > 0, "train.learning_rate", f"must be positive, got {self.learning_rate}")
        _require(
            0 <= self.min_lr <= self.learning_rate,
            "train.min_lr",
            f"({self.min_lr}) must be between 0 and train.learning_rate ({self.learning_rate})",
        )
        if self.decay_lr and self.lr_decay_iters > 0:
            _require(
                self.warmup_iters < self.lr_decay_iters,
                "train.warmup_iters",
                f"({self.warmup_iters}) must be less than train.lr_decay_iters "
                f"({self.lr_decay_iters})",
            )
        if self.decay_lr and self.lr_decay_iters == 0 and self.max_steps > 0:
            _require(
                self.warmup_iters < self.max_steps,
                "train.warmup_iters",
                f"({self.warmup_iters}) must be less than train.max_steps "
                f"({self.max_steps}), where the learning rate decay ends (train.lr_decay_iters is 0)",
            )
        _require(self.weight_decay >= 0, "train.weight_decay", f"must not be negative, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            _require(0 <= getattr(self, name) < 1, f"train.{name}", f"must be in [0, 1), got {getattr(self, name)}")
        _require(self.grad_clip >= 0, "train.grad_clip", f"must not be negative, got {self.grad_clip}")
        _require(self.dtype in DTYPES, "train.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _require(0 <= self.val_fraction < 1, "train.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        for name in ("bench_interval", "bench_shots"):
            _require(getattr(self, name) >= 0, f"train.{name}", f"must not be negative, got {getattr(self, name)}")
        _require(self.bench_questions > 0, "train.bench_questions", f"must be positive, got {self.bench_questions}")
        _require(self.bench_task in BENCH_TASKS, "train.bench_task",
                 f"must be one of {', '.join(BENCH_TASKS)}, got {self.bench_task!r}")
        _require(self.bench_interval == 0 or self.bench_data.strip() != "", "train.bench_data",
                 "must name the benchmark's folder when train.bench_interval is set")
        for name in ("memory_limit", "memory_stop_at"):
            _require(0 < getattr(self, name) <= 1, f"train.{name}", f"must be in (0, 1], got {getattr(self, name)}")
        _require(self.on_divergence in DIVERGENCE_POLICIES, "train.on_divergence",
                 f"must be one of {', '.join(DIVERGENCE_POLICIES)}, got {self.on_divergence!r}")
        for name in ("spike_window", "max_rollbacks"):
            _require(getattr(self, name) >= 0, f"train.{name}", f"must not be negative, got {getattr(self, name)}")
        for name in ("rollback_after", "rollback_window"):
            _require(getattr(self, name) > 0, f"train.{name}", f"must be positive, got {getattr(self, name)}")
        # More bad steps than the window holds could never be counted: bad steps would be skipped forever.
        _require(self.rollback_after <= self.rollback_window, "train.rollback_after",
                 f"must not exceed train.rollback_window ({self.rollback_window}), got {self.rollback_after}")
        _require(self.spike_threshold > 0, "train.spike_threshold", f"must be positive, got {self.spike_threshold}")
        _require(0 < self.rollback_lr_scale <= 1, "train.rollback_lr_scale",
                 f"must be in (0, 1], got {self.rollback_lr_scale}")


def _require(condition: bool, field: str, problem: str) -> None:
    """Refuse a value: "model.dim must be positive, got 0", about the field "model.dim"."""
    if not condition:
        raise UserError(f"{field} {problem}", field=field)


# The two configs by the name of their section in files, run directories and field keys ("model.dim").
SECTIONS = {"model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Preset:
    description: str
    model: ModelConfig
    train: TrainConfig


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "a few million parameters; learns the sample corpus within minutes on a laptop CPU",
        ModelConfig(dim=256, n_layers=4, n_heads=4, max_seq_len=256),
        TrainConfig(batch_size=8, learning_rate=1e-3, min_lr=1e-4, warmup_iters=50, max_steps=1000,
                    eval_interval=100, eval_iters=10, log_interval=10, save_interval=200),
    ),
    "small": Preset(
        "about 10 M non-embedding parameters, 512-token context",
        ModelConfig(dim=384, n_layers=6, n_heads=6, max_seq_len=512),
        TrainConfig(batch_size=8, grad_accum=2, learning_rate=6e-4, min_lr=6e-5, warmup_iters=200,
                    max_steps=10000, eval_interval=500, save_interval=1000),
    ),
    "base": Preset(
        "the seed project's Baby-Llama2: dim 512, 8 layers, 8 heads, 512-token context",
        ModelConfig(dim=512, n_layers=8, n_heads=8, max_seq_len=512),
        TrainConfig(batch_size=16, learning_rate=3e-4, min_lr=1e-5, warmup_iters=1000, max_steps=80000,
                    eval_interval=2000, eval_iters=100, log_interval=50, save_interval=5000),
    ),
    "1b": Preset(
        "1.1 B parameters (TinyLlama's shape, grouped-query attention); for accelerators",
        ModelConfig(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, multiple_of=256, max_seq_len=2048),
        TrainConfig(batch_size=4, grad_accum=16, learning_rate=3e-4, min_lr=3e-5, warmup_iters=2000,
                    max_steps=100000, eval_interval=2000, eval_iters=50, log_interval=10, save_interval=1000),
    ),
}


def preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    """Fresh copies of a preset's configs (safe to modify)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    chosen = PRESETS[name]
    return dataclasses.replace(chosen.model), dataclasses.replace(chosen.train)


# ---------------------------------------------------------------------------------------
# Derived numbers


def param_count(model: ModelConfig) -> int:
    """Exact number of parameters; the embedding is tied to the output layer and counted once."""
    d, kv_dim = model.dim, model.kv_heads * model.head_dim
    attention = d * d + 2 * d * kv_dim + d * d
    feed_forward = 3 * d * model.hidden_dim
    norms = 2 * d
    return model.vocab_size * d + model.n_layers * (attention + feed_forward + norms) + d


def expected_weight_names(cfg: ModelConfig) -> list[str]:
    per_layer = ("attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
                 "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
    names = ["tok_embeddings.weight", "norm.weight"]
    for i in range(cfg.n_layers):
        names += [f"layers.{i}.{part}.weight" for part in per_layer]
    return names


def non_embedding_param_count(model: ModelConfig) -> int:
    return param_count(model) - model.vocab_size * model.dim


def tokens_per_step(model: ModelConfig, train: TrainConfig, world_size: int = 1) -> int:
    """Tokens consumed by one optimizer step across all data-parallel workers."""
    return train.batch_size * train.grad_accum * world_size * model.max_seq_len


def bytes_per_value(dtype: str) -> int:
    return 2 if dtype in ("bfloat16", "float16") else 4


def estimate_memory(model: ModelConfig, train: TrainConfig, dtype: str = "float32") -> dict[str, int]:
    """Bytes a training process needs, by part (and "total"). An estimate, not a promise.

    Counts: fp32 master weights, fp32 gradients (plus an accumulation buffer when
    grad_accum > 1), two fp32 AdamW moments; activations kept for the backward pass of one
    micro-batch in `dtype` (per layer: the norm inputs and outputs, q/k/v, rotated q/k,
    attention probabilities and pre-softmax scores, attention output, the three SwiGLU
    matmul outputs and their product; the final norm); the loss's logits, log-softmax and
    logits gradient (three batch x seq x vocab arrays, the largest single item at big
    vocabularies); and a fixed allowance for the MindSpore runtime. Does not count the
    data loader's memory map (shared with the page cache) or a Python-side eval batch.
    """
    n = param_count(model)
    act = bytes_per_value(dtype)
    tokens = train.batch_size * model.max_seq_len
    kv_dim = model.kv_heads * model.head_dim
    per_token_per_layer = 8 * model.dim + 4 * kv_dim + 4 * model.hidden_dim
    scores_per_layer = 2 * train.batch_size * model.n_heads * model.max_seq_len**2
    parts = {
        "weights": 4 * n,
        "gradients": 4 * n * (2 if train.grad_accum > 1 else 1),
        "optimizer": 8 * n,
        "activations": act * model.n_layers * (tokens * per_token_per_layer + scores_per_layer)
        + act * tokens * 2 * model.dim,
        "logits": 3 * 4 * tokens * model.vocab_size,
        "runtime": RUNTIME_OVERHEAD_BYTES,
    }
    parts["total"] = sum(parts.values())
    return parts


def summary(model: ModelConfig, train: TrainConfig, world_size: int = 1, dtype: str = "float32") -> str:
    """The text printed before training starts."""
    n = param_count(model)
    mem = estimate_memory(model, train, dtype)
    gib = 2**30
    steps = f"{train.max_steps:,} steps" if train.max_steps else f"{train.epochs:g} epochs"
    lines = [
        f"model: {n:,} parameters ({non_embedding_param_count(model):,} without the embedding); "
        f"dim {model.dim}, {model.n_layers} layers, {model.n_heads} heads ({model.kv_heads} kv), "
        f"head dim {model.head_dim}, hidden {model.hidden_dim}, vocab {model.vocab_size:,}, "
        f"context {model.max_seq_len}",
        f"batch: {train.batch_size} x {train.grad_accum} accumulation x {world_size} worker(s) x "
        f"{model.max_seq_len} tokens = {tokens_per_step(model, train, world_size):,} tokens per step; {steps}",
        f"optimizer: AdamW lr {train.learning_rate:g} -> {train.min_lr:g} (warm-up {train.warmup_iters}), "
        f"weight decay {train.weight_decay:g}, betas {train.beta1:g}/{train.beta2:g}, clip {train.grad_clip:g}",
        f"memory estimate per worker ({dtype}): {mem['total'] / gib:.2f} GiB = "
        + ", ".join(f"{k} {v / gib:.2f}" for k, v in mem.items() if k != "total"),
    ]
    return "\n".join(lines)


def resolve_steps(train: TrainConfig, steps_per_epoch: int) -> TrainConfig:
    """A copy with max_steps fixed (from epochs if needed) and lr_decay_iters filled in."""
    max_steps = train.max_steps or max(1, math.ceil(train.epochs * steps_per_epoch))
    resolved = dataclasses.replace(
        train, max_steps=max_steps, epochs=0.0, lr_decay_iters=train.lr_decay_iters or max_steps
    )
    resolved.validate()
    return resolved


def model_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """One line per field that differs, e.g. "dim: 288 != 512" (empty when the shapes agree)."""
    return [
        f"{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}"
        for f in dataclasses.fields(ModelConfig)
        if getattr(a, f.name) != getattr(b, f.name)
    ]


# ---------------------------------------------------------------------------------------
# Files


def config_to_dict(model: ModelConfig, train: TrainConfig) -> dict:
    return {"model": dataclasses.asdict(model), "train": dataclasses.asdict(train)}


def model_config_from_dict(values: dict, base: ModelConfig | None = None, source: str = "config") -> ModelConfig:
    return _from_dict("model", values, base or ModelConfig(), source)


def train_config_from_dict(values: dict, base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    return _from_dict("train", values, base or TrainConfig(), source)


def config_from_dict(
    data: dict, base: tuple[ModelConfig, TrainConfig] | None = None, source: str = "config"
) -> tuple[ModelConfig, TrainConfig]:
    """Both configs from {"model": {...}, "train": {...}}; missing fields come from `base`."""
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise UserError(f"{source}: unknown section(s) {', '.join(unknown)}; expected [model] and [train]")
    base_model, base_train = base or (ModelConfig(), TrainConfig())
    return (
        model_config_from_dict(data.get("model", {}), base_model, source),
        train_config_from_dict(data.get("train", {}), base_train, source),
    )


def _from_dict(section: str, values: dict, base, source: str):
    where = f"{source}: [{section}]"
    if not isinstance(values, dict):
        raise UserError(f"{where} must be a table of fields", field=section)
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    changes = {}
    for name, value in values.items():
        if name not in fields:
            raise UserError(f"{where}: unknown field {name!r}; known fields: {', '.join(fields)}", field=section)
        changes[name] = _check_type(value, fields[name], where, f"{section}.{name}")
    config = dataclasses.replace(base, **changes)
    try:
        config.validate()
    except UserError as e:
        raise UserError(f"{where}: {e}", field=e.field) from None
    return config


def field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """(the field's value type, whether None is allowed)."""
    hint = typing.get_type_hints(ModelConfig if f.name in ModelConfig.__dataclass_fields__ else TrainConfig)[f.name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _check_type(value, f: dataclasses.Field, where: str, key: str):
    kind, optional = field_type(f)
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{where}: {f.name} must be {kind.__name__}, got {value!r}", field=key)
    return value


def _read_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ImportError:
            raise UserError(
                f"{path}: reading TOML on Python {sys.version_info.major}.{sys.version_info.minor} needs the "
                "'tomli' package (pip install tomli), or write the config as JSON"
            ) from None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None


def load_config(
    path: Path, base: tuple[ModelConfig, TrainConfig] | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """Read a TOML or JSON config; fields the file leaves out come from `base` (default: defaults)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    if path.suffix == ".toml":
        data = _read_toml(path)
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table with [model] and [train] sections")
    return config_from_dict(data, base, str(path))


# ---------------------------------------------------------------------------------------
# Command line


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def utf8_text(text: str) -> str:
    """A text argument, refused when its bytes are not UTF-8 (Python hands them over as lone
    surrogates, which no tokenizer encodes and no file can be written with)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        raise argparse.ArgumentTypeError(f"not UTF-8 text ({raw!r}); check the terminal's encoding") from None
    return text


def _optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--field value` for every ModelConfig and TrainConfig field (both spellings, _ and -)."""
    for cls, title in ((ModelConfig, "model shape"), (TrainConfig, "training")):
        group = parser.add_argument_group(title)
        defaults = cls()
        for f in dataclasses.fields(cls):
            kind, optional = field_type(f)
            parse = {bool: _parse_bool, str: utf8_text}.get(kind, kind)
            names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
            group.add_argument(
                *names,
                dest=f.name,
                type=_optional(parse) if optional else parse,
                choices=f.metadata.get("choices"),
                default=argparse.SUPPRESS,
                metavar=kind.__name__.upper(),
                help=f"{f.metadata['help']} (default {getattr(defaults, f.name)!r} or the preset's)",
            )


def format_value(value) -> str:
    """A field's value as `--field value` reads it back: true/false, none, a float in its
    shortest exact spelling ("3e-4" reads as 0.0003, "10000" as 10000.0)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return str(value)


def given_fields(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` (ModelConfig or TrainConfig) given on the command line, by name."""
    given = vars(args)
    return {f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given}


def apply_overrides(
    model: ModelConfig, train: TrainConfig, args: argparse.Namespace
) -> tuple[ModelConfig, TrainConfig]:
    """Copies with every field given on the command line replaced, validated.

    Giving --epochs clears max_steps and giving --max_steps clears epochs, so either can
    override a preset that set the other.
    """
    model_changes = given_fields(args, ModelConfig)
    train_changes = given_fields(args, TrainConfig)
    if "epochs" in train_changes and "max_steps" not in train_changes:
        train_changes["max_steps"] = 0
    if "max_steps" in train_changes and "epochs" not in train_changes:
        train_changes["epochs"] = 0.0
    model = dataclasses.replace(model, **model_changes)
    train = dataclasses.replace(train, **train_changes)
    model.validate()
    train.validate()
    return model, train
