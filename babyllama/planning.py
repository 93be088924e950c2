"""Planning a run: everything about it that can be checked before MindSpore is imported.

Configs (preset, then the config file, then `--field value` flags), the token files, the
tokenizer, and for a resume the latest complete checkpoint, resolved into a `Plan` that
`babyllama.train` then trains. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from babyllama import __version__
from babyllama.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_FILE,
    Checkpoint,
    checkpoint_problem,
    find_checkpoint,
    read_checkpoint_state,
)
from babyllama.config import (
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    estimate_memory,
    format_value,
    load_config,
    model_differences,
    preset,
    resolve_steps,
)
from babyllama.data import (
    BatchSampler,
    SftDataset,
    TokenDataset,
    TokenFile,
    check_one_kind,
    check_same_tokenizer,
    check_token_ids,
    check_window_fits,
    is_sft_data,
)
from babyllama.devices import MIB, AcceleratorReading, host_memory_mb
from babyllama.errors import UserError
from babyllama.hf import HF_CONFIG_FILE, hf_weight_files, is_hf_folder, model_config_from_hf
from babyllama.msrun_env import expected_rank, expected_world_size
from babyllama.runs import ACTIVE_STATES, LAUNCH_ID_ENV, RunDir, effective_state, stop_it_first
from babyllama.tokenizer import Tokenizer, load_tokenizer, tokenizer_location

# Model fields that may change on resume: they shape no parameter.
RESUMABLE_MODEL_FIELDS = ("dropout",)


@dataclass
class Plan:
    run: RunDir
    model: ModelConfig
    train: TrainConfig  # resolved: max_steps fixed, lr_decay_iters filled in
    tokenizer: Tokenizer
    dataset: TokenDataset
    world_size: int
    preset: str | None
    resuming: bool = False
    resume_from: Checkpoint | None = None
    resume_state: dict | None = None
    notes: tuple[str, ...] = ()
    # A fine-tuning run's parent: {"run", "checkpoint", "step"} (its weights start this run).
    init_from: dict | None = None

    @property
    def start_step(self) -> int:
        return self.resume_state["step"] if self.resume_state else 0

    def config(self) -> dict:
        """What config.json holds (the run's, and each checkpoint's)."""
        config = {
            **config_to_dict(self.model, self.train),
            "data": describe_data(self.dataset),
            "tokenizer": self.tokenizer.describe(),
            "world_size": self.world_size,
            "preset": self.preset,
            "babyllama_version": __version__,
        }
        template = chat_template_of(self.tokenizer)
        if template is not None:
            config["chat_template"] = template.describe()
        if self.init_from is not None:
            config["init_from"] = self.init_from
        return config


def chat_template_of(tokenizer: Tokenizer):
    """The tokenizer's chat template, or None when it has none (a tokenizer without chat tokens)."""
    from babyllama.chat_template import template_for

    try:
        return template_for(tokenizer)
    except UserError:
        return None


def describe_data(dataset: TokenDataset) -> dict:
    """The token files with their manifests' key facts, for config.json."""
    files = []
    for token_file, train_windows, val_windows in zip(dataset.files, dataset.file_train, dataset.file_val):
        manifest = token_file.manifest or {}
        files.append({
            "path": str(token_file.path.resolve()),
            "dtype": token_file.dtype.name,
            "tokens": token_file.n_tokens,
            "documents": manifest.get("documents"),
            "vocab_size": token_file.vocab_size,
            "eos_id": token_file.eos_id,
            "tokenizer": (token_file.tokenizer or {}).get("name"),
            "tokenizer_sha256": (token_file.tokenizer or {}).get("sha256"),
            "created": manifest.get("created"),
            "sources": len(manifest.get("sources", [])),
            "train_windows": train_windows,
            "val_windows": val_windows,
        })
    return {
        "files": files,
        "sft": dataset.sft,
        "seq_len": dataset.seq_len,
        "val_fraction": dataset.val_fraction,
        "train_windows": dataset.train_windows,
        "val_windows": dataset.val_windows,
    }


