"""Real run directories and token files for the Train and Monitor screen tests.

`STANDIN_TRAINER` plays `babyllama train` for launch and stop tests: it records the
arguments it was started with, claims the run as a trainer does, logs a train row now and
then, and on SIGTERM saves nothing but records `stopped`, as the real trainer does after its
checkpoint. Given `--slow-stop` it plays a trainer in its first step, which runs no Python
until the step ends: it goes on after the first SIGTERM and stops at the second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from babyllama.files import atomic_write_json
from babyllama.runs import ACTIVE_STATES, RunDir

STANDIN_TRAINER = '''
import json, signal, sys, time
from babyllama.files import atomic_write_json
from babyllama.runs import ACTIVE_STATES, RunDir

run_index = sys.argv.index("--run")
run = RunDir(sys.argv[run_index + 1])
(run.path / "argv.json").write_text(json.dumps(sys.argv[1:]))
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
run.mark_running(step=0, max_steps=1000)
step = 0
while len(stopping) < (2 if "--slow-stop" in sys.argv else 1):
    time.sleep(0.05)
    step += 1
    if step % 10 == 0:
        run.append_metrics({"kind": "train", "step": step, "loss": 5.0, "tokens_per_s": 100.0})
        run.write_status(step=step)
run.write_status(state="stopped", step=step)
'''

# A fixed "now" for snapshots: 2025-03-01 12:00 UTC.
FIXED_NOW = 1740830400.0


def write_standin(folder: Path) -> Path:
    script = folder / "standin_trainer.py"
    script.write_text(STANDIN_TRAINER)
    return script


def train_row(step: int, *, loss: float, time: float, tokens_per_step: int = 2048, lr: float = 1e-3,
              speed: float = 4000.0, rss_mb: float = 900.0, **extra) -> dict:
    """A train row; `extra` adds fields (`bpb`, `flops_per_s`, `mfu`)."""
    return {
        "kind": "train", "step": step, "tokens": step * tokens_per_step, "loss": loss, "lr": lr,
        "grad_norm": 1.0, "tokens_per_s": speed, "step_ms": 500.0,
        "mem": {"rss_mb": rss_mb, "host_used_mb": 6000.0, "host_total_mb": 24000.0, "device": "cpu"},
        "time": time, **extra,
    }


# What the trainer's `baselines` row says of a vocabulary of 8,000 ids (ln 8000) and the sample corpus.
UNIFORM_LOSS = 8.987
UNIGRAM_LOSS = 7.180


def baselines_row(*, time: float, step: int = 0, uniform: float = UNIFORM_LOSS, unigram: float = UNIGRAM_LOSS) -> dict:
    """A `baselines` row as the trainer writes it when it starts."""
    return {"kind": "baselines", "step": step, "uniform_loss": uniform, "unigram_loss": unigram,
            "bytes_per_token": 4.1, "val_bytes_per_token": 4.1, "flops_per_token": 3.2e7, "peak_flops": 2.0e11,
            "peak_source": "measured: 2 cores float32 matmul", "time": time}


def loss_at(step: int) -> float:
    """A loss curve that falls like a real one, with a fixed wobble instead of noise."""
    return 2.0 + 7.0 * 0.5 ** (step / 150) + 0.15 * ((step * 7919) % 13) / 13


def fill_run(run: RunDir, *, steps: int, max_steps: int, started: float, every: int = 10,
             seconds_per_step: float = 0.5, state: str = "finished", error: str | None = None,
             host: str = "trainer-01") -> None:
    """A run directory as a trainer on another host leaves it: config, metrics, status, log."""
    run.create({"model": {"dim": 256}, "train": {"max_steps": max_steps}})
    for step in range(every, steps + 1, every):
        time_of_step = started + step * seconds_per_step
        run.append_metrics(train_row(step, loss=loss_at(step), time=time_of_step, lr=1e-3 * min(1.0, step / 100)))
        if step % 100 == 0:
            run.append_metrics({"kind": "eval", "step": step, "val_loss": loss_at(step) + 0.2, "time": time_of_step})
            run.append_metrics({"kind": "sample", "step": step, "text": f"话说天下大势，分久必合 ({step})",
                                "time": time_of_step})
    status = run.write_status(state=state, step=steps, max_steps=max_steps, started=started, host=host, pid=4242,
                              world_size=1, error=error)
    if state not in ACTIVE_STATES:
        # An ended run was last updated when it ended; a live one must look fresh to read as running.
        atomic_write_json(run.status_path, {**status, "updated": started + steps * seconds_per_step})
    run.log_path.write_text("".join(f"step {s} loss {loss_at(s):.4f}\n" for s in range(every, steps + 1, every)))


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def read_argv(run_path: Path) -> list[str]:
    return json.loads((run_path / "argv.json").read_text())


def write_token_file(data_dir: Path, name: str, *, tokens: int, vocab_size: int, tokenizer_path: str) -> Path:
    """A token file and its manifest as `babyllama prepare` writes them, with fixed contents."""
    import numpy as np

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    (np.arange(tokens, dtype=np.int64) * 7919 % vocab_size).astype(np.uint16).tofile(path)
    manifest = {
        "kind": "babyllama-token-file", "version": 1, "dtype": "uint16", "tokens": tokens, "documents": 120,
        "eos_id": 2, "vocab_size": vocab_size,
        "tokenizer": {"name": "sanguo-bpe", "kind": "sentencepiece", "path": tokenizer_path,
                      "vocab_size": vocab_size, "eos_id": 2, "bos_id": 1, "sha256": "5a" * 32},
        "skipped": {"too_short": 0, "malformed": 0, "examples": []}, "min_tokens": 6, "sources": [],
        "created": "2025-03-01T11:00:00Z",
    }
    path.with_name(name + ".json").write_text(json.dumps(manifest))
    return path
