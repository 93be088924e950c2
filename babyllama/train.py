"""`babyllama train`: the training loop, and the run directory it keeps (docs/ARCHITECTURE.md).

    babyllama train --run out/runs/NAME --data FILE.bin [FILE.bin ...] [--tokenizer PATH]
                    [--preset P] [--config F.toml] [--field value ...] [--detach] [--workers N]
    babyllama train --run out/runs/NAME --resume [--field value ...]

A run is planned before MindSpore is imported, so mistakes are reported in a second:
configs (preset, then the config file, then `--field value` flags), the token files, the
tokenizer (by default the one the token files' manifest names; the model's vocab_size is
its vocabulary), and for `--resume` the latest complete checkpoint. Then the process
claims the run (status `running`; a detached launch said `starting`), imports MindSpore,
builds the model and the compiled step, and trains:

- every `log_interval` steps a `train` row: step, tokens seen, that step's loss, lr,
  gradient norm, tokens/s and ms per step (averaged over the interval, the first step of a
  process left out because it includes the graph compile), memory, time. Tokens count
  every data-parallel worker.
- every `eval_interval` steps (and at step 0 of a new run, and at the end) an `eval` row
  with the loss over `eval_iters` fixed validation batches (babyllama.evaluate's
  `validation_loss`, which `babyllama eval --split val` shares), and a `sample` row: the
  prompt `sample_prompt` and its greedy continuation of up to `sample_tokens` tokens, by
  the numpy decoder of `babyllama generate` over the model's current weights: the text
  `babyllama generate --temperature 0` gives for a checkpoint of the same step, with no
  graph to compile (the MindSpore decoder's compile took 17.8 s for `tiny` here).
- every `save_interval` steps, at the end, and on a stop: a checkpoint (below).
- a resumed run appends a `resume` row, {"kind": "resume", "step": k, "checkpoint": ...}:
  rows after step k written before it (by a process that was killed) were not kept in
  the checkpoint, and readers may drop them.

Checkpoints, `RUN/checkpoints/step_NNNNNNN/` (written to a temporary folder, every file
fsynced, renamed into place, then `latest` updated and old ones pruned):

    model.safetensors      the weights, under the model's parameter names
    optimizer.safetensors  AdamW moments (exp_avg.*, exp_avg_sq.*), optimizer_step, and
                           the dropout draw counters (*.draws)
    state.json             step, data position (= step), tokens seen, best validation loss,
                           training seconds, the batch sampler's description, the RNG
                           state, the tokenizer's fingerprint, world size
    config.json            the run's configuration when it was saved

Exact resume. Batches are a pure function of (seed, step) (data.BatchSampler), so the data
position is the step. Dropout is the one source of randomness after initialisation, and
MindSpore's CPU dropout keeps its generator inside the compiled kernel where it cannot be
saved; with dropout > 0 the model's dropout layers are swapped for babyllama.dropout's
SeededDropout, whose masks are a hash of a counter stored in the checkpoint. Weights and
moments are stored in float32 exactly, so a run stopped at step k and resumed computes
bit-identical losses from step k+1 on (on one machine and world size). A resume may change
what leaves the model alone (max_steps or epochs to train further, intervals,
keep_checkpoints, eval and sample settings, dropout); the learning rate schedule keeps
the run's resolved lr_decay_iters unless given. A checkpoint whose model shape or
tokenizer differs from the requested run is refused, naming the field.

Signals. SIGTERM or SIGINT: status.json says `stopping` at once; the current step finishes,
a checkpoint is saved, the state becomes `stopped` and the process exits 0; a signal before
the first step ends the run without stepping. A second signal stops at once without saving.
A trainer still busy STOP_DEADLINE_S after the signal (MindSpore holds the main thread in C++
through compiles and steps) is ended by its guard process (babyllama.stop_guard), which
records what was kept. A crash writes `failed` with the error in one line (the traceback
goes to train.log); a full disk ends in one line with the last checkpoint intact. After a
SIGKILL the last complete checkpoint is intact and `--resume` continues from it.

The process claims the run before importing MindSpore, then works in its kernel workspace
(babyllama.kernel_cache) with absolute paths, so nothing lands where it was started.

Data parallel (msrun, or `--workers N`): every rank reads its own share of each step's
global batch, TrainStep averages the gradients, and the ranks agree each step, through one
all-reduce, on the mean loss and on whether any of them was asked to stop, so all stop
after the same step. Rank 0 alone evaluates, samples and writes the run directory. Each
rank prints a digest of its parameters when it ends, so logs show the ranks in sync.

A run started from a shell copies its output into RUN/train.log; a detached one
(`--detach`, the app) has its output sent there by the launcher.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import math
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babyllama import __version__
from babyllama.checkpoint import (
    CHECKPOINT_FORMAT,
    CONFIG_FILE,
    Checkpoint,
    checkpoint_problem,
    load_checkpoint,
    read_checkpoint_state,
    remove_unfinished_checkpoints,
    save_checkpoint,
)
from babyllama.config import (
    PRESETS,
    ModelConfig,
    TrainConfig,
    add_config_arguments,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    model_differences,
    preset,
    resolve_steps,
    summary,
)
from babyllama.data import BatchSampler, TokenDataset, check_token_ids
from babyllama.errors import UserError, describe_failure
from babyllama.evaluate import validation_loss
from babyllama.files import atomic_write_json, out_of_space
from babyllama.runs import (
    ACTIVE_STATES,
    LAUNCH_ID_ENV,
    LineFollower,
    RunDir,
    effective_state,
    launch_detached,
    stop_it_first,
    stop_run,
)
from babyllama.stop_guard import start_guard
from babyllama.tokenizer import Tokenizer, load_tokenizer

# Model fields that may change on resume: they shape no parameter.
RESUMABLE_MODEL_FIELDS = ("dropout",)

FOLLOW_POLL_S = 0.5

# Read once, when MindSpore's import loads libgomp, so set before it. OpenMP threads that
# spin while idle (libgomp's default) take the cores from MindSpore's own kernel threads:
# on 2 shared cores a step at vocabulary 8,000 took 10.3 s spinning, 4.4-6.0 s sleeping.
MINDSPORE_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


# ---------------------------------------------------------------------------------------
# Stopping on signals


class StopRequest:
    """SIGTERM/SIGINT set a flag the loop checks after each step; a second one interrupts at once.

    Installed before MindSpore is imported, so a signal during the import, the compile or a
    step is never lost (MindSpore's import and communication init leave the handlers alone).
    """

    def __init__(self):
        self.signal: signal.Signals | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def signal_name(self) -> str | None:
        return None if self.signal is None else self.signal.name

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            raise KeyboardInterrupt(f"second stop signal ({name})")
        self.signal = signal.Signals(signum)
        print(f"babyllama train: {name}: stopping after this step with a checkpoint "
              "(send it again to stop at once without saving)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Planning: everything that can be checked before MindSpore is imported


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

    @property
    def start_step(self) -> int:
        return self.resume_state["step"] if self.resume_state else 0

    def config(self) -> dict:
        """What config.json holds."""
        return {
            **config_to_dict(self.model, self.train),
            "data": describe_data(self.dataset),
            "tokenizer": self.tokenizer.describe(),
            "world_size": self.world_size,
            "preset": self.preset,
            "babyllama_version": __version__,
        }


def expected_world_size() -> int:
    """Workers in this job as msrun announces them (1 outside msrun)."""
    return int(os.environ.get("MS_WORKER_NUM", "1"))


def expected_rank() -> int:
    """This worker's rank as msrun announces it, for choosing who writes before MindSpore is up.

    msrun's scheduler runs the same command with rank 0 announced; it is no worker: -1.
    """
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        return -1
    return int(os.environ.get("RANK_ID", "0"))


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
        "seq_len": dataset.seq_len,
        "val_fraction": dataset.val_fraction,
        "train_windows": dataset.train_windows,
        "val_windows": dataset.val_windows,
    }


def _given_fields(args: argparse.Namespace, cls) -> dict:
    given = vars(args)
    return {f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given}


def _open_dataset(paths, model: ModelConfig, train: TrainConfig) -> TokenDataset:
    # Absolute: token files are opened when first read, after the trainer moves to its kernel workspace.
    return TokenDataset([Path(p).absolute() for p in paths], seq_len=model.max_seq_len,
                        val_fraction=train.val_fraction)


def _choose_tokenizer(given: Path | None, dataset: TokenDataset) -> Tokenizer:
    if given is not None:
        return load_tokenizer(given)
    path = (dataset.tokenizer or {}).get("path")
    if not path:
        raise UserError(
            f"{dataset.files[0].path}: no manifest names the tokenizer these tokens came from; "
            "give it with --tokenizer PATH"
        )
    try:
        return load_tokenizer(path)
    except UserError as e:
        raise UserError(
            f"{e} (the tokenizer named by the manifest of {dataset.files[0].path}); give it with --tokenizer PATH"
        ) from None


def _check_tokenizer_fits(tokenizer: Tokenizer, dataset: TokenDataset, model: ModelConfig) -> None:
    for token_file in dataset.files:
        sha = (token_file.tokenizer or {}).get("sha256")
        if sha is not None and sha != tokenizer.fingerprint:
            raise UserError(
                f"{token_file.path}: made with tokenizer {token_file.describe_tokenizer()}, not with "
                f"{tokenizer.name} at {tokenizer.path} ({tokenizer.fingerprint[:19]}…); give the tokenizer "
                "the files were prepared with, or re-run `babyllama prepare` with this one"
            )
    if dataset.vocab_size > model.vocab_size:
        raise UserError(
            f"{dataset.files[0].path}: token ids go up to {dataset.vocab_size - 1:,} but the model's "
            f"vocab_size is {model.vocab_size:,}; give a vocab_size of at least {dataset.vocab_size:,}"
        )
    # Every id, not only those of the batches drawn: a damaged file must not train for days first.
    for token_file in dataset.files:
        check_token_ids(token_file, dataset.vocab_size)


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


def plan_new_run(args: argparse.Namespace, world_size: int) -> Plan:
    run = RunDir(args.run)
    if run.config_path.exists() and expected_rank() == 0:
        raise UserError(
            f"{run.config_path} exists: {run.path} already holds a run; continue it with "
            f"`babyllama train --run {run.path} --resume`, or pick another --run"
        )
    if not args.data:
        raise UserError("a new run needs token files: --data FILE.bin [FILE.bin ...] (make them with `babyllama prepare`)")
    refuse_if_taken(run)
    base = preset(args.preset) if args.preset else (ModelConfig(), TrainConfig())
    if args.config is not None:
        base = load_config(args.config, base=base)
    model, train = apply_overrides(*base, args)
    dataset = _open_dataset(args.data, model, train)
    tokenizer = _choose_tokenizer(args.tokenizer, dataset)
    if "vocab_size" not in vars(args):
        model = dataclasses.replace(model, vocab_size=tokenizer.vocab_size)
    elif model.vocab_size < tokenizer.vocab_size:
        raise UserError(
            f"--vocab_size {model.vocab_size:,} is smaller than tokenizer {tokenizer.name}'s vocabulary "
            f"({tokenizer.vocab_size:,}); leave it out to use the tokenizer's"
        )
    _check_tokenizer_fits(tokenizer, dataset, model)
    train = _resolve(model, train, dataset, world_size)
    return Plan(run, model, train, tokenizer, dataset, world_size, args.preset)


def plan_resume(args: argparse.Namespace, world_size: int) -> Plan:
    run = RunDir(args.run)
    for option in ("preset", "config"):
        if getattr(args, option) is not None:
            raise UserError(
                f"--{option} cannot be given with --resume: a run continues with its own configuration "
                f"({run.config_path}); change single fields with --field value"
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
    else:
        notes.append(f"{run.path} has no checkpoint yet: training starts at step 0 with the run's configuration")

    data_paths = args.data or [f["path"] for f in config.get("data", {}).get("files", [])]
    if not data_paths:
        raise UserError(f"{run.config_path}: names no token files; give them with --data")
    dataset = _open_dataset(data_paths, model, train)
    tokenizer_path = args.tokenizer or (config.get("tokenizer") or {}).get("path")
    tokenizer = _choose_tokenizer(Path(tokenizer_path) if tokenizer_path else None, dataset)
    if state is not None:
        saved = (state.get("tokenizer") or {}).get("sha256")
        if saved != tokenizer.fingerprint:
            raise UserError(
                f"{checkpoint.path}: tokenizer fingerprint differs: the checkpoint was trained with "
                f"{(state.get('tokenizer') or {}).get('name')} ({saved}), the requested tokenizer {tokenizer.name} "
                f"at {tokenizer.path} is {tokenizer.fingerprint}; resume with the run's tokenizer"
            )
    _check_tokenizer_fits(tokenizer, dataset, model)
    train = _resolve(model, train, dataset, world_size) if train.max_steps == 0 else train
    if state is not None:
        if state["step"] >= train.max_steps:
            raise UserError(
                f"{run.path} has already trained {state['step']:,} of max_steps {train.max_steps:,} steps; "
                f"to train further resume with a larger --max_steps (or --epochs)"
            )
        sampler = BatchSampler(dataset, train.batch_size, train.seed, 0, world_size, train.grad_accum).describe()
        changed = [f"{k} {state['sampler'].get(k)} -> {v}" for k, v in sampler.items() if state["sampler"].get(k) != v]
        if changed:
            notes.append(
                "the batches from here on differ from those the run would have seen without the "
                f"interruption ({', '.join(changed)})"
            )
    return Plan(run, model, train, tokenizer, dataset, world_size, config.get("preset"), True, checkpoint, state,
                tuple(notes))


def plan_training(args: argparse.Namespace, world_size: int | None = None) -> Plan:
    world_size = expected_world_size() if world_size is None else world_size
    return plan_resume(args, world_size) if args.resume else plan_new_run(args, world_size)


# ---------------------------------------------------------------------------------------
# Samples (called between steps)


class GreedySampler:
    """Greedy continuation of one fixed prompt by the model as it is now.

    Each call copies the weights into generate.NumpyDecoder (parameter names are the
    checkpoint's) and runs generate.generate at temperature 0, so the text is what
    `babyllama generate --temperature 0` gives for a checkpoint saved at the same step.
    """

    def __init__(self, model, tokenizer: Tokenizer, prompt: str, max_new_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.prompt_ids = tokenizer.encode(prompt)
        self.max_new_tokens = max(0, min(max_new_tokens, model.cfg.max_seq_len - len(self.prompt_ids)))

    def __call__(self) -> str | None:
        """The prompt and its continuation; None when the prompt is empty or fills the context."""
        from babyllama.generate import NumpyDecoder, SamplingParams, generate

        if not self.prompt_ids or not self.max_new_tokens:
            return None
        weights = {p.name: p.asnumpy().astype(np.float32, copy=False) for p in self.model.trainable_params()}
        decoder = NumpyDecoder(self.model.cfg, weights)
        result = generate(decoder, self.tokenizer, self.prompt,
                          SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0))
        return self.prompt + result.text


# ---------------------------------------------------------------------------------------
# Checkpoints


def save_run_checkpoint(run: RunDir, trainer, step: int, state: dict, config: dict, keep: int) -> Checkpoint:
    """Save a checkpoint of `trainer` at `step` into the run, publish it as `latest`, prune old ones."""
    # Only this process writes the run: any unfinished folder is a failed or killed earlier write.
    remove_unfinished_checkpoints(run.checkpoints_dir)
    temp = run.checkpoint_temp_path(step)
    try:
        save_checkpoint(temp, trainer, state, config)
        checkpoint = run.publish_checkpoint(temp, step)
    except Exception as e:
        shutil.rmtree(temp, ignore_errors=True)
        if not out_of_space(e):
            raise
        latest = run.latest_checkpoint()
        kept = f"{latest.path.name} is intact; " if latest else ""
        raise UserError(f"{run.checkpoints_dir}: no space left on the device for the checkpoint of step {step:,}; "
                        f"{kept}free some, then `babyllama train --run {run.path} --resume` continues") from None
    run.prune_checkpoints(keep)
    return checkpoint


def dropout_draws(trainer) -> dict[str, int]:
    from babyllama.dropout import DRAWS_SUFFIX

    return {p.name: int(p.asnumpy()) for p in trainer.parameters_for_checkpoint() if p.name.endswith(DRAWS_SUFFIX)}


def parameter_digest(model) -> str:
    """sha256 of the model's weights in name order: equal digests mean identical parameters."""
    digest = hashlib.sha256()
    for param in sorted(model.trainable_params(), key=lambda p: p.name):
        digest.update(param.name.encode())
        digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------------------------
# The loop


class RankAgreement:
    """One all-reduce per step: the mean loss over ranks, and whether any rank must stop."""

    def __init__(self, world_size: int):
        from mindspore import ops

        self.world_size = world_size
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

    def __call__(self, stop: bool, loss: float) -> tuple[bool, float]:
        from mindspore import Tensor

        total = self.all_reduce(Tensor(np.array([1.0 if stop else 0.0, loss], np.float32))).asnumpy()
        return bool(total[0] > 0), float(total[1]) / self.world_size


@dataclass
class Interval:
    """Step timings since the last train row; the compile step is kept apart."""

    steps: int = 0
    seconds: float = 0.0
    compile_seconds: float | None = None

    def add(self, seconds: float, compiled: bool) -> None:
        if compiled:
            self.compile_seconds = seconds
        else:
            self.steps += 1
            self.seconds += seconds

    def mean_seconds(self) -> float | None:
        """Seconds per step, None when the interval holds only the compile step."""
        return self.seconds / self.steps if self.steps else None


def _format_mib(mib: float) -> str:
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


class Training:
    """One process's part of a run, from MindSpore's start to the end of the loop."""

    def __init__(self, plan: Plan, stop: StopRequest):
        self.plan = plan
        self.stop = stop
        # Made before the process moves to its kernel workspace, where relative paths change meaning.
        self.run = RunDir(plan.run.path.absolute())
        self.config = plan.config()
        self.train_cfg = plan.train
        self.dataset = plan.dataset
        self.step = plan.start_step

    def __call__(self) -> int:
        self.main = expected_rank() == 0
        if not self.main:
            start_guard(None, self.stop.signal)
            self._start()
            return self._train()
        if self.plan.resuming:
            atomic_write_json(self.run.config_path, self.config)
        else:
            self.run.create(self.config)
        self.run.mark_running(step=self.plan.start_step, max_steps=self.train_cfg.max_steps,
                              world_size=self.plan.world_size)
        start_guard(self.run, self.stop.signal)
        with self.run.heartbeat():
            try:
                self._start()
                return self._train()
            except KeyboardInterrupt:
                self._record_end("stopped", f"interrupted without a checkpoint at step {self.step}; resume "
                                 "continues from the latest checkpoint")
                raise
            except UserError as e:
                self._record_end("failed", str(e))
                raise
            except BaseException as e:
                said = describe_failure(e)
                if out_of_space(e):
                    error = UserError(f"{said}; free some space, then `babyllama train --run {self.run.path} "
                                      "--resume` continues from the latest checkpoint")
                    self._record_end("failed", str(error))
                    raise error from None
                traceback.print_exc()
                self._record_end("failed", said)
                print(f"babyllama train: failed: {said}", file=sys.stderr, flush=True)
                return 1

    def _record_end(self, state: str, error: str) -> None:
        """The end in status.json, when it can still be written (a full disk may refuse even that)."""
        try:
            self.run.write_status(state=state, error=error, step=self.step)
        except OSError as e:
            print(f"babyllama train: could not record '{state}' in {self.run.status_path}: {e.strerror}",
                  file=sys.stderr, flush=True)

    def _start(self) -> None:
        """MindSpore up (graph mode, kernel workspace, msrun communication), in the kernel workspace."""
        from babyllama.step import setup_runtime

        runtime = setup_runtime(self.train_cfg)
        self.kernels = runtime.kernels
        if self.kernels is not None:
            # MindSpore writes compile leftovers (dsa_transfrom.log, rank_0/om/analyze_fail.ir) into the
            # working directory: they go to the workspace, removed at exit, not where the run was started.
            os.chdir(self.kernels.path)
        if runtime.world_size != self.plan.world_size:
            raise UserError(f"msrun announced {self.plan.world_size} workers but communication reports "
                            f"{runtime.world_size}")
        self.rank, self.world_size = runtime.rank, runtime.world_size

    # -- setup

    def _build(self) -> None:
        from babyllama.dropout import use_seeded_dropout
        from babyllama.model import Transformer
        from babyllama.step import TrainStep

        plan = self.plan
        model = Transformer(plan.model, seed=self.train_cfg.seed)
        if plan.model.dropout > 0:
            use_seeded_dropout(model, self.train_cfg.seed, self.rank)
        self.trainer = TrainStep(plan.model, self.train_cfg, model=model)
        self.sampler = BatchSampler(self.dataset, self.train_cfg.batch_size, self.train_cfg.seed,
                                    self.rank, self.world_size, self.train_cfg.grad_accum)
        self.tokens_per_step = self.sampler.tokens_per_step
        state = plan.resume_state or {}
        self.step = state.get("step", 0)
        self.tokens = state.get("tokens", 0)
        self.best_val_loss = state.get("best_val_loss")
        self.elapsed_before = state.get("elapsed_s", 0.0)
        self.last_saved = self.step if plan.resume_from is not None else None
        if plan.resume_from is not None:
            load_checkpoint(self.trainer, plan.resume_from.path)
        self.agreement = RankAgreement(self.world_size) if self.world_size > 1 else None
        self.greedy = None
        if self.main and self.train_cfg.sample_tokens > 0:
            self.greedy = GreedySampler(model, plan.tokenizer, self.train_cfg.sample_prompt,
                                        self.train_cfg.sample_tokens)

    # -- the loop

    def _train(self) -> int:
        from babyllama.step import lr_at

        self._build()
        cfg = self.train_cfg
        if self.main:
            for note in self.plan.notes:
                print(f"note: {note}", flush=True)
            if self.plan.resume_from is not None:
                self.run.append_metrics({"kind": "resume", "step": self.step,
                                         "checkpoint": self.plan.resume_from.path.name})
                print(f"resuming from {self.plan.resume_from.path} (step {self.step:,}, "
                      f"{self.tokens:,} tokens seen)", flush=True)
        if cfg.eval_only:
            if self.main:
                self._evaluate()
                self.run.write_status(state="finished", step=self.step, error=None)
            return 0
        # A stop asked for while MindSpore started: nothing new to save, so end before stepping.
        # Under msrun the ranks agree on stopping inside the loop, after a step.
        if self.main and self.step == 0 and not self._stop_before_stepping():
            self._evaluate()
        started = time.monotonic()
        interval = Interval()
        first = True
        loss = local_loss = float("nan")
        stop_now = self._stop_before_stepping()
        while self.step < cfg.max_steps and not stop_now:
            lr = lr_at(self.step, cfg)
            step_started = time.perf_counter()
            x, y = self._batch(self.step)
            local_loss, grad_norm = self.trainer.step(x, y, lr)
            if self.agreement is not None:
                stop_now, loss = self.agreement(self.stop.requested, local_loss)
            else:
                stop_now, loss = self.stop.requested, local_loss
            seconds = time.perf_counter() - step_started
            self.step += 1
            self.tokens += self.tokens_per_step
            interval.add(seconds, compiled=first)
            if first and self.kernels is not None:
                self.kernels.publish()
            if first and self.main:
                print(f"first step took {seconds:.1f} s (graph compile included)", flush=True)
            first = False
            if not math.isfinite(loss):
                raise UserError(f"the loss became {loss} at step {self.step}; lower learning_rate or grad_clip "
                                "and resume from the last checkpoint")
            if not self.main:
                continue
            last = self.step == cfg.max_steps
            if self.step % cfg.log_interval == 0 or last or stop_now:
                self._log_train(loss, lr, grad_norm, interval)
                interval = Interval()
            if stop_now:
                self.run.write_status(state="stopping", step=self.step)
            elif self.step % cfg.eval_interval == 0 or last:
                self._evaluate()
            if self.step % cfg.save_interval == 0 or last or stop_now:
                self._save(time.monotonic() - started)
        digest = parameter_digest(self.trainer.model)
        print(f"rank {self.rank}/{self.world_size}: step {self.step}, local loss {local_loss:.6f}, "
              f"parameters {digest}", flush=True)
        if not self.main:
            return 0
        if self.step < cfg.max_steps:
            self.run.write_status(
                state="stopped", step=self.step,
                error=f"stopped on {self.stop.signal_name or 'request'} at step {self.step}; "
                      f"`babyllama train --run {self.run.path} --resume` continues",
            )
            print(f"stopped at step {self.step:,}; resume with: babyllama train --run {self.run.path} --resume",
                  flush=True)
        else:
            self.run.write_status(state="finished", step=self.step, error=None)
            print(f"finished {self.step:,} steps; best validation loss {self.best_val_loss:.4f}"
                  if self.best_val_loss is not None else f"finished {self.step:,} steps", flush=True)
        return 0

    def _stop_before_stepping(self) -> bool:
        return self.stop.requested and self.world_size == 1

    def _batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        micro = [self.sampler.batch(step, m) for m in range(self.train_cfg.grad_accum)]
        return np.stack([x for x, _ in micro]), np.stack([y for _, y in micro])

    def _log_train(self, loss: float, lr: float, grad_norm: float, interval: Interval) -> None:
        from babyllama.devices import memory_row

        seconds = interval.mean_seconds()
        mem = memory_row()
        row = {
            "kind": "train", "step": self.step, "tokens": self.tokens, "loss": loss, "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": None if seconds is None else round(self.tokens_per_step / seconds, 1),
            "step_ms": None if seconds is None else round(seconds * 1000, 1),
            "mem": mem,
        }
        if interval.compile_seconds is not None:
            row["compile_s"] = round(interval.compile_seconds, 2)
        self.run.append_metrics(row)
        self.run.write_status(step=self.step)
        speed = "compiling" if seconds is None else \
            f"{self.tokens_per_step / seconds:,.0f} tok/s  {seconds * 1000:,.0f} ms/step"
        print(f"step {self.step:,}/{self.train_cfg.max_steps:,}  loss {loss:.4f}  lr {lr:.2e}  "
              f"grad {grad_norm:.3f}  {speed}  rss {_format_mib(mem['rss_mb'])}", flush=True)

    def _evaluate(self) -> None:
        cfg = self.train_cfg
        began = time.perf_counter()
        val_loss = validation_loss(self.trainer.eval_loss, self.dataset, cfg.batch_size, cfg.eval_iters).loss
        seconds = time.perf_counter() - began
        best = self.best_val_loss is None or val_loss < self.best_val_loss
        if best:
            self.best_val_loss = val_loss
        self.run.append_metrics({"kind": "eval", "step": self.step, "val_loss": val_loss,
                                 "best_val_loss": self.best_val_loss, "eval_ms": round(seconds * 1000, 1)})
        print(f"step {self.step:,}: validation loss {val_loss:.4f}{' (best)' if best else ''} "
              f"[{seconds:.1f} s]", flush=True)
        if self.greedy is None:
            return
        began = time.perf_counter()
        text = self.greedy()
        if text is None:
            return
        seconds = time.perf_counter() - began
        self.run.append_metrics({"kind": "sample", "step": self.step, "prompt": self.greedy.prompt, "text": text,
                                 "sample_ms": round(seconds * 1000, 1)})
        print(f"step {self.step:,}: sample: {text!r} [{seconds:.1f} s]", flush=True)

    def _save(self, seconds_this_process: float) -> None:
        if self.last_saved == self.step:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "data_position": self.step,
            "tokens": self.tokens,
            "best_val_loss": self.best_val_loss,
            "elapsed_s": round(self.elapsed_before + seconds_this_process, 3),
            "sampler": self.sampler.describe(),
            "rng": {"seed": self.train_cfg.seed, "dropout_draws": dropout_draws(self.trainer)},
            "tokenizer": {"name": self.plan.tokenizer.name, "sha256": self.plan.tokenizer.fingerprint},
            "world_size": self.world_size,
            "saved": time.time(),
        }
        began = time.perf_counter()
        checkpoint = save_run_checkpoint(self.run, self.trainer, self.step, state, self.config,
                                         self.train_cfg.keep_checkpoints)
        self.last_saved = self.step
        print(f"step {self.step:,}: saved {checkpoint.path} [{time.perf_counter() - began:.1f} s]", flush=True)


# ---------------------------------------------------------------------------------------
# Output copied to train.log for runs started from a shell


class _Tee(io.TextIOBase):
    """The terminal's stream, copied to train.log. Either may stop taking text (a reader that went
    away, `babyllama train ... | head`; a full disk) and the other goes on: training never ends
    because its output cannot be shown."""

    def __init__(self, stream, log):
        self.stream = stream
        self.terminal_open = True
        self.log = log

    def write(self, text: str) -> int:
        if self.terminal_open:
            try:
                self.stream.write(text)
                self.stream.flush()
            except OSError:  # the reader went away (EPIPE); train.log keeps everything
                self.terminal_open = False
        if self.log is not None:
            try:
                self.log.write(text)
                self.log.flush()
            except OSError as e:  # a full disk: the terminal still gets the output, and says why the log stops
                self.log = None
                self.write(f"babyllama train: {e.strerror}: stopped copying the output to train.log\n")
        return len(text)

    def flush(self) -> None:
        if self.terminal_open:
            try:
                self.stream.flush()
            except OSError:
                self.terminal_open = False

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return self.stream.encoding


def _copy_output_to_log(run: RunDir) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    log = open(run.log_path, "a", encoding="utf-8")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
    sys.stdout = _Tee(sys.stdout, log)
    sys.stderr = _Tee(sys.stderr, log)


# ---------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a Llama2 on token files, keeping a run directory (config, status, metrics, log, "
        "checkpoints) that `babyllama runs` and the app read. SIGTERM or Ctrl-C saves a checkpoint and stops."
    )
    parser.add_argument("--run", required=True, type=Path, metavar="DIR",
                        help="the run directory, e.g. out/runs/NAME (created for a new run)")
    parser.add_argument("--data", nargs="+", type=Path, metavar="FILE.bin",
                        help="token files or folders of them (from `babyllama prepare`)")
    parser.add_argument("--tokenizer", type=Path, metavar="PATH",
                        help="the tokenizer the token files were made with (default: the one their manifest names)")
    parser.add_argument("--preset", choices=list(PRESETS), help="model size and training settings to start from")
    parser.add_argument("--config", type=Path, metavar="F.toml", help="a config file ([model] and [train] tables)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    parser.add_argument("--detach", action="store_true",
                        help="train in the background (own session, output to RUN/train.log) and return")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="data-parallel workers on this host, through msrun (default 1)")
    add_config_arguments(parser)


