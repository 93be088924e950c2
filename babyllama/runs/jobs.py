"""Jobs on a run's checkpoints (`babyllama export`, `eval` and `eval --task`) that outlive whoever started them.

`launch_job` starts this module as a runner (`python -m babyllama.runs.jobs FOLDER`) in its own
session, as trainers are started; the runner runs the job's command with `--progress jsonl`,
keeps its output in output.log and its progress, result or error in status.json, so the app,
a second app or `cat` can follow a job after the app that started it is gone. The folder, the
status fields and the events: docs/ARCHITECTURE.md, "Jobs".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from babyllama.errors import UserError
from babyllama.files import temp_path
from babyllama.runs.launch import start_detached
from babyllama.runs.liveness import (
    ACTIVE_STATES,
    RunState,
    effective_state,
    live_process,
    process_identity,
    this_host,
)
from babyllama.runs.rundir import RunDir

JOBS_DIR = "jobs"
OUTPUT_LOG = "output.log"
# A bench job is `babyllama eval --task`: a benchmark score rather than a loss.
JOB_KINDS = ("export", "eval", "bench")
# What a runner forwards to its command, which then cleans up as on Ctrl-C.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
INTERRUPTED_EXIT = 130


@dataclass(frozen=True)
class JobInfo:
    """One job as its status.json says, its state judged by whether the runner still lives."""

    path: Path
    kind: str
    state: str
    reason: str | None
    status: dict

    @property
    def progress(self) -> dict | None:
        return self.status.get("progress")

    @property
    def result(self) -> dict | None:
        return self.status.get("result")

    @property
    def output(self) -> str | None:
        return self.status.get("output")

    @property
    def details(self) -> dict:
        details = self.status.get("details")
        return details if isinstance(details, dict) else {}

    @property
    def log_path(self) -> Path:
        return self.path / OUTPUT_LOG


def jobs_dir(run_path: str | os.PathLike) -> Path:
    return Path(run_path) / JOBS_DIR


def _new_job_folder(parent: Path, kind: str) -> Path:
    """RUN/jobs/YYYYmmdd-HHMMSS-KIND, with -2, -3, ... for jobs started within the same second."""
    parent.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"
    for n in range(1, 1000):
        folder = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{parent}: too many jobs named {stem}")


def launch_job(run_path: str | os.PathLike, kind: str, args: Sequence[str], *, output: str | None = None,
               details: dict | None = None, cwd: str | os.PathLike | None = None,
               env: dict[str, str] | None = None) -> JobInfo:
    """Start `babyllama *args` (a command that takes `--progress jsonl`) as a job of the run at `run_path`.

    `output` is the file or folder the job writes, if any; `details` what a reader shows of the
    job (the checkpoint's step, the format, the data), kept in its status. Returns the job as it
    stands once its runner was started (its status says `starting` or already `running`).
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {', '.join(JOB_KINDS)}")
    folder = _new_job_folder(jobs_dir(run_path), kind).resolve()
    command = [sys.executable, "-m", "babyllama", *args, "--progress", "jsonl"]
    runner = [sys.executable, "-m", "babyllama.runs.jobs", str(folder)]
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    start_detached(RunDir(folder), runner, folder / OUTPUT_LOG, what=f"the {kind} job in {folder}", env=child_env,
                   cwd=cwd, command=command, kind=kind, output=output, details=details or {}, progress=None,
                   result=None)
    return read_job(folder)


def read_job(folder: str | os.PathLike) -> JobInfo:
    folder = Path(folder)
    status = RunDir(folder).read_status()
    # A folder without its status is a job being launched: launch_job writes it right after the folder.
    current = effective_state(status) if status else RunState("starting", None)
    return JobInfo(folder, str(status.get("kind") or "job"), current.state, current.reason, status)


def list_jobs(run_path: str | os.PathLike) -> list[JobInfo]:
    """The run's jobs, newest first (their folders' names begin with when they started)."""
    try:
        folders = [Path(e.path) for e in os.scandir(jobs_dir(run_path)) if e.is_dir()]
    except FileNotFoundError:
        return []
    jobs = []
    for folder in sorted(folders, reverse=True):
        try:
            jobs.append(read_job(folder))
        except UserError as e:  # a status.json damaged by hand must not hide the other jobs
            jobs.append(JobInfo(folder, "job", "failed", str(e), {}))
    return jobs


def cancel_job(folder: str | os.PathLike) -> None:
    """Ask an active job on this host to stop: `cancel_requested` in its status, then SIGTERM to its
    runner, which passes it on as SIGINT (the command removes what it was writing) and ends the job
    `cancelled` (a job that finished first stays finished). A UserError when there is nothing to cancel."""
    job = read_job(folder)
    if job.state not in ACTIVE_STATES:
        raise UserError(f"{job.path.name} is {job.state}: there is nothing to cancel")
    runner = live_process(job.status.get("pid"), job.status.get("pid_create_time"))
    if runner is None or job.status.get("host") != this_host():
        raise UserError(f"{job.path.name}: its runner is not a process of this host (pid {job.status.get('pid')} on "
                        f"{job.status.get('host')}); cancel it there")
    # Under the status lock, as the runner's own `running`: a runner still starting finds the request
    # when it writes `running` (and has its handlers by then), a running one gets the signal.
    status = RunDir(job.path).write_status(cancel_requested=time.time())
    if status.get("state") == "running":
        try:
            os.kill(runner.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------------
# The runner


def _event(line: bytes) -> dict | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def _ended_without_saying(code: int, signalled: str | None) -> str:
    if signalled is not None:
        return f"stopped by {signalled}"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code == INTERRUPTED_EXIT:
        return "interrupted"
    return f"exited with status {code} without saying why (see {OUTPUT_LOG})"


def _remove_unfinished_output(output: str | None, pid: int) -> None:
    """What a command killed mid-write left under its temporary name (files.temp_path with its pid)."""
    if not output:
        return
    temp = temp_path(Path(output), pid)
    if temp.is_dir():
        shutil.rmtree(temp, ignore_errors=True)
    else:
        temp.unlink(missing_ok=True)


def run_job(folder: Path) -> int:
    """Run the job in `folder` to its end, recording it in status.json; 0 when it finished."""
    job = RunDir(folder)
    signalled: list[str] = []
    children: list[subprocess.Popen] = []

    def forward(signum, frame) -> None:
        signalled.append(signal.Signals(signum).name)
        for started in children:
            try:
                started.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass

    # Before anything else: a cancel right after the launch must find the runner listening.
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    status = job.update_status(lambda current: {"state": "running", **process_identity(), "error": None})
    if signalled or status.get("cancel_requested") is not None:
        return _end_unstarted(job, signalled[0] if signalled else None)
    try:
        child = subprocess.Popen(status["command"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
    except OSError as e:
        job.write_status(state="failed", error=f"could not start {status['command'][0]}: {e}")
        return 1
    children.append(child)
    if signalled:
        child.send_signal(signal.SIGINT)
    job.write_status(child_pid=child.pid)
    result = error = error_line = None
    with open(folder / OUTPUT_LOG, "ab") as log:
        for line in child.stdout:
            log.write(line)
            log.flush()
            event = _event(line)
            if event is None:
                text = line.decode("utf-8", "replace").strip()
                if ": error: " in text:
                    error_line = text.split(": error: ", 1)[1]
            elif event["event"] == "done":
                result = {key: value for key, value in event.items() if key != "event"}
            elif event["event"] == "error":
                error = event.get("message")
            else:
                job.write_status(progress=event)
    code = child.wait()
    if code == 0 and result is not None:
        job.write_status(state="finished", result=result, error=None)
        return 0
    if code < 0:
        _remove_unfinished_output(status.get("output"), child.pid)
    if signalled and job.read_status().get("cancel_requested") is not None:
        job.write_status(state="cancelled", error=None)
        return 1
    reason = error or error_line or _ended_without_saying(code, signalled[0] if signalled else None)
    job.write_status(state="failed", error=reason)
    return 1


def _end_unstarted(job: RunDir, signalled: str | None) -> int:
    """A cancel or a signal came before the command was started: it never will be."""
    if job.read_status().get("cancel_requested") is not None:
        job.write_status(state="cancelled", error=None)
    else:
        job.write_status(state="failed", error=_ended_without_saying(0, signalled))
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m babyllama.runs.jobs JOB_FOLDER", file=sys.stderr)
        return 2
    return run_job(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
