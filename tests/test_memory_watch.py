"""The trainer's watch on its own memory (babyllama.memory_watch): the machine's limit, and real
trainers of a tiny model whose limits are set just above what they start with, so the watch trips:
at the stop line (a checkpoint, then `failed`) and at the limit (`failed` at once, no checkpoint).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from test_train import SMALL_MODEL, WAIT_S, babyllama_train, rows_of, tail, wait_for

from babyllama.config import TrainConfig
from babyllama.devices import host_memory_mb
from babyllama.memory_watch import cgroup_memory_limit, memory_limits
from babyllama.runs import ACTIVE_STATES, RunDir

OUT_OF_MEMORY = r"out of memory: \d+ MiB of (\d+ MiB|[\d.]+ GiB) \(set by memory_limit_mb\) at step \d+"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, sample_jsonl, sp_tokenizer_dir) -> Path:
    from babyllama.prepare import prepare

    out = tmp_path_factory.mktemp("tokens") / "sanguo.bin"
    prepare([sample_jsonl], "c4", sp_tokenizer_dir, out, workers=1)
    return out


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_cgroup_limit_is_the_lowest_on_the_way_up_in_v1_and_v2(tmp_path):
    # cgroup v1: the memory controller's own hierarchy; "no limit" is a huge number.
    v1 = tmp_path / "v1"
    write(v1 / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    write(v1 / "memory" / "box" / "memory.limit_in_bytes", str(6 << 30))
    write(v1 / "memory" / "box" / "job" / "memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path / "v1.cgroup", "5:cpu,cpuacct:/box/job\n4:memory:/box/job\n0::/\n")
    assert cgroup_memory_limit(v1, tmp_path / "v1.cgroup") == 6 << 30

    # cgroup v2, one hierarchy: memory.max, "max" for none.
    v2 = tmp_path / "v2"
    write(v2 / "cgroup.controllers", "cpu memory\n")
    write(v2 / "user.slice" / "memory.max", str(3 << 30))
    write(v2 / "user.slice" / "run-1.scope" / "memory.max", "max\n")
    write(tmp_path / "v2.cgroup", "0::/user.slice/run-1.scope\n")
    assert cgroup_memory_limit(v2, tmp_path / "v2.cgroup") == 3 << 30

    # A container that sees its own cgroup at the root while /proc names the host's path for it.
    write(v2 / "memory.max", str(2 << 30))
    write(tmp_path / "elsewhere.cgroup", "0::/docker/0123abcd\n")
    assert cgroup_memory_limit(v2, tmp_path / "elsewhere.cgroup") == 2 << 30

    write(tmp_path / "none.cgroup", "0::/\n")
    assert cgroup_memory_limit(tmp_path / "empty", tmp_path / "none.cgroup") is None
    assert cgroup_memory_limit(v2, tmp_path / "missing") is None


def test_the_limits_are_a_share_of_the_machine_or_the_absolute_setting():
    machine = min(host_memory_mb()[1], (cgroup_memory_limit() or float("inf")) / 2**20)
    limits = memory_limits(TrainConfig(memory_limit=0.5, memory_stop_at=0.8))
    assert limits.limit_mb == pytest.approx(machine * 0.5) and limits.stop_mb == pytest.approx(machine * 0.4)
    assert limits.machine.startswith("50% of the ")
    limits = memory_limits(TrainConfig(memory_limit_mb=400))
    assert (limits.limit_mb, limits.stop_mb, limits.machine) == (400, 360, "set by memory_limit_mb")


def alerts_of(run: Path) -> list[dict]:
    return [row for row in rows_of(run) if row["kind"] == "alert"]


def runs_table(root: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "babyllama", "runs", "--root", str(root)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_past_the_stop_line_the_run_stops_after_the_step_with_a_checkpoint_and_fails_saying_why(tmp_path, token_file):
    # The stop line at 3% of 8,000 MiB, 240 MiB: above what the trainer holds when its watch starts, below what
    # MindSpore's import and the first step's compile take; the limit, far above, is never reached.
    run = tmp_path / "runs" / "soft"
    done = babyllama_train(run, "--data", str(token_file), *SMALL_MODEL, "--max_steps", "20",
                           "--memory_limit_mb", "8000", "--memory_stop_at", "0.03", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    status = RunDir(run).read_status()
    assert status["state"] == "failed" and status["step"] == 1, status
    assert status["error"].startswith("out of memory: ") and "(set by memory_limit_mb) at step 1, past the 3% " \
        "where training stops; stopped with a checkpoint; to go on in less memory: `babyllama train --run " \
        f"{run} --resume --batch_size 2 --grad_accum 2` (the same tokens per step)" in status["error"], status
    assert done.stderr.strip().splitlines()[-1] == f"babyllama train: {status['error']}"
    assert RunDir(run).latest_checkpoint().step == 1
    [alert] = alerts_of(run)
    assert (alert["step"], alert["alert"], alert["action"], alert["message"]) == (1, "memory", "stopped",
                                                                                   status["error"])
    assert alert["limit_mb"] == 8000 and 240 <= alert["used_mb"] < 8000 and alert["where"] == "host"
    assert status["alerts"] == 1 and status["last_alert"]["alert"] == "memory"
    assert "failed" in runs_table(run.parent) and status["error"] in runs_table(run.parent)


@pytest.mark.slow
def test_at_the_limit_a_detached_run_ends_at_once_and_says_why(tmp_path, token_file):
    # 400 MiB: the trainer starts below it and MindSpore's import alone goes past it, so the watch ends the run
    # before its first step; launched as the app and --detach launch it, with its stop guard beside it.
    run = tmp_path / "runs" / "hard"
    flags = ["--data", str(token_file), *SMALL_MODEL, "--max_steps", "20", "--memory_limit_mb", "400"]
    parent = textwrap.dedent(f"""
        from babyllama.runs import launch_detached
        print(launch_detached({str(run)!r}, {flags!r}, env={{"GLOG_v": "3"}}))
    """)
    launched = subprocess.run([sys.executable, "-c", parent], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    assert launched.returncode == 0, launched.stderr
    rundir = RunDir(run)
    wait_for(lambda: rundir.read_status().get("state") not in ACTIVE_STATES, "the run to end", log=rundir.log_path)
    status = rundir.read_status()
    log = rundir.log_path.read_text(encoding="utf-8")
    assert status["state"] == "failed" and status["step"] == 0, (status, tail(log))
    assert status["error"].startswith("out of memory: ") and status["error"].endswith(
        "(set by memory_limit_mb) at step 0; ended at once, before the machine ran out of memory; no checkpoint "
        f"had been saved; to go on in less memory: `babyllama train --run {run} --resume --batch_size 2 "
        "--grad_accum 2` (the same tokens per step), or a new run with a shorter max_seq_len or a smaller preset")
    assert rundir.state().state == "failed" and rundir.latest_checkpoint() is None
    assert "Traceback" not in log and log.rstrip().splitlines()[-1] == f"babyllama train: {status['error']}"
    [alert] = alerts_of(run)
    assert (alert["step"], alert["alert"], alert["action"]) == (0, "memory", "stopped") and alert["used_mb"] >= 400
    # Nothing of the run is left: the trainer, its stop guard and any compiler it had started.
    wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"]) if str(run) in " ".join(p.info["cmdline"] or ())],
             "the run's processes to be gone", timeout=WAIT_S)
    assert status["error"] in runs_table(run.parent)
    assert json.loads((run / "status.json").read_text())["alerts"] == 1


def test_at_the_limit_a_run_whose_checkpoints_cannot_be_read_still_ends_saying_why(tmp_path):
    # `latest` a folder: reading it fails. The watch must still record the end and exit, not die
    # on the error and leave the run to the kernel's OOM killer.
    run = tmp_path / "runs" / "odd"
    script = textwrap.dedent(f"""
        from babyllama.config import TrainConfig
        from babyllama.memory_watch import MemoryWatch
        from babyllama.runs import RunDir
        run = RunDir({str(run)!r})
        run.create({{}})
        (run.checkpoints_dir / "latest").mkdir(parents=True)
        MemoryWatch(TrainConfig(memory_limit_mb=1), run, lambda: 3).check_host()
        print("the watch let the run go on")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    status = RunDir(run).read_status()
    assert status["state"] == "failed" and "its checkpoints could not be read (Is a directory)" in status["error"]
    assert done.stderr.strip() == f"babyllama train: {status['error']}"