def _check_bench(train: TrainConfig) -> TrainConfig:
    """bench_data made absolute (the trainer reads it from its kernel workspace) and its questions read
    once, so a wrong folder or a bad file stops the run here, before MindSpore starts."""
    if train.bench_interval == 0:
        return train
    from babyllama.mcq import TASKS, load_subjects

    folder = Path(train.bench_data).expanduser().resolve()
    try:
        load_subjects(TASKS[train.bench_task], folder, shots=train.bench_shots)
    except UserError as e:
        raise UserError(f"train.bench_data: {e}", field="train.bench_data") from None
    return dataclasses.replace(train, bench_data=str(folder))


def _open_dataset(paths, model: ModelConfig, train: TrainConfig) -> TokenDataset:
    # Absolute: token files are opened when first read, after the trainer moves to its kernel workspace.
    paths = [Path(p).absolute() for p in paths]
    reader = SftDataset if is_sft_data(paths) else TokenDataset
    return reader(paths, seq_len=model.max_seq_len, val_fraction=train.val_fraction)


def _choose_tokenizer(given: Path | None, dataset: TokenDataset) -> Tokenizer:
    if given is not None:
        return load_tokenizer(given)
    path = (dataset.tokenizer or {}).get("path")
    if not path:
        raise UserError(
            f"{dataset.files[0].path}: no manifest names the tokenizer these tokens came from; "
            "give it with --tokenizer PATH", field="tokenizer"
        )
    try:
        return load_tokenizer(path)
    except UserError as e:
        raise UserError(
            f"{e} (the tokenizer named by the manifest of {dataset.files[0].path}); give it with --tokenizer PATH",
            field="tokenizer",
        ) from None


def _check_tokenizer_fits(tokenizer: Tokenizer, dataset: TokenDataset, model: ModelConfig) -> None:
    for token_file in dataset.files:
        sha = (token_file.tokenizer or {}).get("sha256")
        if sha is not None and sha != tokenizer.fingerprint:
            raise UserError(
                f"{token_file.path}: made with tokenizer {token_file.describe_tokenizer()}, not with "
                f"{tokenizer.name} at {tokenizer.path} ({tokenizer.fingerprint[:19]}…); give the tokenizer "
                "the files were prepared with, or re-run `babyllama prepare` with this one", field="tokenizer"
            )
    check_vocabulary(dataset.files, model)
    if dataset.sft:
        from babyllama.chat_template import check_template

        for token_file in dataset.files:
            check_template((token_file.manifest or {}).get("chat_template"), tokenizer, str(token_file.path))
    # Every id, not only those of the batches drawn: a damaged file must not train for days first.
    for token_file in dataset.files:
        check_token_ids(token_file, dataset.vocab_size)


def check_vocabulary(files: Sequence[TokenFile], model: ModelConfig) -> None:
    """Refuse a model whose vocab_size leaves out ids of the token files' tokenizer."""
    vocab = max(f.vocab_size for f in files)
    if model.vocab_size < vocab:
        raise UserError(
            f"vocab_size {model.vocab_size:,} does not cover the token files' ids (their tokenizer has "
            f"{vocab:,}); use at least {vocab:,}", field="model.vocab_size"
        )


def new_run_problems(files: Sequence[TokenFile], model: ModelConfig | None, tokenizer: Path | None,
                     parent: Parent | None = None) -> list[UserError]:
    """What keeps these token files, model, tokenizer and fine-tuning parent from making a new run,
    each problem naming its field, found without reading the tokens or loading the tokenizer: the
    new-run form's checks. The same checks refuse the run in plan_new_run. `model` None (not valid)
    skips those about it."""
    problems = []
    if files:
        problems += _problem("data", check_one_kind, files)
        problems += _problem("data", check_same_tokenizer, files)
    if parent is not None and model is not None:
        problems += parent_shape_problems(parent, model)
    if parent is not None and files:
        problems += _problem("init_from", check_parent_data, parent, files)
    if files and model is not None:
        problems += _problem("model.vocab_size", check_vocabulary, files, model)
        problems += _problem("model.max_seq_len", check_window_fits, files, model.max_seq_len)
    if tokenizer is not None:
        problems += _problem("tokenizer", tokenizer_location, tokenizer)
    return problems