def _flag_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The arguments after `--run` that repeat this command in a launched process."""
    out = ["--resume"] if args.resume else []
    if args.data:
        out += ["--data", *(str(p.resolve()) for p in args.data)]
    if args.tokenizer:
        out += ["--tokenizer", str(args.tokenizer.resolve())]
    if args.preset:
        out += ["--preset", args.preset]
    if args.config:
        out += ["--config", str(args.config.resolve())]
    for cls in (ModelConfig, TrainConfig):
        out += [f"--{name}={_flag_value(value)}" for name, value in _given_fields(args, cls).items()]
    return out


def _launch(args: argparse.Namespace, plan: Plan) -> int:
    pid = launch_detached(plan.run, child_arguments(args), workers=args.workers)
    run = plan.run.path
    how = f"msrun with {args.workers} workers" if args.workers > 1 else "a detached process"
    print(f"training {run} in {how} (pid {pid}); output goes to {plan.run.log_path}")
    print(f"  follow:  tail -f {plan.run.log_path}   or   babyllama runs show {run}")
    print(f"  metrics: {plan.run.metrics_path}")
    print(f"  stop:    babyllama runs stop {run}   (saves a checkpoint; resume with "
          f"babyllama train --run {run} --resume)")
    return 0


def _follow(run: RunDir) -> int:
    """Print a launched run's log until it ends; Ctrl-C asks it to stop (a second Ctrl-C leaves it)."""
    log = LineFollower(run.log_path, last_lines=0)
    stopping = False
    while True:
        try:
            for line in log.poll():
                print(line, flush=True)
            state = run.state().state
            if state not in ACTIVE_STATES:
                for line in log.poll():
                    print(line, flush=True)
                return 0 if state in ("finished", "stopped") else 1
            time.sleep(FOLLOW_POLL_S)
        except KeyboardInterrupt:
            if stopping:
                print(f"left {run.path} stopping; `babyllama runs show {run.path}` tells when it has", flush=True)
                return 130
            stopping = True
            print(stop_run(run).message, flush=True)


