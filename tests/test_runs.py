"""Run directories: status, metrics, checkpoints, liveness, listing, and detached launches that
survive their parent. Launch tests use a stand-in trainer (a real Python program written here)
in place of `python -m babyllama train`, through launch_detached's `program` parameter."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from safetensors.numpy import save_file

from babyllama.config import config_to_dict, preset
from babyllama.errors import UserError
from babyllama.runs import (
    CREATED,
    LAUNCH_ID_ENV,
    STALE_AFTER_S,
    LineFollower,
    MetricsReader,
    RunDir,
    checkpoint_problem,
    effective_state,
    format_duration,
    kill_run,
    latest_rows,
    launch_detached,
    list_runs,
    process_identity,
    rename_run,
    resolve_run,
    run_info,
    set_note,
    state_words,
    stop_overdue,
    stop_run,
    tail_lines,
    trash_run,
)
from babyllama.runs.settings import NO_CONFIG, format_settings, run_settings

STAND_IN_TRAINER = """\
import signal, sys, time
from babyllama.runs import RunDir

run = RunDir(sys.argv[sys.argv.index("--run") + 1])
mode = sys.argv[sys.argv.index("--mode") + 1]
stop_requested = False

def request_stop(signum, frame):
    global stop_requested
    stop_requested = True

if mode == "graceful":
    signal.signal(signal.SIGTERM, request_stop)
elif mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode == "slow-start":
    time.sleep(600)  # like a trainer still importing MindSpore: SIGTERM's default action ends it

run.mark_running(step=0, max_steps=10**9)
print("stand-in trainer running", flush=True)
step = 0
while not stop_requested:
    step += 1
    run.append_metrics({"kind": "train", "step": step, "loss": 10.0 / step, "tokens": 64 * step,
                        "tokens_per_s": 1000.0})
    run.write_status(step=step)
    time.sleep(0.05)
run.write_status(state="stopped", step=step)
print("stand-in trainer stopped at step", step, flush=True)
"""


def wait_until(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def stand_in(tmp_path) -> Path:
    script = tmp_path / "stand_in_trainer.py"
    script.write_text(STAND_IN_TRAINER)
    return script


def finished_process_pid() -> tuple[int, float]:
    """The pid and create time of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = psutil.Process(process.pid).create_time()
    process.wait()
    return process.pid, create_time


def rows_so_far(reader: MetricsReader, seen: list) -> int:
    seen += reader.poll()
    return len(seen)


# status.json


def test_create_refuses_a_taken_run_dir_and_overwrite_starts_over(tmp_path):
    run = RunDir(tmp_path / "r1")
    run.create({"dim": 64})
    assert run.read_config() == {"dim": 64}
    assert run.checkpoints_dir.is_dir()
    with pytest.raises(UserError, match="config.json already exists"):
        RunDir(tmp_path / "r1").create({"dim": 128})

    run.append_metrics({"kind": "train", "step": 1, "loss": 3.0})
    temp = run.checkpoint_temp_path(1)
    temp.mkdir()
    run.publish_checkpoint(temp, 1)
    run.create({"dim": 128}, overwrite=True)
    assert run.read_config() == {"dim": 128}
    assert not run.metrics_path.exists()
    assert run.checkpoints() == []