def _problem(field: str, check, *args) -> list[UserError]:
    try:
        check(*args)
    except UserError as e:
        return [UserError(str(e), field=field)]
    return []


@dataclass(frozen=True)
class MemoryFit:
    """A run's memory estimate against what it would train in: the host's memory, shared by its
    workers, or on a host with GPUs or NPUs each worker's device. `free_mb` None: not known."""

    dtype: str
    per_worker_mb: float
    # Workers sharing the memory of `where`: all of them on the host, those given one device.
    sharing: int
    where: str
    free_mb: float | None

    @property
    def need_mb(self) -> float:
        return self.per_worker_mb * self.sharing

    @property
    def fits(self) -> bool:
        return self.free_mb is None or self.need_mb <= self.free_mb

    def problem(self) -> str:
        """Why the run does not fit, and what to change."""
        gib = 1024
        need = f"≈{self.need_mb / gib:.1f} GiB"
        if self.sharing > 1:
            need += f" ({self.sharing} workers x ≈{self.per_worker_mb / gib:.1f} GiB, {self.dtype})"
        else:
            need += f" ({self.dtype})"
        fewer = "fewer workers, " if self.sharing > 1 else ""
        return (f"the run needs {need} but {self.where} has {(self.free_mb or 0) / gib:.1f} GiB free: choose a "
                f"smaller preset, {fewer}a smaller batch_size (a larger grad_accum keeps the tokens per step) "
                "or a smaller max_seq_len")


def memory_dtype(dtype: str, on_accelerator: bool) -> str:
    """The dtype a run computes in: "auto" is float32 on the CPU, bfloat16 on a GPU or NPU (as
    `step.resolve_dtype` decides once MindSpore knows the device)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_accelerator else "float32"


def memory_fit(model: ModelConfig, train: TrainConfig, workers: int, *,
               accelerators: Sequence[AcceleratorReading] = (), host_free_mb: float | None = None) -> MemoryFit:
    """Whether `workers` processes of this run fit: the one judgement behind `babyllama train`'s
    refusal and the app's question before a launch. With `accelerators` (devices.read_accelerators)
    each worker has a device, and the tightest of the first `workers` devices decides; without, the
    host's available memory (read now unless given) must hold every worker."""
    devices = sorted(accelerators, key=lambda r: (r.kind, r.index, r.chip))
    dtype = memory_dtype(train.dtype, bool(devices))
    per_worker = estimate_memory(model, train, dtype)["total"] / MIB
    if devices:
        used = devices[:workers]
        free = [(r.memory_total_mb - r.memory_used_mb, r) for r in used
                if r.memory_total_mb is not None and r.memory_used_mb is not None]
        if not free:
            return MemoryFit(dtype, per_worker, 1, f"{used[0].kind} {used[0].index}", None)
        tightest, reading = min(free, key=lambda pair: pair[0])
        where = f"{reading.kind} {reading.index}" + (f" chip {reading.chip}" if reading.kind == "npu" else "")
        return MemoryFit(dtype, per_worker, math.ceil(workers / len(devices)), where, tightest)
    if host_free_mb is None:
        used_mb, total_mb = host_memory_mb()
        host_free_mb = total_mb - used_mb
    return MemoryFit(dtype, per_worker, workers, "the host", host_free_mb)


def _resolve(model: ModelConfig, train: TrainConfig, dataset: TokenDataset, world_size: int) -> TrainConfig:
    steps_per_epoch = dataset.train_windows / (train.batch_size * train.grad_accum * world_size)
    if train.max_steps == 0 and steps_per_epoch < 1:
        raise UserError(
            f"{dataset.files[0].path}: {dataset.train_windows:,} training windows are fewer than one step's "
            f"{train.batch_size * train.grad_accum * world_size:,}; use more data or a smaller batch"
        )
    return resolve_steps(train, steps_per_epoch)


