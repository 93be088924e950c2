"""Detached jobs (`babyllama.runs.jobs`): real runners and real `babyllama export`/`eval` processes
on checkpoints written with numpy, started, followed, failing and killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from numpy_checkpoints import SMALL, write_run_with_checkpoint

from babyllama.data import MANIFEST_KIND, MANIFEST_VERSION
from babyllama.errors import UserError
from babyllama.files import temp_path
from babyllama.runs import ACTIVE_STATES
from babyllama.runs.jobs import cancel_job, launch_job, list_jobs, read_job

WAIT_S = 60.0
# Enough windows that a job scoring all of them is still at work when a test stops it.
LONG_TOKENS = 4_000_000


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return value


def ended(folder: Path):
    return wait_for(lambda: (job := read_job(folder)).state not in ACTIVE_STATES and job, "the job to end")


def token_file(path: Path, tokens: int) -> Path:
    (np.arange(tokens, dtype=np.int64) * 7919 % SMALL.vocab_size).astype(np.uint16).tofile(path)
    manifest = {"kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "dtype": "uint16", "tokens": tokens,
                "documents": 1, "eos_id": 2, "vocab_size": SMALL.vocab_size}
    path.with_name(path.name + ".json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def run(tmp_path) -> tuple[Path, Path]:
    """(run directory, its checkpoint at step 20)."""
    path = tmp_path / "out" / "runs" / "small"
    return path, write_run_with_checkpoint(path, 20)


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_job_outlives_whoever_started_it_and_records_its_result(run, tmp_path):
    run_path, checkpoint = run
    out = tmp_path / "out" / "exports" / "small-20-hf"
    starter = (
        "import sys; from babyllama.runs.jobs import launch_job;"
        "job = launch_job(sys.argv[1], 'export', ['export', '--ckpt', sys.argv[2], '--format', 'hf', '--out', "
        "sys.argv[3]], output=sys.argv[3], details={'step': 20});"
        "print(job.path, flush=True); import time; time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter, str(run_path), str(checkpoint), str(out)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    folder = Path(parent.stdout.readline().strip())
    # The starter and everything in its session die at once, as an app's terminal closing would end them.
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    job = ended(folder)
    assert (job.state, job.reason, job.kind, job.details) == ("finished", None, "export", {"step": 20})
    assert job.result["out"] == str(out) and job.result["parameters"] > 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert job.progress["event"] == "stage", "the last stage it reported"
    log = job.log_path.read_text()
    assert "launching:" in log and "--progress jsonl" in log and '"event": "done"' in log
    assert [j.path for j in list_jobs(run_path)] == [folder]


def test_an_eval_job_reports_windows_then_the_loss(run, tmp_path):
    run_path, checkpoint = run
    data = token_file(tmp_path / "held_out.bin", 5000)
    job = launch_job(run_path, "eval", ["eval", "--ckpt", str(checkpoint), "--data", str(data), "--batches", "3"])
    assert job.state in ACTIVE_STATES
    job = ended(job.path)
    assert job.state == "finished", job.reason
    assert job.progress == {**job.progress, "event": "progress", "windows": 24, "total_windows": 24}
    assert (job.result["windows"], job.result["tokens"]) == (24, 24 * SMALL.max_seq_len)
    assert job.result["perplexity"] == pytest.approx(np.exp(job.result["loss"]))


def test_jobs_are_listed_newest_first_with_a_folder_each(run, tmp_path):
    run_path, checkpoint = run
    data = token_file(tmp_path / "held_out.bin", 5000)
    first = launch_job(run_path, "eval", ["eval", "--ckpt", str(checkpoint), "--data", str(data), "--batches", "1"])
    second = launch_job(run_path, "eval", ["eval", "--ckpt", str(checkpoint), "--data", str(data), "--batches", "1"])
    assert first.path != second.path and first.path.parent == second.path.parent == run_path / "jobs"
    assert [job.path for job in list_jobs(run_path)] == [second.path, first.path]
    assert {ended(j.path).state for j in (first, second)} == {"finished"}


def test_an_export_onto_a_folder_that_holds_files_fails_and_leaves_it_alone(run, tmp_path):
    run_path, checkpoint = run
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    job = launch_job(run_path, "export", ["export", "--ckpt", str(checkpoint), "--format", "hf", "--out", str(out)],
                     output=str(out))
    job = ended(job.path)
    assert job.state == "failed"
    assert job.reason == f"{out} exists; give --force to replace it, or another --out"
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_missing_token_file_fails_with_the_reason(run, tmp_path):
    run_path, checkpoint = run
    job = launch_job(run_path, "eval", ["eval", "--ckpt", str(checkpoint), "--data", str(tmp_path / "gone.bin")])
    job = ended(job.path)
    assert job.state == "failed"
    assert str(tmp_path / "gone.bin") in job.reason and "\n" not in job.reason


def long_eval(run, tmp_path, **kwargs):
    """An eval job of every window of a long file, once it has scored its first batch."""
    run_path, checkpoint = run
    data = token_file(tmp_path / "long.bin", LONG_TOKENS)
    job = launch_job(run_path, "eval", ["eval", "--ckpt", str(checkpoint), "--data", str(data), "--tokens", "0"],
                     **kwargs)
    return wait_for(lambda: (j := read_job(job.path)).progress and j.progress.get("windows") and j, "the first batch")


def test_a_command_killed_mid_job_is_recorded_and_its_unfinished_output_removed(run, tmp_path):
    output = tmp_path / "out" / "exports" / "half"
    job = long_eval(run, tmp_path, output=str(output))
    child = job.status["child_pid"]
    # What a command writing `output` leaves when it is killed: its temporary name, with its pid.
    unfinished = temp_path(output, child)
    unfinished.mkdir(parents=True)
    (unfinished / "model.safetensors").write_bytes(b"half")
    os.kill(child, signal.SIGKILL)
    job = ended(job.path)
    assert (job.state, job.reason) == ("failed", "killed by SIGKILL")
    assert not unfinished.exists() and not output.exists()


def test_a_runner_asked_to_stop_interrupts_its_command(run, tmp_path):
    job = long_eval(run, tmp_path)
    runner, child = job.status["pid"], job.status["child_pid"]
    os.kill(runner, signal.SIGTERM)
    job = ended(job.path)
    assert (job.state, job.reason) == ("failed", "stopped by SIGTERM")
    wait_for(lambda: gone(child) and gone(runner), "the command and the runner to end")


def test_a_cancelled_job_ends_cancelled_with_its_command_and_no_output_left(run, tmp_path):
    output = tmp_path / "out" / "exports" / "half"
    job = long_eval(run, tmp_path, output=str(output))
    runner, child = job.status["pid"], job.status["child_pid"]
    cancel_job(job.path)
    job = ended(job.path)
    assert (job.state, job.reason) == ("cancelled", None)
    assert isinstance(job.status["cancel_requested"], float)
    wait_for(lambda: gone(child) and gone(runner), "the command and the runner to end")
    assert not output.exists() and not temp_path(output, child).exists()
    with pytest.raises(UserError, match="is cancelled: there is nothing to cancel"):
        cancel_job(job.path)


def test_a_job_cancelled_as_soon_as_it_is_launched_ends_cancelled(run, tmp_path):
    """Its runner may still be starting: it finds the request when it records itself running."""
    run_path, checkpoint = run
    job = launch_job(run_path, "export", ["export", "--ckpt", str(checkpoint), "--out", str(tmp_path / "x")],
                     output=str(tmp_path / "x"))
    cancel_job(job.path)
    job = ended(job.path)
    assert job.state == "cancelled", job.reason
    assert not (tmp_path / "x").exists()


def test_a_runner_killed_outright_reads_as_failed_and_its_command_ends(run, tmp_path):
    job = long_eval(run, tmp_path)
    runner, child = job.status["pid"], job.status["child_pid"]
    os.kill(runner, signal.SIGKILL)
    job = ended(job.path)
    assert job.state == "failed" and job.reason.startswith(f"process {runner} is gone")
    # Its next progress line meets a closed pipe.
    wait_for(lambda: gone(child), "the command to end")
