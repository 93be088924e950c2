"""`babyllama train`: the command line, planning then training here or in a launched process.

See docs/ARCHITECTURE.md, "Training".
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

from babyllama.config import PRESETS, ModelConfig, TrainConfig, add_config_arguments, given_fields, summary
from babyllama.devices import read_accelerators
from babyllama.errors import UserError
from babyllama.msrun_env import expected_rank, is_scheduler, serve_as_scheduler, stop_with_launcher
from babyllama.planning import Plan, memory_fit, plan_training, train_arguments
from babyllama.runs import ACTIVE_STATES, LAUNCH_ID_ENV, LineFollower, RunDir, launch_detached, stop_run
from babyllama.train import MINDSPORE_ENVIRONMENT, StopRequest, Training

FOLLOW_POLL_S = 0.5


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
        # The log first: when it cannot take `text` (a full disk), the note saying so reaches the
        # terminal before `text`, so a final error line stays the last line.
        if self.log is not None:
            try:
                self.log.write(text)
                self.log.flush()
            except OSError as e:  # the terminal still gets the output, and says why the log stops
                self.log = None
                self.write(f"babyllama train: {e.strerror}: stopped copying the output to train.log\n")
        if self.terminal_open:
            try:
                self.stream.write(text)
                self.stream.flush()
            except OSError:  # the reader went away (EPIPE); train.log keeps everything
                self.terminal_open = False
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
    parser.add_argument("--init-from", type=Path, metavar="RUN_OR_CHECKPOINT",
                        help="fine-tune: start a new run from this checkpoint's weights (a run directory: its "
                        "latest), with a fresh optimizer and schedule; the model's shape and tokenizer are the "
                        "parent's, and its training settings (not its steps, warm-up and decay) unless --preset "
                        "or --config give others")
    parser.add_argument("--detach", action="store_true",
                        help="train in the background (own session, output to RUN/train.log) and return")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="data-parallel workers on this host, through msrun (default 1)")
    parser.add_argument("--ignore-memory-check", action="store_true",
                        help="start even when the memory estimate exceeds what the host (or a device) has free")
    add_config_arguments(parser)


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The arguments after `--run` that repeat this command in a launched process."""
    fields = {**given_fields(args, ModelConfig), **given_fields(args, TrainConfig)}
    return train_arguments(resume=args.resume, data=args.data or (), tokenizer=args.tokenizer, preset=args.preset,
                           config=args.config, fields=fields, init_from=args.init_from)


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
    if is_scheduler():
        return serve_as_scheduler()
    for name, value in MINDSPORE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.detach or args.workers > 1:
        plan = plan_training(args, world_size=args.workers)
        refuse_unless_it_fits(args, plan)
        print(summary(plan.model, plan.train, plan.world_size))
        code = _launch(args, plan)
        return code if args.detach else _follow(plan.run)

    stop = StopRequest()
    stop.install()
    stop_with_launcher()
    main = expected_rank() == 0
    try:
        plan = plan_training(args)
    except UserError as e:
        _record_launch_failure(RunDir(args.run), e, main)
        raise
    if main:
        if LAUNCH_ID_ENV not in os.environ:
            refuse_unless_it_fits(args, plan)
            _copy_output_to_log(plan.run)
        print(summary(plan.model, plan.train, plan.world_size), flush=True)
        print(f"data: {plan.dataset.train_windows:,} training and {plan.dataset.val_windows:,} validation windows "
              f"of {plan.model.max_seq_len} tokens from {len(plan.dataset.files)} file(s); tokenizer "
              f"{plan.tokenizer.name} ({plan.tokenizer.kind}, vocab {plan.tokenizer.vocab_size:,})", flush=True)
        if plan.init_from is not None:
            step = plan.init_from["step"]
            at = "a Hugging Face folder" if step is None else f"step {step:,}"
            if plan.dataset.sft:
                print(f"fine-tuning from {plan.init_from['checkpoint']} ({at}); the loss counts the trained (answer) "
                      "tokens only", flush=True)
            else:
                print(f"continuing pretraining from {plan.init_from['checkpoint']} ({at}) with a fresh schedule; "
                      "the loss counts every token", flush=True)
    return Training(plan, stop)()


def refuse_unless_it_fits(args: argparse.Namespace, plan: Plan) -> None:
    """A run whose memory estimate exceeds what is free is refused before anything is written,
    unless --ignore-memory-check. Judged where the user asked: a launched trainer (the app's, or
    --detach's) does not judge again, its launcher did."""
    if args.ignore_memory_check:
        return
    fit = memory_fit(plan.model, plan.train, plan.world_size, accelerators=read_accelerators())
    if not fit.fits:
        raise UserError(f"{fit.problem()}; or start it anyway with --ignore-memory-check")


def _record_launch_failure(run: RunDir, error: UserError, main: bool) -> None:
    """A launched trainer that cannot start says why in status.json (its launcher said `starting`)."""
    if not main or LAUNCH_ID_ENV not in os.environ:
        return
    status = run.read_status() if run.status_path.exists() else {}
    if status.get("launch_id") == os.environ[LAUNCH_ID_ENV] and status.get("state") == "starting":
        run.write_status(state="failed", error=str(error))