def refuse_if_taken(run: RunDir) -> None:
    """A run another live process holds (not our own launcher's `starting`) cannot be started.

    Checked by rank 0 alone: it claims the run as soon as it has planned, maybe before the
    other ranks of its msrun launch have looked, and they write nothing to the run directory.
    """
    if expected_rank() != 0:
        return
    status = run.read_status()
    current = effective_state(status)
    ours = status.get("launch_id") is not None and status.get("launch_id") == os.environ.get(LAUNCH_ID_ENV)
    if current.state in ACTIVE_STATES and not ours:
        raise UserError(stop_it_first(run.path, status, current.state))


@dataclass(frozen=True)
class Parent:
    """The checkpoint a fine-tuning run starts from (`--init-from`)."""

    checkpoint: Checkpoint
    model: ModelConfig
    train: TrainConfig
    config: dict  # its config.json

    def record(self) -> dict:
        """What the run's config.json records as `init_from`."""
        folder = self.checkpoint.path.resolve()
        run = folder.parent.parent if CHECKPOINT_NAME.fullmatch(folder.name) else None
        return {"run": None if run is None else str(run), "checkpoint": str(folder), "step": self.checkpoint.step}


# A fine-tuning run's schedule starts afresh: these come from the defaults, not from its parent.
SCHEDULE_FIELDS = ("max_steps", "epochs", "warmup_iters", "lr_decay_iters")


def fresh_schedule(train: TrainConfig) -> TrainConfig:
    defaults = TrainConfig()
    return dataclasses.replace(train, **{name: getattr(defaults, name) for name in SCHEDULE_FIELDS})


def read_parent(given: Path) -> Parent:
    """The checkpoint `--init-from` names (a run directory: its latest), complete and readable, or a
    Hugging Face Llama folder (`babyllama export --format hf`'s) with its tokenizer."""
    if is_hf_folder(given):
        return _read_hf_parent(Path(given))
    folder = find_checkpoint(given)
    problem = checkpoint_problem(folder)
    if problem:
        raise UserError(f"--init-from {given}: {problem}: the checkpoint is incomplete; give another", field="init_from")
    state, config = read_checkpoint_state(folder)
    try:
        model, train = config_from_dict({"model": config["model"], "train": config["train"]},
                                        source=str(folder / CONFIG_FILE))
    except (KeyError, TypeError):
        raise UserError(f"{folder / CONFIG_FILE}: has no [model] and [train] sections; is this a babyllama "
                        "checkpoint?", field="init_from") from None
    return Parent(Checkpoint(state["step"], folder), model, train, config)


def _read_hf_parent(folder: Path) -> Parent:
    """A Hugging Face folder as a parent: its shape from config.json, its tokenizer from the files beside
    the weights (the fingerprint the data's must have), default training settings; the weights are read
    when the trainer starts."""
    folder = folder.absolute()
    config_path = folder / HF_CONFIG_FILE
    try:
        model = model_config_from_hf(json.loads(config_path.read_text(encoding="utf-8")), config_path)
        hf_weight_files(folder)
        tokenizer = load_tokenizer(folder)
    except json.JSONDecodeError as e:
        raise UserError(f"--init-from {config_path}:{e.lineno}: not valid JSON ({e.msg})", field="init_from") from None
    except UserError as e:
        raise UserError(f"--init-from {folder}: {str(e).removeprefix(f'{folder}: ')}", field="init_from") from None
    config = {"model": dataclasses.asdict(model), "tokenizer": tokenizer.describe(), "source": "huggingface"}
    return Parent(Checkpoint(None, folder), model, TrainConfig(), config)


def parent_problem(folder: Path) -> str | None:
    """Why a fine-tuning run's recorded parent cannot start it again, or None."""
    if not folder.is_dir():
        return f"{folder} is gone"
    return None if is_hf_folder(folder) else checkpoint_problem(folder)


