"""The `babyllama` entry point: output into a pipe whose reader has gone, through real
subprocess pipelines (`babyllama runs | head -n 1`, `babyllama --help | true`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from test_generate import TINY, write_checkpoint

WAIT_S = 120
# What a shell reports for a process that SIGPIPE ended, and what babyllama exits with.
PIPE_CLOSED = 128 + signal.SIGPIPE


def environment() -> dict:
    """This environment with Python's stdout buffered, as users have it: short output then
    meets the closed pipe only when stdout is flushed at the end."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def into_head(*args: str, cwd) -> tuple[int, str, str]:
    """`babyllama ARGS | head -n 1`: babyllama's exit status and stderr, and head's output.

    The output must be well over the pipe's capacity (64 KiB), so babyllama is still writing
    when head exits."""
    writer = subprocess.Popen([sys.executable, "-m", "babyllama", *args], cwd=cwd, env=environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-n", "1"], stdin=writer.stdout, stdout=subprocess.PIPE)
    writer.stdout.close()  # head holds the only reading end now
    first_line = head.communicate(timeout=WAIT_S)[0].decode()
    stderr = writer.stderr.read().decode()
    writer.stderr.close()
    return writer.wait(timeout=WAIT_S), stderr, first_line


def into_reader_that_is_gone(*args: str) -> tuple[int, str]:
    """`babyllama ARGS | true`, with `true` sure to have exited before babyllama writes:
    babyllama's exit status and stderr."""
    read_end, write_end = os.pipe()
    subprocess.run(["true"], stdin=read_end, check=True)
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "babyllama", *args], env=environment(),
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=WAIT_S)
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def test_runs_table_into_a_reader_that_stops_after_one_line(tmp_path):
    root = tmp_path / "out" / "runs"
    for i in range(600):  # about 150 KiB of table
        run = root / f"run-{i:03d}-{'x' * 200}"
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
    status, stderr, first_line = into_head("runs", cwd=tmp_path)
    assert first_line.split() == ["NAME", "STATE", "STEP", "LOSS", "VAL", "BPB", "TOK/S", "MFU", "AGE", "NOTE"]
    assert stderr == ""
    assert status == PIPE_CLOSED


def test_runs_show_into_a_reader_that_stops_after_one_line(tmp_path):
    run = tmp_path / "out" / "runs" / "chatty"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "train.log").write_text("".join(f"step {i}: a line of the trainer's log\n" for i in range(6000)))
    status, stderr, first_line = into_head("runs", "show", "chatty", "--log-lines", "6000", cwd=tmp_path)
    assert first_line.startswith("run         chatty")
    assert stderr == ""
    assert status == PIPE_CLOSED


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"]], ids=["help", "generate-help"])
def test_help_into_a_reader_that_is_gone(args):
    status, stderr = into_reader_that_is_gone(*args)
    assert stderr == ""
    assert status == PIPE_CLOSED


def test_generated_text_into_a_reader_that_is_gone(tmp_path, sp_tokenizer):
    checkpoint = tmp_path / "step_0000001"
    write_checkpoint(checkpoint, TINY, sp_tokenizer)
    status, stderr = into_reader_that_is_gone("generate", "--ckpt", str(checkpoint), "--prompt", "话说",
                                              "--max-new-tokens", "8")
    assert "Traceback" not in stderr and "Broken pipe" not in stderr, stderr
    assert stderr.startswith(f"babyllama generate: {checkpoint}")
    assert status == PIPE_CLOSED


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, sample_jsonl, sp_tokenizer_dir):
    from babyllama.prepare import prepare

    out = tmp_path_factory.mktemp("tokens") / "sanguo.bin"
    prepare([sample_jsonl], "c4", sp_tokenizer_dir, out, workers=1)
    return out


@pytest.mark.parametrize("how", [(), ("--detach",), ("--workers", "2")], ids=["here", "detached", "msrun"])
def test_train_refuses_a_run_that_cannot_fit_in_one_line_and_leaves_no_run(tmp_path, token_file, how):
    # The 1b preset at batch 64 needs terabytes, more than any host (or device) has free.
    run = tmp_path / "runs" / "huge"
    done = subprocess.run([sys.executable, "-m", "babyllama", "train", "--run", str(run), "--data", str(token_file),
                           "--preset", "1b", "--batch_size", "64", *how],
                          cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("babyllama train: error: the run needs ≈"), done.stderr
    assert "GiB free: choose a smaller preset" in done.stderr
    assert done.stderr.endswith("; or start it anyway with --ignore-memory-check\n")
    assert not (tmp_path / "runs").exists()
