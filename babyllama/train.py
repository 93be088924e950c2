"""The training loop: one process's part of a planned run (babyllama.planning), from MindSpore's
start to the last checkpoint, with its metrics rows, checkpoints, signals and data-parallel ranks.

What it writes and why resume is exact: docs/ARCHITECTURE.md, "Training".
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from babyllama.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    load_checkpoint,
    load_weights,
    read_checkpoint_state,
    remove_unfinished_checkpoints,
    save_checkpoint,
)
from babyllama.data import BatchSampler
from babyllama.divergence import DivergenceGuard, Verdict, drop_checkpoints_after, reset_to_start, rollback_target
from babyllama.errors import UserError, describe_failure
from babyllama.evaluate import validation_loss
from babyllama.files import atomic_write_json, out_of_space
from babyllama.measures import MINDSPORE_CPU_THREADS, RunMeasures, run_measures
from babyllama.memory_watch import MemoryWatch
from babyllama.msrun_env import expected_rank
from babyllama.overfitting import OverfittingWatch
from babyllama.peers import Peers, lost_reason
from babyllama.planning import Plan
from babyllama.runs import RunDir
from babyllama.stop_guard import start_guard
from babyllama.tokenizer import Tokenizer

if TYPE_CHECKING:
    from babyllama.kernel_cache import KernelWorkspace
    from babyllama.mcq.scoring import TrainingBench
    from babyllama.step import TrainStep

# Read once, when MindSpore's import loads libgomp, so set before it. OpenMP threads that
# spin while idle (libgomp's default) take the cores from MindSpore's own kernel threads:
# on 2 shared cores a step at vocabulary 8,000 took 10.3 s spinning, 4.4-6.0 s sleeping.
MINDSPORE_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
# A run faster than the CPU peak measured at its start measures it again, a few times at most: each
# measure holds up the run for a quarter second, and under load it may not come out higher.
PEAK_REMEASURES = 3


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
# Samples and benchmark scores (called between steps)


def numpy_weights(model) -> dict[str, np.ndarray]:
    """The model's weights now, under the checkpoint's parameter names, for decode.NumpyDecoder."""
    return {p.name: p.asnumpy().astype(np.float32, copy=False) for p in model.trainable_params()}


class GreedySampler:
    """Greedy continuation of one fixed prompt by the model as it is now.

    Each call copies the weights into decode.NumpyDecoder (parameter names are the
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
        from babyllama.decode import NumpyDecoder
        from babyllama.generate import SamplingParams, generate

        if not self.prompt_ids or not self.max_new_tokens:
            return None
        decoder = NumpyDecoder(self.model.cfg, numpy_weights(self.model))
        result = generate(decoder, self.tokenizer, self.prompt,
                          SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0))
        return self.prompt + result.text