def test_create_overwrite_refuses_a_run_that_another_process_is_running(tmp_path):
    run = RunDir(tmp_path / "busy")
    run.create({})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.write_status(state="running", host=socket.gethostname(), pid=sleeper.pid,
                         pid_create_time=psutil.Process(sleeper.pid).create_time())
        with pytest.raises(UserError, match="stop it first"):
            run.create({}, overwrite=True)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_write_status_merges_fields_and_rejects_unknown_states(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.read_status() == {}
    run.write_status(state="starting", step=0, max_steps=100)
    status = run.write_status(step=5)
    assert status["state"] == "starting" and status["step"] == 5 and status["max_steps"] == 100
    assert run.read_status() == status
    assert isinstance(status["updated"], float)
    with pytest.raises(ValueError, match="unknown run state 'paused'"):
        run.write_status(state="paused")
    assert run.read_status()["state"] == "starting"
    leftovers = [p.name for p in run.path.iterdir() if ".tmp" in p.name]
    assert leftovers == []


def test_mark_running_records_this_process_and_clears_a_strangers_launcher(tmp_path):
    run = RunDir(tmp_path / "r")
    dead_pid, dead_created = finished_process_pid()
    run.write_status(state="starting", host=socket.gethostname(), pid=dead_pid, pid_create_time=dead_created,
                     launcher="python", launcher_pid=dead_pid, launcher_create_time=dead_created, launch_id="abc")
    status = run.mark_running(step=3, max_steps=10, world_size=2)
    assert status["state"] == "running"
    assert status["pid"] == os.getpid() and status["host"] == socket.gethostname()
    assert status["pid_create_time"] == psutil.Process().create_time()
    assert (status["step"], status["max_steps"], status["world_size"]) == (3, 10, 2)
    assert status["launcher_pid"] is None and status["launcher"] is None and status["launch_id"] is None
    # A run started from a shell records its own command line, as a launched one records its launcher's.
    assert status["command"] == sys.orig_argv
    assert run.state() == ("running", None)


def test_mark_running_refuses_a_run_another_live_process_holds(tmp_path):
    run = RunDir(tmp_path / "r")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.write_status(state="running", host=socket.gethostname(), pid=sleeper.pid,
                         pid_create_time=psutil.Process(sleeper.pid).create_time(), step=7)
        with pytest.raises(UserError, match="two trainers cannot share a run directory"):
            run.mark_running(step=0, max_steps=10)
        assert run.read_status()["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stop_asked_while_the_trainer_starts_outlasts_its_claim_and_the_first_ask_counts(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "r")
    monkeypatch.setenv(LAUNCH_ID_ENV, "this-launch")
    run.write_status(state="starting", launch_id="this-launch", host=socket.gethostname(), pid=None)
    asked = run.mark_stopping()["stop_requested"]
    assert run.read_status()["state"] == "stopping" and isinstance(asked, float)
    assert run.mark_stopping(step=4)["stop_requested"] == asked, "asking again keeps the first time"
    status = run.mark_running(step=0, max_steps=10)
    assert (status["state"], status["stop_requested"]) == ("stopping", asked)
    assert run.mark_stopping(pid=os.getpid() + 1)["stop_requested"] == asked, "another process's stop changes nothing"

    run.write_status(state="stopped", pid=None, launch_id=None)
    assert run.mark_stopping()["state"] == "stopped", "an ended run is not stopping"
    status = run.mark_running(step=0, max_steps=10)
    assert (status["state"], status["stop_requested"]) == ("running", None), "a new process starts without a stop"


def test_heartbeat_refreshes_updated_while_running(tmp_path):
    run = RunDir(tmp_path / "r")
    first = run.mark_running(step=0, max_steps=1)["updated"]
    with run.heartbeat(interval=0.01):
        wait_until(lambda: run.read_status()["updated"] > first, "a heartbeat")
    run.write_status(state="finished")
    ended = run.read_status()
    with run.heartbeat(interval=0.01):
        time.sleep(0.1)
    assert run.read_status() == ended


# Liveness


def test_a_running_status_whose_process_is_gone_shows_failed(tmp_path):
    pid, created = finished_process_pid()
    status = {"state": "running", "host": socket.gethostname(), "pid": pid, "pid_create_time": created,
              "updated": time.time()}
    assert effective_state(status) == ("failed", f"process {pid} is gone")

    run = RunDir(tmp_path / "dead")
    run.create({})
    run.write_status(**status)
    info = run_info(run)
    assert info.state == "failed" and info.reason == f"process {pid} is gone"


def test_a_stopping_run_says_how_long_its_stop_has_waited_and_is_overdue_after_30_s():
    asked = 1_800_000_000.0
    status = {"state": "stopping", **process_identity(), "stop_requested": asked}
    assert effective_state(status) == ("stopping", None)
    assert state_words("stopping", asked, asked + 42.7) == "stopping 42s"
    assert not stop_overdue("stopping", asked, asked + 29.9)
    assert stop_overdue("stopping", asked, asked + 30)
    assert state_words("stopping", None, asked) == "stopping" and not stop_overdue("stopping", None, asked + 99)
    # The time of an earlier stop stays in the status; it counts only while the run is stopping.
    assert state_words("running", asked, asked + 42) == "running" and not stop_overdue("running", asked, asked + 99)


def test_a_stopping_run_whose_process_died_reads_failed_not_stopping(tmp_path):
    pid, created = finished_process_pid()
    run = RunDir(tmp_path / "dead")
    run.create({})
    run.write_status(state="stopping", host=socket.gethostname(), pid=pid, pid_create_time=created,
                     stop_requested=time.time() - 100)
    info = run_info(run)
    assert (info.state, info.reason) == ("failed", f"stopping, then process {pid} is gone")
    assert info.state_words(time.time()) == "failed" and not info.stop_overdue(time.time())


def test_a_reused_pid_does_not_count_as_the_trainer():
    me = process_identity()
    assert effective_state({"state": "running", **me}) == ("running", None)
    reused = {"state": "running", **me, "pid_create_time": me["pid_create_time"] - 3600}
    assert effective_state(reused) == ("failed", f"process {me['pid']} is gone (the pid now belongs to another process)")


def test_a_run_on_another_host_is_judged_by_its_updated_time():
    now = time.time()
    remote = {"state": "running", "host": "some-other-node", "pid": 1, "updated": now - 60}
    assert effective_state(remote, now=now) == ("running", None)
    silent = {**remote, "updated": now - STALE_AFTER_S - 1}
    state, reason = effective_state(silent, now=now)
    assert state == "failed" and reason.startswith("no update from some-other-node for 10m01s")


def test_ended_and_never_started_states_are_shown_as_written():
    assert effective_state({}) == (CREATED, None)
    assert effective_state({"state": "failed", "error": "CUDA out of memory"}) == ("failed", "CUDA out of memory")
    assert effective_state({"state": "finished", "pid": 999999999}) == ("finished", None)


# metrics.jsonl


def test_metrics_reader_holds_a_half_written_line_until_its_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path)
    assert reader.poll() == []
    with open(path, "ab") as f:
        f.write(b'{"kind":"train","step":1}\n{"kind":"tr')
    assert reader.poll() == [{"kind": "train", "step": 1}]
    assert reader.poll() == []
    with open(path, "ab") as f:
        f.write(b'ain","step":2,"text":"\xe4\xb8')  # cut inside a UTF-8 character too
    assert reader.poll() == []
    with open(path, "ab") as f:
        f.write(b'\x89"}\n')
    assert reader.poll() == [{"kind": "train", "step": 2, "text": "三"}]
    assert reader.offset == path.stat().st_size


def test_metrics_reader_starts_over_when_the_file_is_truncated_or_replaced(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step":1}\n{"step":2}\n{"step":3}\n')
    reader = MetricsReader(path)
    assert [r["step"] for r in reader.poll()] == [1, 2, 3]
    assert not reader.restarted

    path.write_text('{"step":1}\n')  # truncated (same file, shorter)
    assert [r["step"] for r in reader.poll()] == [1]
    assert reader.restarted

    replacement = tmp_path / "new.jsonl"
    replacement.write_text('{"step":10}\n{"step":11}\n{"step":12}\n{"step":13}\n')
    os.replace(replacement, path)  # replaced by a longer file
    assert [r["step"] for r in reader.poll()] == [10, 11, 12, 13]
    assert reader.restarted

    with open(path, "r+") as f:  # truncated and regrown past our offset before we looked
        f.truncate(0)
        f.write('{"step":20}\n' * 6)
    assert [r["step"] for r in reader.poll()] == [20] * 6
    assert reader.restarted
    assert reader.poll() == [] and not reader.restarted


def test_metrics_reader_skips_lines_that_are_not_json_objects(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step":1}\n{"kind":"tra{"step":2}\n[1,2]\n\n{"step":3}\n')
    reader = MetricsReader(path)
    assert reader.poll() == [{"step": 1}, {"step": 3}]
    assert reader.bad_lines == 2


def test_metrics_reader_reads_only_new_bytes_of_a_million_row_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = 1_000_000
    with open(path, "w") as f:
        f.write("".join(f'{{"step":{i}}}\n' for i in range(rows)))
    size = path.stat().st_size
    reader = MetricsReader(path)
    chunks = 0
    total = 0
    while True:
        got = reader.poll(max_bytes=8 * 1024 * 1024)
        if not got:
            break
        chunks += 1
        total += len(got)
    assert total == rows and chunks > 1
    assert reader.offset == size and reader.bytes_read == size

    appended = b'{"kind":"eval","step":1000000,"val_loss":2.4}\n{"kind":"train","step":1000001,"loss":2.4}\n'
    with open(path, "ab") as f:
        f.write(appended)
    new = reader.poll()
    assert [r["step"] for r in new] == [1_000_000, 1_000_001]
    assert reader.bytes_read == size + len(appended)
    assert reader.poll() == [] and reader.bytes_read == size + len(appended)


def test_append_metrics_writes_one_line_per_row_and_recovers_from_a_cut_line(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.metrics_path.write_bytes(b'{"kind":"train","step":1}\n{"kind":"train","st')  # killed mid-write
    reader = MetricsReader(run.metrics_path)
    assert reader.poll() == [{"kind": "train", "step": 1}]
    run.append_metrics({"kind": "sample", "step": 2, "text": "话说天下大势"})
    run.append_metrics({"kind": "train", "step": 3, "time": 12.5})
    rows = reader.poll()
    assert [r["step"] for r in rows] == [2, 3]
    assert rows[0]["text"] == "话说天下大势" and isinstance(rows[0]["time"], float)
    assert rows[1]["time"] == 12.5
    assert reader.bad_lines == 1


def test_line_follower_can_start_at_the_last_lines(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("".join(f"line {i}\n" for i in range(50_000)) + "partial")
    follower = LineFollower(path, last_lines=3)
    assert follower.poll() == ["line 49997", "line 49998", "line 49999"]
    assert follower.bytes_read < 100
    with open(path, "a") as f:
        f.write(" done\nnext\n")
    assert follower.poll() == ["partial done", "next"]


def test_tail_lines_reads_from_the_end_of_a_big_log(tmp_path):
    path = tmp_path / "train.log"
    with open(path, "w") as f:
        f.write("".join(f"step {i} loss 1.0\n" for i in range(300_000)))
        f.write("compiling 10%\rcompiling 50%\rcompiling 100%\n")
        f.write("still writ")
    assert path.stat().st_size > 5_000_000
    assert tail_lines(path, 3, max_bytes=4096) == ["step 299999 loss 1.0", "compiling 100%", "still writ"]
    assert tail_lines(path, 1) == ["still writ"]
    assert tail_lines(path, 0) == []
    assert tail_lines(tmp_path / "missing.log", 5) == []
    short = tmp_path / "short.log"
    short.write_text("a\nb\n")
    assert tail_lines(short, 10) == ["a", "b"]


def test_latest_rows_finds_the_newest_row_of_each_kind(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "train", "step": i, "loss": 5 - i / 1000} for i in range(1, 3000)]
    lines.insert(100, {"kind": "eval", "step": 100, "val_loss": 4.5})
    lines.append({"kind": "sample", "step": 2999, "text": "却说"})
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in lines) + '{"kind":"eval"')
    newest = latest_rows(path, max_bytes=4096)
    assert newest["train"]["step"] == 2999 and newest["sample"]["text"] == "却说"
    assert "eval" not in newest  # beyond the bytes it looks at
    assert latest_rows(path)["eval"]["val_loss"] == 4.5


# checkpoints/


def make_checkpoint(run: RunDir, step: int):
    temp = run.checkpoint_temp_path(step)
    temp.mkdir(parents=True)
    (temp / "weights.safetensors").write_bytes(b"w" * step)
    return run.publish_checkpoint(temp, step)


def test_checkpoints_publish_list_latest_and_prune(tmp_path):
    run = RunDir(tmp_path / "r")
    run.create({})
    assert run.checkpoints() == [] and run.latest_checkpoint() is None
    for step in (100, 200, 300, 400):
        make_checkpoint(run, step)
    (run.checkpoints_dir / ".step_0000500.tmp-1").mkdir()  # an interrupted save by another process
    (run.checkpoints_dir / ".step_0000300.old-1").mkdir()  # replaced by a publish that was interrupted
    mine = run.checkpoint_temp_path(600)  # a save of this process that failed (a full disk)
    mine.mkdir()
    assert [c.step for c in run.checkpoints()] == [100, 200, 300, 400]
    assert run.latest_path.read_text() == "step_0000400\n"
    assert run.latest_checkpoint() == (400, run.checkpoints_dir / "step_0000400")

    removed = run.prune_checkpoints(keep=2)
    assert sorted(p.name for p in removed) == [".step_0000300.old-1", ".step_0000500.tmp-1", mine.name,
                                               "step_0000100", "step_0000200"]
    assert [c.step for c in run.checkpoints()] == [300, 400]
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["latest", "step_0000300", "step_0000400"]
    with pytest.raises(ValueError):
        run.prune_checkpoints(keep=0)


def test_latest_checkpoint_falls_back_to_the_newest_complete_one(tmp_path):
    run = RunDir(tmp_path / "r")
    make_checkpoint(run, 10)
    make_checkpoint(run, 20)
    run.latest_path.write_text("step_0000030\n")  # names a folder that never got renamed into place
    assert run.latest_checkpoint().step == 20
    run.latest_path.unlink()
    assert run.latest_checkpoint().step == 20


def test_publishing_a_step_again_replaces_the_old_folder(tmp_path):
    run = RunDir(tmp_path / "r")
    make_checkpoint(run, 7)
    again = run.checkpoint_temp_path(7)
    again.mkdir()
    (again / "marker").write_text("second save")
    run.publish_checkpoint(again, 7)
    assert (run.checkpoint_path(7) / "marker").read_text() == "second save"
    assert [p.name for p in run.checkpoints_dir.iterdir() if p.name.startswith(".")] == []


def test_latest_checkpoint_is_not_pruned_even_when_older(tmp_path):
    run = RunDir(tmp_path / "r")
    for step in (1, 2, 3):
        make_checkpoint(run, step)
    run.latest_path.write_text("step_0000001\n")
    run.prune_checkpoints(keep=1)
    assert [c.step for c in run.checkpoints()] == [1, 3]


def complete_checkpoint(run: RunDir, step: int) -> Path:
    """A published checkpoint holding the files babyllama train writes (safetensors weights and
    moments, state.json, config.json)."""
    temp = run.checkpoint_temp_path(step)
    temp.mkdir(parents=True)
    save_file({"tok_embeddings.weight": np.full((8, 4), step, np.float32)}, str(temp / "model.safetensors"))
    save_file({"optimizer_step": np.array([step], np.float32)}, str(temp / "optimizer.safetensors"))
    (temp / "state.json").write_text(json.dumps({"format": 1, "step": step}))
    (temp / "config.json").write_text(json.dumps({"model": {}, "train": {}}))
    return run.publish_checkpoint(temp, step).path


def test_checkpoint_problem_names_the_file_that_is_missing_cut_short_or_not_json(tmp_path):
    folder = complete_checkpoint(RunDir(tmp_path / "r"), 1)
    assert checkpoint_problem(folder) is None

    moments = folder / "optimizer.safetensors"
    whole = moments.read_bytes()
    moments.write_bytes(whole[:-3])  # a copy or a save that stopped early
    assert checkpoint_problem(folder) == (f"{moments} cannot be read (Error while deserializing header: "
                                          "incomplete metadata, file not fully covered)")
    moments.write_bytes(whole)

    state = folder / "state.json"
    state.write_text('{"format": 1,')
    assert checkpoint_problem(folder) == f"{state}:1: not valid JSON (Expecting property name enclosed in double quotes)"
    state.write_text("[]")
    assert checkpoint_problem(folder) == f"{state} does not hold a JSON object"
    state.write_text("{}")
    assert checkpoint_problem(folder) is None

    (folder / "model.safetensors").unlink()
    assert checkpoint_problem(folder) == f"{folder / 'model.safetensors'} is missing"


def test_an_incomplete_latest_checkpoint_is_reported_with_the_one_resume_would_use_instead(tmp_path):
    run = RunDir(tmp_path / "r")
    first, second, third = (complete_checkpoint(run, step) for step in (1, 2, 3))
    assert run_info(run).latest_checkpoint_problem is None

    (third / "state.json").write_text("")
    (second / "model.safetensors").unlink()
    info = run_info(run)
    assert info.latest_checkpoint == 3
    assert info.latest_checkpoint_problem == (
        f"{third / 'state.json'}:1: not valid JSON (Expecting value): the checkpoint is incomplete; delete {third} "
        f"(and {second}, incomplete too), and `babyllama train --run {run.path} --resume` continues from step_0000001")

    (first / "config.json").unlink()
    assert run_info(run).latest_checkpoint_problem.endswith(
        f"incomplete too), and `babyllama train --run {run.path} --resume` starts again from step 0 "
        "(no complete checkpoint is left)")


# Listing


def test_list_runs_sorts_newest_first_with_status_and_metrics_fields(tmp_path):
    root = tmp_path / "runs"
    now = time.time()
    old = RunDir(root / "old")
    old.create({})
    old.write_status(state="finished", step=1000, max_steps=1000, started=now - 7200, host="h", pid=1)
    for step in (990, 1000):
        old.append_metrics({"kind": "train", "step": step, "loss": 2.0, "tokens": 64000, "tokens_per_s": 5000.0})
    old.append_metrics({"kind": "eval", "step": 1000, "val_loss": 2.2})
    make_checkpoint(old, 1000)

    dead = RunDir(root / "dead")
    dead.create({})
    pid, created = finished_process_pid()
    dead.write_status(state="running", step=5, max_steps=50, started=now - 60, host=socket.gethostname(),
                      pid=pid, pid_create_time=created)

    fresh = RunDir(root / "fresh")
    fresh.create({})
    (root / "not-a-run").mkdir()
    (root / "stray.txt").write_text("x")

    infos = list_runs(root)
    assert [i.name for i in infos] == ["fresh", "dead", "old"]
    fresh_info, dead_info, old_info = infos
    assert fresh_info.state == CREATED and fresh_info.step is None
    assert dead_info.state == "failed" and dead_info.reason == f"process {pid} is gone"
    assert (dead_info.step, dead_info.max_steps) == (5, 50)
    assert old_info.state == "finished"
    assert (old_info.loss, old_info.val_loss, old_info.tokens, old_info.tokens_per_s) == (2.0, 2.2, 64000, 5000.0)
    assert old_info.latest_checkpoint == 1000
    # Without checking checkpoints the latest is still found, but not opened: no problem is reported.
    unchecked = run_info(old.path, checkpoints=False)
    assert (unchecked.latest_checkpoint, unchecked.latest_checkpoint_problem) == (1000, None)
    assert old_info.latest_checkpoint_problem is not None
    assert 7100 < old_info.age_s(now + 1) < 7300
    assert json.loads(json.dumps(old_info.to_dict()))["path"] == str(root / "old")
    assert list_runs(tmp_path / "nowhere") == []


def test_a_run_s_age_counts_from_its_first_metrics_row_not_from_its_last_resume(tmp_path):
    run = RunDir(tmp_path / "resumed")
    run.create({})
    run.write_status(state="stopped", step=0, max_steps=10, started=1_800_000_000.0)
    assert run_info(run).age_s(1_800_000_060.0) == 60, "no row yet: from the start"
    with open(run.metrics_path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"kind": "train", "step": 1, "loss": 3.0, "time": 1_800_000_005.0}) + "\n")
    run.write_status(started=1_800_000_500.0)
    info = run_info(run)
    assert (info.started, info.created) == (1_800_000_500.0, 1_800_000_005.0)
    assert info.age_s(1_800_001_005.0) == 1000