def run(args: argparse.Namespace) -> int:
    for name, value in MINDSPORE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.detach or args.workers > 1:
        plan = plan_training(args, world_size=args.workers)
        print(summary(plan.model, plan.train, plan.world_size))
        code = _launch(args, plan)
        return code if args.detach else _follow(plan.run)

    stop = StopRequest()
    stop.install()
    main = expected_rank() == 0
    try:
        plan = plan_training(args)
    except UserError as e:
        _record_launch_failure(RunDir(args.run), e, main)
        raise
    if main:
        if LAUNCH_ID_ENV not in os.environ:
            _copy_output_to_log(plan.run)
        print(summary(plan.model, plan.train, plan.world_size), flush=True)
        print(f"data: {plan.dataset.train_windows:,} training and {plan.dataset.val_windows:,} validation windows "
              f"of {plan.model.max_seq_len} tokens from {len(plan.dataset.files)} file(s); tokenizer "
              f"{plan.tokenizer.name} ({plan.tokenizer.kind}, vocab {plan.tokenizer.vocab_size:,})", flush=True)
    return Training(plan, stop)()


def _record_launch_failure(run: RunDir, error: UserError, main: bool) -> None:
    """A launched trainer that cannot start says why in status.json (its launcher said `starting`)."""
    if not main or LAUNCH_ID_ENV not in os.environ:
        return
    status = run.read_status() if run.status_path.exists() else {}
    if status.get("launch_id") == os.environ[LAUNCH_ID_ENV] and status.get("state") == "starting":
        run.write_status(state="failed", error=str(error))