class ChatSampler:
    """A fine-tuning run's sample: the model's greedy answer, as it is now, to one fixed question asked
    through the tokenizer's chat template (`template.prompt`), ended by one of `template.stop_ids`."""

    def __init__(self, model, tokenizer: Tokenizer, question: str, max_new_tokens: int):
        from babyllama.chat_template import template_for

        template = template_for(tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = question
        self.prompt_ids = template.prompt([{"role": "user", "content": question}])
        self.stop_ids = template.stop_ids
        self.max_new_tokens = max(0, min(max_new_tokens, model.cfg.max_seq_len - len(self.prompt_ids)))

    def __call__(self) -> str | None:
        """The answer; None when the question fills the context."""
        from babyllama.decode import NumpyDecoder
        from babyllama.generate import SamplingParams, generate

        if not self.max_new_tokens:
            return None
        decoder = NumpyDecoder(self.model.cfg, numpy_weights(self.model))
        return generate(decoder, self.tokenizer, self.prompt_ids,
                        SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0),
                        stop_ids=self.stop_ids).text


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
    """One all-reduce per step: whether any rank must stop (the step's loss is already global), and each
    rank's memory (its process with children, its host's used and total, MiB), for the train rows."""

    def __init__(self, rank: int, world_size: int):
        from mindspore import ops

        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)
        self.rank = rank
        self.world_size = world_size
        self.memory = np.zeros((world_size, 3), np.float32)

    def __call__(self, stop: bool) -> bool:
        from mindspore import Tensor

        from babyllama.devices import host_memory_mb, process_rss_mb

        rows = np.zeros((self.world_size, 4), np.float32)
        rows[self.rank] = [1.0 if stop else 0.0, process_rss_mb(), *host_memory_mb()]
        summed = self.all_reduce(Tensor(rows)).asnumpy()
        self.memory = summed[:, 1:]
        return bool((summed[:, 0] > 0).any())

    def hosts_memory(self, peers: Peers) -> list[dict]:
        """The `mem` field's `hosts`: each host's ranks' resident memory and the host's own use, as last agreed."""
        hosts: dict[str, dict] = {}
        for peer in peers.all:
            rss, used, total = (round(float(v), 1) for v in self.memory[peer.rank])
            entry = hosts.setdefault(peer.host, {"host": peer.host, "rss_mb": 0.0, "host_used_mb": used,
                                                 "host_total_mb": total})
            entry["rss_mb"] = round(entry["rss_mb"] + rss, 1)
        return list(hosts.values())


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
        self.main = expected_rank() == 0
        state = plan.resume_state or {}
        self.step = state.get("step", 0)
        self.data_position = state.get("data_position", self.step)
        self.tokens = state.get("tokens", 0)
        self.best_val_loss = state.get("best_val_loss")
        self.elapsed_before = state.get("elapsed_s", 0.0)
        self.last_saved = self.step if plan.resume_from is not None else None
        self.overfitting = OverfittingWatch.from_state(plan.train.overfit_evals, state.get("overfitting"))
        # Rank 0 watches the memory of every process of the run on this host.
        self.memory = MemoryWatch(plan.train, self.run, lambda: self.step) if self.main else None
        # Set once MindSpore is up: by _start (kernels, rank, world size), then by _build.
        self.kernels: KernelWorkspace | None = None
        self.rank = 0
        self.world_size = plan.world_size
        self.trainer: TrainStep | None = None
        self.batch_sampler: BatchSampler | None = None
        self.tokens_per_step = 0
        self.agreement: RankAgreement | None = None
        self.text_sampler: GreedySampler | ChatSampler | None = None
        self.bench: TrainingBench | None = None
        # MindSpore's device and the dtype the run computes in (set by _start); rank 0's baselines and the
        # constants of its train and eval rows' measures (set by _baselines).
        self.device = self.dtype = ""
        self.measures: RunMeasures | None = None
        self.peak_remeasures = 0  # times the CPU's peak was measured again (at most PEAK_REMEASURES)
        self.guard: DivergenceGuard | None = None
        self.peers: Peers | None = None  # every rank and its host, under msrun (set by _start)

    def __call__(self) -> int:
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
        with self.run.heartbeat(), self.memory.watching():
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
                lost = self._lost_peers(e)
                if lost:
                    said = self._lost_message(lost)
                    self._record_end("failed", said, hosts=self.peers.hosts("failed", lost))
                    print(f"babyllama train: failed: {said}", file=sys.stderr, flush=True)
                    return 1
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

    def _lost_peers(self, error: BaseException) -> list:
        """The other ranks that no longer answer, after a failure that may be theirs."""
        if self.peers is None or isinstance(error, (KeyboardInterrupt, UserError)):
            return []
        return self.peers.unresponsive()

    def _lost_message(self, lost: list) -> str:
        latest = self.run.latest_checkpoint()
        kept = f"{latest.path.name} is kept" if latest else "no checkpoint was saved"
        return (f"{lost_reason(lost, self.step)}; {kept}: start every host's command again with --resume "
                f"(or `babyllama train --run {self.run.path} --resume --workers {self.world_size}` on one host)")

    def _hosts(self, state: str) -> dict:
        """status.json's `hosts` field for a run under msrun, else nothing."""
        return {} if self.peers is None else {"hosts": self.peers.hosts(state)}

    def _record_end(self, state: str, error: str, **fields) -> None:
        """The end in status.json, when it can still be written (a full disk may refuse even that)."""
        try:
            self.run.write_status(state=state, error=error, step=self.step, **fields)
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
        self.device, self.dtype = runtime.device, runtime.dtype
        if self.world_size > 1:
            from mindspore import ops

            self.peers = Peers(self.rank, self.world_size)
            self.peers.exchange(ops.AllReduce(ops.ReduceOp.SUM))
            if self.main:
                self.run.write_status(**self._hosts("running"))

    # -- setup

    def _build(self) -> None:
        from babyllama.dropout import use_seeded_dropout
        from babyllama.model import Transformer
        from babyllama.step import TrainStep

        plan = self.plan
        model = Transformer(plan.model, seed=self.train_cfg.seed)
        if plan.model.dropout > 0:
            use_seeded_dropout(model, self.train_cfg.seed, self.rank)
        sft = self.dataset.sft
        self.trainer = TrainStep(plan.model, self.train_cfg, model=model, masked=sft)
        self.batch_sampler = BatchSampler(self.dataset, self.train_cfg.batch_size, self.train_cfg.seed,
                                          self.rank, self.world_size, self.train_cfg.grad_accum)
        self.tokens_per_step = self.batch_sampler.tokens_per_step
        if plan.resume_from is not None:
            # The run's absolute path: a relative --run means nothing in the kernel workspace.
            load_checkpoint(self.trainer, self.run.checkpoint_path(plan.resume_from.step))
        else:
            self._load_parent()
        if self.world_size > 1:
            self.agreement = RankAgreement(self.rank, self.world_size)
        self.guard = DivergenceGuard(self.train_cfg, plan.model.vocab_size, (plan.resume_state or {}).get("divergence"),
                                     loss_scaling=self.trainer.update.loss_scaling)
        if self.main and self.train_cfg.sample_tokens > 0 and sft:
            self.text_sampler = ChatSampler(model, plan.tokenizer, self.train_cfg.sample_question,
                                            self.train_cfg.sample_tokens)
        elif self.main and self.train_cfg.sample_tokens > 0:
            self.text_sampler = GreedySampler(model, plan.tokenizer, self.train_cfg.sample_prompt,
                                              self.train_cfg.sample_tokens)
        if self.main and self.train_cfg.bench_interval > 0:
            from babyllama.mcq.scoring import TrainingBench

            self.bench = TrainingBench(plan.tokenizer, self.train_cfg)

    def _load_parent(self) -> None:
        """A fine-tuning run's weights at step 0: its parent checkpoint's."""
        if self.plan.init_from is not None:
            load_weights(self.trainer, Path(self.plan.init_from["checkpoint"]))

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
            self._baselines()
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
        local_loss = float("nan")
        stop_now = self._stop_before_stepping()
        while self.step < cfg.max_steps and not stop_now:
            lr = lr_at(self.step, cfg) * self.guard.lr_scale
            step_started = time.perf_counter()
            position = self.guard.position(self.data_position)
            x, y = self._batch(position)
            result = self.trainer.step(x, y, lr, self.guard.ceiling())
            loss, grad_norm, local_loss = result.loss, result.grad_norm, result.local_loss
            stop_asked = self.stop.requested or (self.main and self.memory.stop_after_step())
            stop_now = self.agreement(stop_asked) if self.agreement is not None else stop_asked
            seconds = time.perf_counter() - step_started
            self.step += 1
            self.data_position = position + 1
            self.tokens += self.tokens_per_step
            interval.add(seconds, compiled=first)
            if first and self.kernels is not None:
                self.kernels.publish()
            if first and self.main:
                print(f"first step took {seconds:.1f} s (graph compile included)", flush=True)
            first = False
            verdict = self.guard.judge(self.step, result, position)
            last = self.step == cfg.max_steps
            if self.main and (self.step % cfg.log_interval == 0 or last or stop_now or verdict.alerts):
                self._log_train(loss, lr, grad_norm, interval, skipped=not result.applied)
                interval = Interval()
            if verdict.alerts or verdict.rollback_from is not None:
                self._follow(verdict)
                if verdict.rollback_from is not None:
                    if self.main:
                        # The checkpoint rolled back to is saved again with the guard's new state
                        # (rollbacks, the lowered learning rate, the batches to skip): resumed from,
                        # after this stop or a crash later, it meets the same events as this run.
                        if stop_now:
                            self.run.mark_stopping(step=self.step)
                        self.last_saved = None
                        self._save(time.monotonic() - started)
                    continue
            if not self.main:
                continue
            if result.applied:
                self.overfitting.add_train(loss)
            if stop_now:
                self.run.mark_stopping(step=self.step)
            elif self.step % cfg.eval_interval == 0 or last:
                self._evaluate()
            if self.bench is not None and not stop_now and (self.step % cfg.bench_interval == 0 or last):
                self._bench()
            if self.step % cfg.save_interval == 0 or last or stop_now:
                self._save(time.monotonic() - started)
        digest = parameter_digest(self.trainer.model)
        print(f"rank {self.rank}/{self.world_size}: step {self.step}, local loss {local_loss:.6f}, "
              f"parameters {digest}", flush=True)
        if not self.main:
            return 0
        if self.step < cfg.max_steps and self.memory.over is not None:
            return self.memory.record_stop()
        if self.step < cfg.max_steps:
            self.run.write_status(
                state="stopped", step=self.step, **self._hosts("stopped"),
                error=f"stopped on {self.stop.signal_name or 'request'} at step {self.step}; "
                      f"`babyllama train --run {self.run.path} --resume` continues",
            )
            print(f"stopped at step {self.step:,}; resume with: babyllama train --run {self.run.path} --resume",
                  flush=True)
        else:
            self.run.write_status(state="finished", step=self.step, error=None, **self._hosts("finished"))
            print(f"finished {self.step:,} steps; best validation loss {self.best_val_loss:.4f}"
                  if self.best_val_loss is not None else f"finished {self.step:,} steps", flush=True)
        return 0

    def _stop_before_stepping(self) -> bool:
        return self.stop.requested and self.world_size == 1

    def _batch(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        micro = [self.batch_sampler.batch(position, m) for m in range(self.train_cfg.grad_accum)]
        return np.stack([x for x, _ in micro]), np.stack([y for _, y in micro])

    def _baselines(self) -> None:
        cfg = self.train_cfg
        self.measures = run_measures(
            self.run.path, self.plan.model, self.dataset, self.plan.tokenizer, batch_size=cfg.batch_size,
            eval_iters=cfg.eval_iters, device=self.device, dtype=self.dtype, world_size=self.world_size,
            cpu_threads=cfg.threads or MINDSPORE_CPU_THREADS)
        self.run.append_metrics(self.measures.row(self.step))
        print(self.measures.describe(), flush=True)

    def _follow(self, verdict: Verdict) -> None:
        """Record a bad step's alerts; roll back, or end the run as failed, as the verdict says."""
        if self.main:
            for alert in verdict.alerts:
                self.run.append_alert(step=self.step, alert=alert.alert, action=alert.action, message=alert.message,
                                      **alert.fields)
        if verdict.stop is not None:
            raise UserError(verdict.stop)
        if verdict.rollback_from is None:
            return
        decided_at = self.step
        target = rollback_target(self.run.checkpoints_dir, verdict.rollback_from)
        if target is None:
            reset_to_start(self.trainer, self.train_cfg.seed)
            self._load_parent()
            state = {}
        else:
            load_checkpoint(self.trainer, target.path)
            state, _ = read_checkpoint_state(target.path)
        self.step = state.get("step", 0)
        self.data_position = state.get("data_position", self.step)
        self.tokens = state.get("tokens", 0)
        self.best_val_loss = state.get("best_val_loss")
        self.overfitting = OverfittingWatch.from_state(self.train_cfg.overfit_evals, state.get("overfitting"))
        alert = self.guard.rolled_back(decided_at, verdict, target, state.get("divergence"))
        if not self.main:
            return
        drop_checkpoints_after(self.run.checkpoints_dir, target)
        self.run.append_alert(step=decided_at, alert=alert.alert, action=alert.action, message=alert.message,
                              **alert.fields)
        self.run.append_metrics({"kind": "resume", "step": self.step,
                                 "checkpoint": None if target is None else target.path.name})
        self.run.write_status(step=self.step)

    def _log_train(self, loss: float, lr: float, grad_norm: float, interval: Interval, skipped: bool = False) -> None:
        from babyllama.devices import memory_row

        seconds = interval.mean_seconds()
        mem = memory_row()
        if self.agreement is not None and self.peers is not None:
            mem["hosts"] = self.agreement.hosts_memory(self.peers)
        tokens_per_s = None if seconds is None else self.tokens_per_step / seconds
        row = {
            "kind": "train", "step": self.step, "tokens": self.tokens,
            "loss": loss if math.isfinite(loss) else None, "lr": lr,
            "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
            "tokens_per_s": None if seconds is None else round(tokens_per_s, 1),
            "step_ms": None if seconds is None else round(seconds * 1000, 1),
            "mem": mem,
            **self.measures.train_fields(loss, tokens_per_s),
        }
        if row["bpb"] is not None and not math.isfinite(row["bpb"]):
            row["bpb"] = None
        if interval.compile_seconds is not None:
            row["compile_s"] = round(interval.compile_seconds, 2)
        if skipped:
            row["skipped"] = True
        if row["mfu"] is not None and row["mfu"] > 1 and self.peak_remeasures < PEAK_REMEASURES:
            # Faster than the CPU's peak measured at the start: other programs slowed that measure.
            self.peak_remeasures += 1
            better = self.measures.peak_remeasured(row["flops_per_s"])
            if better is not None:
                self.measures = better
                self.run.append_metrics(better.row(self.step))
                print(better.describe().splitlines()[-1], flush=True)
                row.update(mfu=better.train_fields(loss, tokens_per_s)["mfu"])
        self.run.append_metrics(row)
        self.run.write_status(step=self.step)
        speed = "compiling" if seconds is None else \
            f"{self.tokens_per_step / seconds:,.0f} tok/s  {seconds * 1000:,.0f} ms/step"
        if row["mfu"] is not None:
            speed += f"  mfu {row['mfu']:.1%}"
        print(f"step {self.step:,}/{self.train_cfg.max_steps:,}  loss {loss:.4f}  lr {lr:.2e}  "
              f"grad {grad_norm:.3f}  {speed}  rss {_format_mib(mem['rss_mb'])}", flush=True)

    def _evaluate(self) -> None:
        """The validation loss (none without held-out windows: val_fraction 0), then the sample."""
        if self.dataset.val_windows:
            self._validate()
        self._sample()

    def _validate(self) -> None:
        cfg = self.train_cfg
        began = time.perf_counter()
        val_loss = validation_loss(self.trainer.eval_loss, self.dataset, cfg.batch_size, cfg.eval_iters).loss
        seconds = time.perf_counter() - began
        best = self.best_val_loss is None or val_loss < self.best_val_loss
        if best:
            self.best_val_loss = val_loss
        val_bpb = self.measures.val_bpb(val_loss)
        self.run.append_metrics({"kind": "eval", "step": self.step, "val_loss": val_loss,
                                 "best_val_loss": self.best_val_loss, "eval_ms": round(seconds * 1000, 1),
                                 "val_bpb": val_bpb})
        bpb = "" if val_bpb is None else f", {val_bpb:.4f} bits per byte"
        print(f"step {self.step:,}: validation loss {val_loss:.4f}{' (best)' if best else ''}{bpb} "
              f"[{seconds:.1f} s]", flush=True)
        epochs = self.tokens / (self.dataset.train_windows * self.dataset.seq_len)
        alert = self.overfitting.add_eval(self.step, val_loss, epochs)
        if alert is not None:
            self.run.append_alert(step=self.step, alert="overfitting", action="none", **alert)

    def _sample(self) -> None:
        if self.text_sampler is None:
            return
        began = time.perf_counter()
        text = self.text_sampler()
        if text is None:
            return
        seconds = time.perf_counter() - began
        chat = isinstance(self.text_sampler, ChatSampler)
        self.run.append_metrics({"kind": "sample", "step": self.step, "prompt": self.text_sampler.prompt, "text": text,
                                 "sample_ms": round(seconds * 1000, 1), **({"chat": True} if chat else {})})
        asked = f"{self.text_sampler.prompt!r} -> " if chat else ""
        print(f"step {self.step:,}: sample: {asked}{text!r} [{seconds:.1f} s]", flush=True)

    def _bench(self) -> None:
        from babyllama.decode import NumpyDecoder

        row = self.bench(self.step, NumpyDecoder(self.plan.model, numpy_weights(self.trainer.model)))
        self.run.append_metrics(row)
        print(f"step {self.step:,}: {row['task']} accuracy {row['accuracy']:.1%} over {row['questions']:,} questions "
              f"(guessing {row['chance']:.0%}) [{row['bench_ms'] / 1000:.1f} s]", flush=True)

    def _save(self, seconds_this_process: float) -> None:
        if self.last_saved == self.step:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "data_position": self.data_position,
            "tokens": self.tokens,
            "best_val_loss": self.best_val_loss,
            "overfitting": self.overfitting.state(),
            "elapsed_s": round(self.elapsed_before + seconds_this_process, 3),
            "sampler": self.batch_sampler.describe(),
            "rng": {"seed": self.train_cfg.seed, "dropout_draws": dropout_draws(self.trainer)},
            "divergence": self.guard.state(),
            "tokenizer": {"name": self.plan.tokenizer.name, "sha256": self.plan.tokenizer.fingerprint},
            "world_size": self.world_size,
            "saved": time.time(),
        }
        began = time.perf_counter()
        checkpoint = save_run_checkpoint(self.run, self.trainer, self.step, state, self.config,
                                         self.train_cfg.keep_checkpoints)
        self.last_saved = self.step
        print(f"step {self.step:,}: saved {checkpoint.path} [{time.perf_counter() - began:.1f} s]", flush=True)