def test_a_status_that_cannot_be_read_shows_the_run_as_failed(tmp_path):
    run = RunDir(tmp_path / "garbled")
    run.create({})
    run.status_path.write_text("{not json", encoding="utf-8")
    info = run_info(run)
    assert info.state == "failed" and "not valid JSON" in info.reason
    run.status_path.unlink()
    run.status_path.mkdir()
    assert run_info(run).state == "failed", "an OSError reading it too"


def test_resolve_run_by_name_or_path(tmp_path):
    root = tmp_path / "runs"
    RunDir(root / "a").create({})
    assert resolve_run("a", root).path == root / "a"
    assert resolve_run(str(root / "a"), tmp_path / "elsewhere").path == root / "a"
    with pytest.raises(UserError, match="no run named 'b'"):
        resolve_run("b", root)


def test_format_duration():
    assert [format_duration(s) for s in (None, 5, 125, 3 * 3600 + 720, 2 * 86400 + 4 * 3600)] == [
        "-", "5s", "2m05s", "3h12m", "2d04h"]


# Launching and stopping (real processes)


def test_launch_refuses_a_run_that_is_already_active(tmp_path, stand_in):
    run = RunDir(tmp_path / "r")
    run.mark_running(step=0, max_steps=1)  # this test process plays the trainer
    with pytest.raises(UserError, match="already running"):
        launch_detached(run, ["--mode", "graceful"], program=[str(stand_in)])


