"""How a run was started, from its config.json and status.json: `run_settings` for `babyllama runs show`
and the app's config view alike, so both say the same thing. See docs/ARCHITECTURE.md, "The run directory".
"""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

from babyllama.config import (
    config_from_dict,
    non_embedding_param_count,
    param_count,
    tokens_per_step,
)
from babyllama.errors import UserError
from babyllama.runs.rundir import RunDir

# The label column of `format_settings`, and the width it wraps to.
LABEL_WIDTH = 12
WRAP_WIDTH = 80
NO_CONFIG = "none yet: the trainer writes config.json once it has checked the run"
NO_COMMAND = "not in status.json; each start's is in train.log, on its line beginning ==="


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _model_settings(config: dict, world_size: int) -> list[tuple[str, str]]:
    model, train = config_from_dict(
        {section: config.get(section, {}) for section in ("model", "train")}, source="config.json"
    )
    steps = f"{train.max_steps:,} steps" if train.max_steps else f"{train.epochs:g} epochs"
    decay_to = train.lr_decay_iters or train.max_steps
    if not train.decay_lr:
        schedule = f"constant {train.learning_rate:g}"
    else:
        decay_end = f"at step {decay_to:,}" if decay_to else "at the end"
        schedule = (
            f"warm-up {train.warmup_iters:,} steps to {train.learning_rate:g}, "
            f"cosine decay to {train.min_lr:g} {decay_end}"
        )
    return [
        (
            "model",
            f"dim {model.dim}, {model.n_layers} layers, {model.n_heads} heads ({model.kv_heads} kv), "
            f"head dim {model.head_dim}, hidden {model.hidden_dim}, vocab {model.vocab_size:,}, "
            f"context {model.max_seq_len}, dropout {model.dropout:g}",
        ),
        ("parameters", f"{param_count(model):,} ({non_embedding_param_count(model):,} without the embedding)"),
        (
            "batch",
            f"{train.batch_size} x {train.grad_accum} accumulation x {world_size} worker(s) x "
            f"{model.max_seq_len} tokens = {tokens_per_step(model, train, world_size):,} tokens per step",
        ),
        (
            "steps",
            f"{steps}; eval every {train.eval_interval:,} over {train.eval_iters} batches, "
            f"checkpoint every {train.save_interval:,} (keep {train.keep_checkpoints})",
        ),
        ("lr", schedule),
        (
            "optimizer",
            f"AdamW, weight decay {train.weight_decay:g}, betas {train.beta1:g}/{train.beta2:g}, "
            f"gradient clip {train.grad_clip:g}",
        ),
        ("numerics", f"dtype {train.dtype}, seed {train.seed}"),
    ]


def _data_settings(data: dict) -> str:
    files = data.get("files") if isinstance(data.get("files"), list) else []
    lines = [
        f"{item.get('path', '?')} ({_count(item.get('tokens'))} tokens)" for item in files if isinstance(item, dict)
    ]
    if isinstance(data.get("train_windows"), int):
        lines.append(
            f"{_count(data['train_windows'])} training and {_count(data.get('val_windows'))} validation windows"
        )
    return "\n".join(lines) or "-"


def _tokenizer_settings(tokenizer: dict) -> str:
    return (
        f"{tokenizer.get('name', '?')} ({tokenizer.get('kind', '?')}, vocab {_count(tokenizer.get('vocab_size'))}) "
        f"{tokenizer.get('path', '')}"
    ).strip()


def parent_words(config: dict, short: bool = False) -> str | None:
    """A fine-tuning run's parent (config.json's `init_from`): "base at step 1,200 (CHECKPOINT)", or
    short, "base@1200"; a Hugging Face folder (no step) by its name, "the Hugging Face folder FOLDER";
    None for a run without one."""
    parent = config.get("init_from") if isinstance(config, dict) else None
    if not isinstance(parent, dict):
        return None
    checkpoint = str(parent.get("checkpoint") or "?")
    step = parent.get("step")
    if step is None:
        return Path(checkpoint).name if short else f"the Hugging Face folder {checkpoint}"
    name = Path(parent["run"]).name if parent.get("run") else checkpoint
    if short:
        return f"{name}@{step}"
    return f"{name} at step {_count(step)} ({checkpoint})"


def host_words(host: dict) -> str:
    """One host of a run under msrun (status.json's `hosts`): "node-b (10.0.0.2): rank 1, pid 4242, lost"."""
    ranks, pids = host.get("ranks") or [], host.get("pids") or []
    where = f"{host.get('host')} ({host.get('address')})" if host.get("address") else str(host.get("host"))
    return (f"{where}: rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}, "
            f"pid{'s' if len(pids) > 1 else ''} {', '.join(map(str, pids))}, {host.get('state')}")


def run_lineage(run: RunDir) -> str | None:
    """What a run with a parent is: "fine-tuned from base@1200" on conversations, "continued pretraining
    from base@1200" on text (--init-from with a fresh schedule); None without a parent."""
    try:
        config = run.read_config() if run.config_path.exists() else None
    except UserError:
        return None
    parent = parent_words(config, short=True) if config is not None else None
    if parent is None:
        return None
    data = config.get("data")
    sft = isinstance(data, dict) and data.get("sft") is True
    return f"{'fine-tuned' if sft else 'continued pretraining'} from {parent}"


def run_settings(run: RunDir) -> list[tuple[str, str]]:
    """(label, value) pairs: preset, model shape, parameters, tokens per step, steps, learning-rate
    schedule, optimizer, data files, tokenizer, the command line of the latest start. A value may
    hold several lines (one a data file). A file that cannot be read says why in one line."""
    try:
        status = run.read_status()
    except UserError as e:
        status = {}
        problem = [("status", str(e))]
    else:
        problem = []
    command = status.get("command")
    command_text = shlex.join(str(part) for part in command) if isinstance(command, list) else NO_COMMAND
    try:
        config = run.read_config() if run.config_path.exists() else None
    except UserError as e:
        return [*problem, ("config", str(e)), ("command", command_text)]
    if not isinstance(config, dict):
        found = NO_CONFIG if config is None else f"{run.config_path} holds no JSON object"
        return [*problem, ("config", found), ("command", command_text)]
    world_size = config.get("world_size") or status.get("world_size")
    settings = [*problem, ("preset", str(config.get("preset") or "none"))]
    parent = parent_words(config)
    if parent is not None:
        settings.append(("parent", parent))
    try:
        settings += _model_settings(config, world_size if isinstance(world_size, int) else 1)
    except UserError as e:
        settings.append(("config", str(e)))
    if isinstance(config.get("data"), dict):
        settings.append(("data", _data_settings(config["data"])))
    if isinstance(config.get("tokenizer"), dict):
        settings.append(("tokenizer", _tokenizer_settings(config["tokenizer"])))
    hosts = [h for h in status.get("hosts") or [] if isinstance(h, dict)]
    if hosts:
        settings.append(("hosts", "\n".join(host_words(h) for h in hosts)))
    settings.append(("command", command_text))
    if config.get("babyllama_version"):
        settings.append(("version", f"babyllama {config['babyllama_version']}"))
    return settings


def format_settings(settings: list[tuple[str, str]], width: int = WRAP_WIDTH) -> list[str]:
    """The pairs as lines of at most `width` columns: the label, then the value wrapped beside it."""
    lines = []
    indent = " " * LABEL_WIDTH
    for label, value in settings:
        first = label.ljust(LABEL_WIDTH)
        for part in value.split("\n"):
            wrapped = textwrap.wrap(
                part, width, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False
            ) or [first.rstrip()]
            lines += wrapped
            first = indent
    return lines