def check_parent_fits(parent: Parent, model: ModelConfig, tokenizer: Tokenizer) -> None:
    """Refuse a fine-tuning run whose model shape or tokenizer differs from its parent's, in one line."""
    check_parent_shape(parent, model)
    _check_parent_tokenizer(parent, tokenizer.fingerprint, f"{tokenizer.name} at {tokenizer.path}", "tokenizer")


def check_parent_shape(parent: Parent, model: ModelConfig) -> None:
    """Refuse a model whose shape differs from the parent's (dropout may change)."""
    differences = [d for d in model_differences(parent.model, model) if d.split(":")[0] not in RESUMABLE_MODEL_FIELDS]
    if differences:
        raise UserError(
            f"--init-from {parent.checkpoint.path}: the model's shape differs from the parent's ({'; '.join(differences)}, "
            "parent first); a fine-tuning run keeps its parent's shape: drop those flags", field="init_from"
        )


def parent_shape_problems(parent: Parent, model: ModelConfig) -> list[UserError]:
    """check_parent_shape's refusal as the new-run form shows it: on each field that differs, in one line."""
    return [
        UserError(f"the parent's is {format_value(getattr(parent.model, f.name))}: a fine-tuning run keeps its "
                  "parent's shape", field=f"model.{f.name}")
        for f in dataclasses.fields(ModelConfig)
        if f.name not in RESUMABLE_MODEL_FIELDS and getattr(parent.model, f.name) != getattr(model, f.name)
    ]


def check_parent_data(parent: Parent, files: Sequence[TokenFile]) -> None:
    """Refuse token files whose manifest names another tokenizer than the parent's, found without
    loading the tokenizer (the new-run form's check; a run checks the tokenizer itself, which the
    files' must be)."""
    for token_file in files:
        sha = (token_file.tokenizer or {}).get("sha256")
        if sha is not None:
            name = token_file.tokenizer.get("name")
            _check_parent_tokenizer(parent, sha, f"{name} ({token_file.path.name})", "data")


def _check_parent_tokenizer(parent: Parent, fingerprint: str, data_tokenizer: str, field: str) -> None:
    recorded = parent.config.get("tokenizer") or {}
    if recorded.get("sha256") != fingerprint:
        raise UserError(
            f"--init-from {parent.checkpoint.path}: the parent was trained with tokenizer {recorded.get('name')} "
            f"({str(recorded.get('sha256'))[:19]}…), the data's is {data_tokenizer} ({fingerprint[:19]}…); prepare "
            "the data with the parent's tokenizer", field=field
        )


def plan_new_run(args: argparse.Namespace, world_size: int) -> Plan:
    run = RunDir(args.run)
    if run.config_path.exists() and expected_rank() == 0:
        raise UserError(
            f"{run.config_path} exists: {run.path} already holds a run; continue it with "
            f"`babyllama train --run {run.path} --resume`, or pick another --run"
        )
    if not args.data:
        raise UserError("a new run needs token files: --data FILE.bin [FILE.bin ...] (make them with "
                        "`babyllama prepare`)", field="data")
    refuse_if_taken(run)
    init_from = getattr(args, "init_from", None)
    parent = read_parent(init_from) if init_from is not None else None
    base = preset(args.preset) if args.preset else (ModelConfig(), TrainConfig())
    if parent is not None:
        # The parent's shape, and its training settings unless a preset gives others; never its schedule.
        base = (parent.model, base[1] if args.preset else fresh_schedule(parent.train))
    if args.config is not None:
        base = load_config(args.config, base=base)
    model, train = apply_overrides(*base, args)
    dataset = _open_dataset(args.data, model, train)
    tokenizer = _choose_tokenizer(args.tokenizer, dataset)
    if parent is not None:
        check_parent_fits(parent, model, tokenizer)
    elif "vocab_size" not in vars(args):
        model = dataclasses.replace(model, vocab_size=tokenizer.vocab_size)
    elif model.vocab_size < tokenizer.vocab_size:
        raise UserError(
            f"--vocab_size {model.vocab_size:,} is smaller than tokenizer {tokenizer.name}'s vocabulary "
            f"({tokenizer.vocab_size:,}); leave it out to use the tokenizer's", field="model.vocab_size"
        )
    _check_tokenizer_fits(tokenizer, dataset, model)
    train = _check_bench(_resolve(model, train, dataset, world_size))
    return Plan(run, model, train, tokenizer, dataset, world_size, args.preset,
                init_from=None if parent is None else parent.record())