def test_a_launched_run_survives_its_parent_exiting_and_stops_on_request(tmp_path, stand_in):
    run = RunDir(tmp_path / "runs" / "detached")
    parent = subprocess.run(
        [sys.executable, "-c",
         "import sys; from babyllama.runs import launch_detached;"
         "print(launch_detached(sys.argv[1], ['--mode', 'graceful'], program=[sys.argv[2]]))",
         str(run.path), str(stand_in)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    pid = int(parent.stdout)
    assert os.getsid(pid) == pid  # a session of its own

    reader, seen = MetricsReader(run.metrics_path), []
    wait_until(lambda: rows_so_far(reader, seen) >= 3, "rows from the detached trainer")
    count_after_parent_exit = len(seen)
    wait_until(lambda: rows_so_far(reader, seen) > count_after_parent_exit + 3, "more rows")
    assert run.state() == ("running", None)
    assert [info.state for info in list_runs(run.path.parent)] == ["running"]

    report = stop_run(run, wait=True, timeout=60)
    assert report.state == "stopped" and report.signalled == [pid]
    status = run.read_status()
    assert status["state"] == "stopped" and status["pid"] == pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    log = run.log_path.read_text()
    assert "launching:" in log and "stand-in trainer stopped at step" in log
    assert stop_run(run).message == "detached is not running (stopped)."


def start_in_terminal(argv: list[str]) -> tuple[subprocess.Popen, int]:
    """Run argv as the session leader of a new pseudo-terminal, as a login shell over SSH is."""
    master, terminal = os.openpty()

    def take_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal,
                               start_new_session=True, preexec_fn=take_terminal)
    os.close(terminal)
    return process, master


def read_terminal_until(master: int, marker: bytes) -> bytes:
    output = b""
    deadline = time.monotonic() + 60
    while marker not in output:
        assert time.monotonic() < deadline, f"no {marker!r} on the terminal; got {output!r}"
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            output += os.read(master, 4096)
    return output


def test_a_launched_run_survives_its_terminal_hanging_up(tmp_path, stand_in):
    run = RunDir(tmp_path / "runs" / "hangup")
    parent, master = start_in_terminal([
        sys.executable, "-c",
        "import sys, time; from babyllama.runs import launch_detached;"
        "pid = launch_detached(sys.argv[1], ['--mode', 'graceful'], program=[sys.argv[2]]);"
        "print('launched', pid, 'done', flush=True); time.sleep(600)",
        str(run.path), str(stand_in),
    ])
    output = read_terminal_until(master, b"done")
    pid = int(output.split(b"launched")[1].split()[0])
    reader, seen = MetricsReader(run.metrics_path), []
    wait_until(lambda: rows_so_far(reader, seen) >= 1, "the first row")

    os.close(master)  # the terminal goes away: the kernel sends SIGHUP to its session
    assert parent.wait(timeout=60) == -signal.SIGHUP
    count_after_hangup = rows_so_far(reader, seen)
    wait_until(lambda: rows_so_far(reader, seen) > count_after_hangup + 3, "rows after the hangup")
    assert psutil.Process(pid).is_running()

    report = stop_run(run, wait=True, timeout=60)
    assert report.state == "stopped"
    assert run.read_status()["state"] == "stopped"


def test_stop_during_startup_records_stopped(tmp_path, stand_in):
    run = RunDir(tmp_path / "r")
    pid = launch_detached(run, ["--mode", "slow-start"], program=[str(stand_in)])
    status = run.read_status()
    assert status["state"] == "starting" and status["pid"] == pid and status["launcher_pid"] == pid
    report = stop_run(run, wait=True, timeout=60)
    assert report.state == "stopped"
    assert run.read_status()["error"] == "process ended on SIGTERM before the trainer recorded its state"


def test_kill_ends_a_run_that_ignores_sigterm(tmp_path, stand_in):
    run = RunDir(tmp_path / "r")
    pid = launch_detached(run, ["--mode", "stubborn"], program=[str(stand_in)])
    wait_until(lambda: run.read_status().get("state") == "running", "the stand-in to start")
    make_checkpoint(run, 3)
    before = time.time()
    report = stop_run(run)
    status = run.read_status()
    assert report.state == "stopping" and status["state"] == "stopping", "stopping from the moment of the signal"
    assert before <= status["stop_requested"] <= time.time()
    report = stop_run(run, wait=True, timeout=0.5)
    assert report.state == "stopping" and "babyllama runs kill" in report.message
    assert run.read_status()["stop_requested"] == status["stop_requested"]
    report = kill_run(run)
    assert report.state == "stopped" and pid in report.signalled
    assert run.read_status()["error"] == "killed with SIGKILL; resume continues from step_0000003"
    assert run.state().state == "stopped"


def test_a_kill_during_a_stop_that_waits_is_recorded_as_the_kill(tmp_path, stand_in):
    run = RunDir(tmp_path / "r")
    launch_detached(run, ["--mode", "stubborn"], program=[str(stand_in)])
    wait_until(lambda: run.read_status().get("state") == "running", "the stand-in to start")
    stopped = []
    waiting = threading.Thread(target=lambda: stopped.append(stop_run(run, wait=True, timeout=60)))
    waiting.start()
    wait_until(lambda: run.read_status().get("state") == "stopping", "the stop")
    kill_run(run)
    waiting.join(timeout=60)
    assert run.read_status()["error"] == "killed with SIGKILL; no checkpoint was saved"
    assert stopped[0].message == "r was killed before it stopped."


def test_stopping_a_run_on_another_host_is_refused(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_status(state="running", host="node-7", pid=1234)
    with pytest.raises(UserError, match="runs on host node-7"):
        stop_run(run)


# Deleting, renaming and notes


def ended(root: Path, name: str, **status) -> RunDir:
    run = RunDir(root / "out" / "runs" / name)
    run.create({})
    run.write_status(**{"state": "failed", "host": "h", "pid": 1, **status})
    return run


def test_a_deleted_run_moves_to_the_trash_beside_the_runs_folder_whole(tmp_path):
    run = ended(tmp_path, "doomed", error="no such token file")
    run.append_metrics({"kind": "train", "step": 1, "loss": 3.0})
    make_checkpoint(run, 1)
    now = time.mktime((2025, 3, 1, 12, 30, 5, 0, 0, -1))
    moved = trash_run(run, now=now)
    assert moved == (tmp_path / "out" / "trash" / "doomed-20250301-123005").resolve()
    assert not run.path.exists()
    assert sorted(p.name for p in moved.iterdir()) == [".status.lock", "checkpoints", "config.json",
                                                       "metrics.jsonl", "status.json"]
    assert RunDir(moved).latest_checkpoint().step == 1

    again = ended(tmp_path, "doomed")  # a new run of the same name, deleted in the same second
    assert trash_run(again, now=now).name == "doomed-20250301-123005-2"
    assert list_runs(tmp_path / "out" / "runs") == []


def test_an_active_run_is_neither_deleted_nor_renamed(tmp_path):
    run = ended(tmp_path, "live")
    run.mark_running(step=0, max_steps=10)  # this process is its trainer, alive
    for act in (lambda: trash_run(run), lambda: rename_run(run, "other")):
        with pytest.raises(UserError) as refused:
            act()
        assert str(refused.value).startswith(("cannot delete live: it is running (pid ", "cannot rename live: it is running"))
        assert f"stop it first with `babyllama runs stop {run.path}`" in str(refused.value)
    assert run.status_path.exists() and not (tmp_path / "out" / "trash").exists()


def test_a_run_whose_status_cannot_be_read_can_be_deleted(tmp_path):
    run = ended(tmp_path, "garbled")
    run.status_path.write_text("{not json")
    assert trash_run(run).is_dir() and not run.path.exists()


def test_rename_refuses_bad_and_taken_names_and_repoints_the_status(tmp_path):
    run = ended(tmp_path, "old")
    old = run.path.resolve()
    advice = f"disk full; free some, then `babyllama train --run {old} --resume` continues"
    run.write_status(error=advice, command=[sys.executable, "-m", "babyllama", "train", "--run", str(old)])
    ended(tmp_path, "taken")
    (tmp_path / "out" / "runs" / "old-notes.txt").write_text("a file, not a run")
    for name, why in (("bad name", "a run name is letters"), ("-x", "a run name is letters"),
                      ("taken", "out/runs/taken exists; choose another name"),
                      ("old-notes.txt", "exists; choose another name"), ("old", "old already has that name")):
        with pytest.raises(UserError, match=why):
            rename_run(run, name)
    updated = run.read_status()["updated"]

    renamed = rename_run(run, "new.v2")
    new = old.parent / "new.v2"
    assert renamed.path == tmp_path / "out" / "runs" / "new.v2" and not run.path.exists()
    status = renamed.read_status()
    assert status["error"] == f"disk full; free some, then `babyllama train --run {new} --resume` continues"
    assert status["command"][-1] == str(new) and status["updated"] == updated
    assert sorted(info.name for info in list_runs(tmp_path / "out" / "runs")) == ["new.v2", "taken"]


def test_a_note_is_one_line_kept_in_the_run_folder_and_listed(tmp_path):
    run = ended(tmp_path, "noted")
    assert run_info(run).note is None
    assert set_note(run, "  lr 3e-4,\n  batch  16 ") == "lr 3e-4, batch 16"
    assert run.note_path.read_text() == "lr 3e-4, batch 16\n"
    assert run_info(run).note == list_runs(tmp_path / "out" / "runs")[0].note == "lr 3e-4, batch 16"
    with pytest.raises(UserError, match="a note is at most 200 characters; this one has 201"):
        set_note(run, "x" * 201)
    assert run_info(run).note == "lr 3e-4, batch 16"
    assert set_note(run, "  ") is None and not run.note_path.exists()
    with pytest.raises(UserError, match="is not a run directory"):
        set_note(tmp_path / "nowhere", "hello")


# CLI


def babyllama(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_runs_table_json_show_and_stop(tmp_path, stand_in):
    root = tmp_path / "out" / "runs"
    done = RunDir(root / "done")
    done.create({})
    done.write_status(state="finished", step=50, max_steps=50, started=time.time() - 90, host="h", pid=1)
    done.append_metrics({"kind": "baselines", "step": 0, "uniform_loss": 7.6009, "unigram_loss": 6.4371})
    done.append_metrics({"kind": "train", "step": 50, "loss": 3.25, "tokens_per_s": 1234.0, "bpb": 1.5, "mfu": 0.0123})
    done.append_metrics({"kind": "eval", "step": 50, "val_loss": 3.5, "val_bpb": 1.25})
    done.log_path.write_text("hello from the trainer\n")

    table = babyllama("runs", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "STEP", "LOSS", "VAL", "BPB", "TOK/S", "MFU", "AGE", "NOTE"]
    assert line.split()[:8] == ["done", "finished", "50/50", "3.2500", "3.5000", "1.250", "1,234", "1.2%"]

    listed = json.loads(babyllama("runs", "--json", "--root", str(root), cwd=tmp_path / "..").stdout)
    assert [(r["name"], r["state"], r["loss"]) for r in listed] == [("done", "finished", 3.25)]

    show = babyllama("runs", "show", "done", cwd=tmp_path)
    assert "state       finished" in show.stdout and "hello from the trainer" in show.stdout
    assert ("measures    bits per byte 1.250 val, 1.500 train; MFU 1.2%; baselines: uniform\n"
            "            7.601, unigram 6.437\n") in show.stdout
    assert "batch       8 x 1 accumulation x 1 worker(s) x 256 tokens = 2,048 tokens per" in show.stdout
    shown = json.loads(babyllama("runs", "show", str(done.path), "--json", cwd=tmp_path / "..").stdout)
    assert shown["status"]["state"] == "finished" and shown["log"] == ["hello from the trainer"]
    assert shown["settings"]["parameters"].startswith("24,636,384 ")

    missing = babyllama("runs", "stop", "nope", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"babyllama runs: error: no run named 'nope' under {Path('out/runs')} (and no run directory at that path); "
        "`babyllama runs` lists them."]

    live = RunDir(root / "live")
    launch_detached(live, ["--mode", "graceful"], program=[str(stand_in)])
    wait_until(lambda: live.read_status().get("state") == "running", "the stand-in to start")
    stop = babyllama("runs", "stop", "live", "--wait", "--root", str(root), cwd=tmp_path / "..")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.strip() == "live is stopped."
    assert live.read_status()["state"] == "stopped"


def test_cli_runs_says_how_long_a_stop_has_waited_and_offers_kill_after_30_s(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "slow")
    run.create({})
    # This test's process plays the trainer that has not ended 42 s after its stop was asked.
    run.write_status(state="stopping", **process_identity(), step=3, max_steps=10, started=time.time() - 100,
                     stop_requested=time.time() - 42)
    table = babyllama("runs", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    line = table.stdout.splitlines()[1]
    assert line.split()[:3] in (["slow", "stopping", "42s"], ["slow", "stopping", "43s"]), line
    assert f"`babyllama runs kill {run.path.relative_to(tmp_path)}` ends it without a checkpoint" in line
    show = babyllama("runs", "show", "slow", cwd=tmp_path).stdout
    assert "state       stopping 4" in show and "babyllama runs kill" in show

    run.write_status(stop_requested=time.time() - 5)
    line = babyllama("runs", cwd=tmp_path).stdout.splitlines()[1]
    assert line.split()[1] == "stopping" and "kill" not in line, "no kill offered before 30 s"


def test_cli_runs_counts_a_runs_alerts_and_names_the_last(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "bumpy")
    run.create({})
    run.write_status(state="finished", step=400, max_steps=400, started=time.time() - 100)
    run.append_alert(step=120, alert="spike", action="skipped", message="loss 9.1 at step 120, far above 5.2")
    run.append_alert(step=130, alert="rollback", action="rolled_back", message="step 130: rolled back to step 100")
    line = babyllama("runs", cwd=tmp_path).stdout.splitlines()[1]
    assert line.endswith("2 alerts, the last at step 130: rolled back to step 100"), line
    (listed,) = json.loads(babyllama("runs", "--json", cwd=tmp_path).stdout)
    assert listed["alerts"] == 2 and listed["last_alert"]["alert"] == "rollback"


def test_cli_runs_shows_the_loss_of_the_last_step_applied_not_of_a_skipped_spike(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "spiky")
    run.create({})
    run.write_status(state="finished", step=410, max_steps=410, started=time.time() - 100)
    for step in range(10, 410, 10):
        run.append_metrics({"kind": "train", "step": step, "loss": 3.0, "bpb": 1.0, "tokens": step * 64,
                            "tokens_per_s": 5000.0})
    run.append_metrics({"kind": "train", "step": 410, "loss": 9.5, "bpb": 3.2, "tokens": 410 * 64,
                        "tokens_per_s": 4000.0, "skipped": True})
    run.append_alert(step=410, alert="spike", action="skipped", message="loss 9.5 at step 410, far above 3.0")
    line = babyllama("runs", cwd=tmp_path).stdout.splitlines()[1]
    assert line.split()[:6] == ["spiky", "finished", "410/410", "3.0000", "-", "1.000"], line
    assert line.endswith("1 alert, the last at step 410: loss 9.5 at step 410, far above 3.0"), line
    (listed,) = json.loads(babyllama("runs", "--json", cwd=tmp_path).stdout)
    assert (listed["loss"], listed["bpb"]) == (3.0, 1.0)
    assert (listed["tokens"], listed["tokens_per_s"]) == (410 * 64, 4000.0), "the skipped step was still taken"
    assert "bits per byte 1.000 train" in babyllama("runs", "show", "spiky", cwd=tmp_path).stdout
    # Nothing but skipped steps yet: no loss rather than the spike's.
    lone = RunDir(tmp_path / "lone")
    lone.create({})
    lone.append_metrics({"kind": "train", "step": 1, "loss": 12.0, "bpb": 4.0, "skipped": True})
    assert (run_info(lone).loss, run_info(lone).bpb, run_info(lone).step) == (None, None, 1)


def test_cli_runs_note_rename_and_delete(tmp_path):
    ended(tmp_path, "first", error="process 1 is gone")
    note = babyllama("runs", "note", "first", "the baseline", cwd=tmp_path)
    assert (note.returncode, note.stdout) == (0, "first: the baseline\n")
    assert babyllama("runs", cwd=tmp_path).stdout.splitlines()[1].endswith("the baseline; process 1 is gone")

    renamed = babyllama("runs", "rename", "first", "baseline", cwd=tmp_path)
    assert (renamed.returncode, renamed.stdout) == (0, f"renamed first to baseline ({Path('out/runs/baseline')})\n")
    show = babyllama("runs", "show", "baseline", cwd=tmp_path).stdout
    assert "note        the baseline\n" in show
    bad = babyllama("runs", "rename", "baseline", "two words", cwd=tmp_path)
    assert (bad.returncode, bad.stderr) == (2, "babyllama runs: error: cannot rename baseline to 'two words': a run "
                                                "name is letters, digits, '.', '_' and '-', starting with a letter or digit\n")

    deleted = json.loads(babyllama("runs", "delete", "baseline", "--json", cwd=tmp_path).stdout)
    trash = Path(deleted["trash"])
    assert deleted["name"] == "baseline" and trash.parent == (tmp_path / "out" / "trash").resolve()
    assert RunDir(trash).read_note() == "the baseline"
    assert babyllama("runs", cwd=tmp_path).stdout == "no runs yet\n"


def test_run_settings_say_how_a_run_was_started_wrapped_at_80_columns(tmp_path):
    model, train = preset("tiny")
    run = RunDir(tmp_path / "r")
    data_file = f"{tmp_path}/data/{'sanguo-' * 12}bpe.bin"
    run.create({**config_to_dict(model, dataclasses.replace(train, max_steps=600, lr_decay_iters=500)),
                "data": {"files": [{"path": data_file, "tokens": 812345}], "train_windows": 3000, "val_windows": 30},
                "tokenizer": {"name": "sanguo-bpe", "kind": "sentencepiece", "path": "/t/sanguo-bpe", "vocab_size": 8000},
                "world_size": 2, "preset": "tiny", "babyllama_version": "9.9"})
    run.write_status(state="finished", command=["python", "-m", "babyllama", "train", "--run", str(run.path)])
    settings = dict(run_settings(run))
    assert settings["parameters"] == "19,800,832 (3,213,568 without the embedding)"
    assert settings["batch"].endswith("x 2 worker(s) x 256 tokens = 4,096 tokens per step")
    assert settings["lr"] == "warm-up 50 steps to 0.001, cosine decay to 0.0001 at step 500"
    assert settings["data"] == f"{data_file} (812,345 tokens)\n3,000 training and 30 validation windows"
    assert settings["tokenizer"] == "sanguo-bpe (sentencepiece, vocab 8,000) /t/sanguo-bpe"
    assert settings["command"] == f"python -m babyllama train --run {run.path}"
    lines = format_settings(run_settings(run))
    assert max(len(line) for line in lines) <= 80
    assert "".join(line.strip() for line in lines if line.startswith("data") or line.startswith(" " * 12)).count(
        "sanguo-") == 12, "a long path is wrapped, not cut"


def test_run_settings_of_a_run_without_a_readable_config_say_so_in_one_line(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_status(state="failed", command=["python", "train"])
    assert run_settings(run) == [("config", NO_CONFIG), ("command", "python train")]
    run.config_path.write_text("{not json")
    assert run_settings(run)[0] == ("config", f"{run.config_path}:1: not valid JSON (Expecting property name "
                                              "enclosed in double quotes).")
    run.config_path.write_text(json.dumps({"model": {"dim": -1}}))
    problem = dict(run_settings(run))["config"]
    assert problem == "config.json: [model]: model.dim must be positive, got -1"


def test_cli_runs_show_and_table_say_the_latest_checkpoint_is_incomplete_and_what_to_do(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "cut")
    run.create({})
    run.write_status(state="stopped", step=4, max_steps=10, started=time.time() - 60, host="h", pid=1)
    complete_checkpoint(run, 2)
    (complete_checkpoint(run, 4) / "model.safetensors").unlink()
    shown_path = Path("out/runs/cut")  # as `runs show cut` finds it from tmp_path
    latest = shown_path / "checkpoints" / "step_0000004"
    advice = (f"{latest / 'model.safetensors'} is missing: the checkpoint is incomplete; delete {latest}, "
              f"and `babyllama train --run {shown_path} --resume` continues from step_0000002")

    show = babyllama("runs", "show", "cut", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert f"checkpoints step_0000002, step_0000004 (latest 4, INCOMPLETE)\n            {advice}\n" in show.stdout
    shown = json.loads(babyllama("runs", "show", "cut", "--json", cwd=tmp_path).stdout)["run"]
    assert (shown["latest_checkpoint"], shown["latest_checkpoint_problem"]) == (4, advice)

    table = babyllama("runs", cwd=tmp_path).stdout.splitlines()
    assert table[1].split()[:3] == ["cut", "stopped", "4/10"]
    assert table[1].endswith(f"latest checkpoint, step 4, is incomplete: `babyllama runs show {shown_path}` "
                             "says what to do")
    listed = json.loads(babyllama("runs", "--json", cwd=tmp_path).stdout)
    assert listed[0]["latest_checkpoint_problem"] == advice

    shutil.rmtree(tmp_path / latest)  # as the advice says: the latest is then step 2, which is complete
    show = babyllama("runs", "show", "cut", cwd=tmp_path)
    assert "checkpoints step_0000002 (latest 2)\n" in show.stdout and "incomplete" not in show.stdout.lower()
    assert "incomplete" not in babyllama("runs", cwd=tmp_path).stdout


# msrun


MSRUN_STAND_IN = """\
import signal, sys, time

stop_requested = False

def request_stop(signum, frame):
    global stop_requested
    stop_requested = True

# First thing, as a trainer must: a rank still inside init() when SIGTERM comes would
# otherwise die of it, and msrun answers a worker's failure by SIGKILLing the others.
signal.signal(signal.SIGTERM, request_stop)

from mindspore.communication import get_rank, init
from babyllama.runs import RunDir

init()
rank = get_rank()
run = RunDir(sys.argv[sys.argv.index("--run") + 1])
if rank == 0:
    run.mark_running(step=0, max_steps=10**9, world_size=2)
step = 0
while not stop_requested:
    step += 1
    if rank == 0:
        run.append_metrics({"kind": "train", "step": step, "loss": 1.0})
        run.write_status(step=step)
    time.sleep(0.1)
if rank == 0:
    run.write_status(state="stopped", step=step)
print("rank", rank, "stopped", flush=True)
"""


@pytest.mark.slow
def test_a_two_worker_msrun_launch_stops_every_worker(tmp_path):
    script = tmp_path / "msrun_stand_in.py"
    script.write_text(MSRUN_STAND_IN)
    run = RunDir(tmp_path / "runs" / "dp")
    launcher = launch_detached(run, workers=2, program=[str(script)], env={"GLOG_v": "3"})
    assert run.read_status()["launcher"] == "msrun"
    wait_until(lambda: run.read_status().get("state") == "running", "rank 0 to start", timeout=180)
    status = run.read_status()
    assert status["pid"] != launcher and status["launcher_pid"] == launcher and status["world_size"] == 2
    workers = [p for p in psutil.Process(launcher).children(recursive=True) if os.getsid(p.pid) == p.pid]
    assert len(workers) == 2

    report = stop_run(run, wait=True, timeout=180)
    assert report.state == "stopped"
    assert sorted(report.signalled) == sorted(p.pid for p in workers)
    assert run.read_status()["error"] is None  # recorded by rank 0 itself, not by stop_run
    assert not psutil.pid_exists(launcher) or psutil.Process(launcher).status() == psutil.STATUS_ZOMBIE
    for rank in (0, 1):
        assert f"rank {rank} stopped" in (run.msrun_log_dir / f"worker_{rank}.log").read_text()


def test_append_alert_writes_a_row_and_counts_alerts_in_the_status(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create({})
    run.write_status(state="running", step=3)
    run.append_alert(step=3, alert="spike", action="skipped", message="loss 9.1 at step 3, 5x its median: skipped",
                     loss=9.1)
    row = run.append_alert(step=4, alert="rollback", action="rolled_back", message="back to step 2")
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [(r["kind"], r["alert"], r["step"]) for r in rows] == [("alert", "spike", 3), ("alert", "rollback", 4)]
    assert rows[0]["loss"] == 9.1 and row["message"] == "back to step 2"
    status = run.read_status()
    assert status["alerts"] == 2 and status["state"] == "running"
    assert status["last_alert"] == {"step": 4, "alert": "rollback", "message": "back to step 2"}
    with pytest.raises(ValueError, match="unknown alert"):
        run.append_alert(step=5, alert="bad", action="none", message="")


def test_runs_show_names_every_host_of_a_multi_host_run_and_its_state(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "pair")
    run.create({})
    run.write_status(state="failed", step=8, max_steps=100, host="node-a", pid=11, world_size=2,
                     error="rank 1 on node-b (10.0.0.2) stopped responding at step 8",
                     hosts=[{"host": "node-a", "address": "10.0.0.1", "ranks": [0], "pids": [11], "state": "failed"},
                            {"host": "node-b", "address": "10.0.0.2", "ranks": [1], "pids": [12], "state": "lost"}])
    show = babyllama("runs", "show", "pair", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert ("hosts       node-a (10.0.0.1): rank 0, pid 11, failed\n"
            "            node-b (10.0.0.2): rank 1, pid 12, lost\n") in show.stdout
    listed = json.loads(babyllama("runs", "--json", cwd=tmp_path).stdout)
    assert [h["state"] for h in listed[0]["hosts"]] == ["failed", "lost"]