def plan_resume(args: argparse.Namespace, world_size: int) -> Plan:
    run = RunDir(args.run)
    for option in ("preset", "config", "init_from"):
        if getattr(args, option, None) is not None:
            raise UserError(
                f"--{option.replace('_', '-')} cannot be given with --resume: a run continues with its own "
                f"configuration ({run.config_path}); change single fields with --field value"
            )
    config = run.read_config()
    refuse_if_taken(run)
    try:
        model, train = config_from_dict({"model": config["model"], "train": config["train"]}, source=str(run.config_path))
    except (KeyError, TypeError):
        raise UserError(f"{run.config_path}: has no [model] and [train] sections; is this a babyllama run?") from None
    model, train = apply_overrides(model, train, args)

    checkpoint = run.latest_checkpoint()
    state = None
    notes = []
    if checkpoint is not None:
        problem = checkpoint_problem(checkpoint.path)
        if problem:
            raise UserError(f"{problem}: the latest checkpoint is incomplete; delete {checkpoint.path} to resume "
                            "from the one before it")
        state, checkpoint_config = read_checkpoint_state(checkpoint.path)
        saved_model, _ = config_from_dict(
            {"model": checkpoint_config["model"], "train": checkpoint_config["train"]},
            source=str(checkpoint.path / CONFIG_FILE),
        )
        differences = [d for d in model_differences(saved_model, model) if d.split(":")[0] not in RESUMABLE_MODEL_FIELDS]
        if differences:
            raise UserError(
                f"{checkpoint.path}: the checkpoint's model differs from the requested one ({'; '.join(differences)}, "
                "checkpoint first); a resumed run keeps its model's shape: drop those flags, or start a new run"
            )
    elif isinstance(config.get("init_from"), dict):
        problem = parent_problem(Path(str(config["init_from"].get("checkpoint"))))
        if problem:
            raise UserError(f"{run.path} has no checkpoint yet, so it would start again from its parent, but "
                            f"{problem}; start a new fine-tuning run with --init-from another checkpoint")
        notes.append(f"{run.path} has no checkpoint yet: fine-tuning starts again at step 0 from "
                     f"{config['init_from'].get('checkpoint')}")
    else:
        notes.append(f"{run.path} has no checkpoint yet: training starts at step 0 with the run's configuration")

    data_paths = args.data or [f["path"] for f in config.get("data", {}).get("files", [])]
    if not data_paths:
        raise UserError(f"{run.config_path}: names no token files; give them with --data", field="data")
    dataset = _open_dataset(data_paths, model, train)
    if args.data:
        _check_same_kind(run, config, dataset)
    tokenizer_path = args.tokenizer or (config.get("tokenizer") or {}).get("path")
    tokenizer = _choose_tokenizer(Path(tokenizer_path) if tokenizer_path else None, dataset)
    if state is not None:
        saved = (state.get("tokenizer") or {}).get("sha256")
        if saved != tokenizer.fingerprint:
            raise UserError(
                f"{checkpoint.path}: tokenizer fingerprint differs: the checkpoint was trained with "
                f"{(state.get('tokenizer') or {}).get('name')} ({saved}), the requested tokenizer {tokenizer.name} "
                f"at {tokenizer.path} is {tokenizer.fingerprint}; resume with the run's tokenizer", field="tokenizer"
            )
    _check_tokenizer_fits(tokenizer, dataset, model)
    train = _check_bench(_resolve(model, train, dataset, world_size) if train.max_steps == 0 else train)
    if state is not None:
        # Evaluating alone trains no step: a finished run's latest checkpoint may be evaluated.
        if state["step"] >= train.max_steps and not train.eval_only:
            raise UserError(
                f"{run.path} has already trained {state['step']:,} of max_steps {train.max_steps:,} steps; "
                f"to train further resume with a larger --max_steps (or --epochs)", field="train.max_steps"
            )
        sampler = BatchSampler(dataset, train.batch_size, train.seed, 0, world_size, train.grad_accum).describe()
        changed = [f"{k} {state['sampler'].get(k)} -> {v}" for k, v in sampler.items() if state["sampler"].get(k) != v]
        if changed:
            notes.append(
                "the batches from here on differ from those the run would have seen without the "
                f"interruption ({', '.join(changed)})"
            )
    init_from = config.get("init_from") if isinstance(config.get("init_from"), dict) else None
    return Plan(run, model, train, tokenizer, dataset, world_size, config.get("preset"), True, checkpoint, state,
                tuple(notes), init_from)


def _check_same_kind(run: RunDir, config: dict, dataset: TokenDataset) -> None:
    """Refuse to resume a run on data of the other kind than it trained on: a fine-tuning run on text
    would train unmasked, a pretraining run on conversations would fine-tune without a parent."""
    recorded = config.get("data") or {}
    sft = recorded.get("sft")
    if sft is None:  # a run made before config.json said its data's kind: its first file's, if still there
        first = next((f.get("path") for f in recorded.get("files", [])), None)
        if first is None or not Path(first).is_file():
            return
        sft = is_sft_data(first)
    given = dataset.files[0].path
    if sft and not dataset.sft:
        raise UserError(f"{given}: a pretraining token file (text, no loss mask), but {run.path} fine-tunes on SFT "
                        "token files (conversations with a loss mask); resume it with SFT files (or without --data), "
                        "or pretrain on this file in a run of its own", field="data")
    if dataset.sft and not sft:
        raise UserError(f"{given}: an SFT token file (conversations with a loss mask), but {run.path} pretrains on "
                        f"text; fine-tune on it in a run of its own: `babyllama train --run NEW --init-from {run.path} "
                        f"--data {given}`", field="data")


def train_arguments(
    *,
    resume: bool = False,
    data: Sequence[Path] = (),
    tokenizer: Path | None = None,
    preset: str | None = None,
    config: Path | None = None,
    fields: dict[str, object] | None = None,
    init_from: Path | None = None,
) -> list[str]:
    """The `babyllama train` arguments after `--run RUN` that start this run in a launched process:
    paths made absolute (it starts elsewhere), then a `--field=value` flag for each of `fields`
    (the `=` keeps a value that starts with '-' from reading as an option)."""
    out = ["--resume"] if resume else []
    if data:
        out += ["--data", *(str(Path(p).resolve()) for p in data)]
    if tokenizer is not None:
        out += ["--tokenizer", str(Path(tokenizer).resolve())]
    if preset is not None:
        out += ["--preset", preset]
    if config is not None:
        out += ["--config", str(Path(config).resolve())]
    if init_from is not None:
        out += ["--init-from", str(Path(init_from).resolve())]
    return out + [f"--{name}={format_value(value)}" for name, value in (fields or {}).items()]


def plan_training(args: argparse.Namespace, world_size: int | None = None) -> Plan:
    world_size = expected_world_size() if world_size is None else world_size
    plan = plan_resume(args, world_size) if args.resume else plan_new_run(args, world_size)
    if plan.dataset.val_windows == 0:
        if plan.train.eval_only:
            raise UserError("train.eval_only: there is nothing to evaluate, val_fraction 0 holds no window out; "
                            "give a val_fraction above 0, or score the data with `babyllama eval`",
                            field="train.eval_only")
        plan = dataclasses.replace(plan, notes=(*plan.notes, "val_fraction 0 holds no window out: the run trains "
                                                             "without evaluating (samples still come every "
                                                             "eval_interval steps)"))
    return plan
