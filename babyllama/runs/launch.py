"""Starting a trainer detached from its caller, alone or under msrun (`launch_detached`).
See docs/ARCHITECTURE.md, "Launching and stopping".
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Sequence

import psutil

from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes
from babyllama.runs.liveness import ACTIVE_STATES, LAUNCH_ID_ENV, effective_state, stop_it_first, this_host
from babyllama.runs.rundir import RunDir, as_run

TRAIN_PROGRAM = ("-m", "babyllama", "train")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Popen objects of launched trainers, polled on each launch so the ones that ended are reaped
# instead of lingering as zombies in a long-lived app.
_launched: list[subprocess.Popen] = []


def _python_shim(bin_dir: Path) -> Path:
    """A `python` that is this interpreter: msrun runs workers as the literal command `python`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    atomic_write_bytes(shim, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'.encode())
    shim.chmod(0o755)
    return bin_dir


def launch_detached(
    run: RunDir | str | os.PathLike,
    args: Sequence[str] = (),
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    program: Sequence[str] = TRAIN_PROGRAM,
    cwd: str | os.PathLike | None = None,
) -> int:
    """Start `python *program --run RUN *args` in its own session and return its pid.

    With `workers > 1` the same command runs under msrun on this host (one worker per
    device, a free master port, worker logs in RUN/msrun/, rank 0's output in train.log).
    The process reads /dev/null and appends its output to train.log, so the caller's exit,
    a SIGHUP or a closed terminal never reach it. status.json says `starting` with the pid
    before this returns.
    """
    run = as_run(run)
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    run.path.mkdir(parents=True, exist_ok=True)
    status = run.read_status()
    current = effective_state(status)
    if current.state in ACTIVE_STATES:
        raise UserError(stop_it_first(run.path, status, current.state))

    trainer = [*program, "--run", str(run.path.resolve()), *args]
    launch_id = uuid.uuid4().hex
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), LAUNCH_ID_ENV: launch_id}
    if workers > 1:
        launcher = "msrun"
        argv = [
            sys.executable, "-m", "mindspore.parallel.cluster.run",
            f"--worker_num={workers}", f"--local_worker_num={workers}",
            f"--master_port={free_port()}", f"--log_dir={run.msrun_log_dir.resolve()}",
            "--join=True", "--tail_worker_log=0",
            "python", *trainer,
        ]
        shim_dir = _python_shim(run.msrun_log_dir / "bin")
        child_env["PATH"] = f"{shim_dir.resolve()}{os.pathsep}{child_env.get('PATH', '')}"
    else:
        launcher = "python"
        argv = [sys.executable, *trainer]

    return start_detached(run, argv, run.log_path, what=f"training for {run.path}", env=child_env, cwd=cwd,
                          launcher=launcher, world_size=workers, launch_id=launch_id,
                          stop_requested=None, kill_requested=None)


def start_detached(
    status: RunDir,
    argv: Sequence[str],
    log_path: Path,
    *,
    what: str,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    command: Sequence[str] | None = None,
    **fields,
) -> int:
    """Start `argv` in its own session, reading /dev/null and appending its output to `log_path`,
    and return its pid; `status` (a run's or a job's status.json) says `starting` with `fields`
    and `command` (default: `argv`) before the process exists, and its pid before this returns.

    Shared by trainers (`launch_detached`) and jobs (`runs.jobs.launch_job`).
    """
    reap_launched()
    command = list(argv if command is None else command)
    status.write_status(
        state="starting", host=this_host(), pid=None, pid_create_time=None,
        launcher_pid=None, launcher_create_time=None, started=time.time(), error=None, command=command, **fields,
    )
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp} launching: {shlex.join(command)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=env, cwd=cwd,
            )
        except OSError as e:
            status.write_status(state="failed", error=f"could not start {argv[0]}: {e}")
            raise UserError(f"could not start {what}: {e}") from None
    _launched.append(process)
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = None

    def record_launcher(current: dict) -> dict:
        recorded = {"launcher_pid": process.pid, "launcher_create_time": create_time}
        if current.get("pid") is None:
            recorded.update(pid=process.pid, pid_create_time=create_time)
        return recorded

    status.update_status(record_launcher)
    return process.pid


def reap_launched() -> None:
    for launched in list(_launched):
        if launched.poll() is not None:
            _launched.remove(launched)


def host_commands(run: RunDir | str | os.PathLike, args: Sequence[str], *, hosts: int, workers_per_host: int,
                  master_addr: str, master_port: int = 8118) -> list[str]:
    """The shell command that starts host `i` (node rank `i`) of a run across `hosts` machines, for each host.

    The app can start processes only on its own host, so a multi-host launch is written out for the user
    to run on each machine (README, "two machines"). The run directory must be on a folder every host sees.
    """
    run = as_run(run)
    if hosts < 2:
        raise UserError(f"a launch across hosts needs at least 2 hosts, got {hosts}")
    if workers_per_host < 1:
        raise UserError(f"workers per host must be at least 1, got {workers_per_host}")
    if not master_addr.strip():
        raise UserError("give the first host's address (msrun's --master_addr), e.g. 10.0.0.1")
    path = run.path.resolve()
    return [shlex.join(["msrun", f"--worker_num={hosts * workers_per_host}", f"--local_worker_num={workers_per_host}",
                        f"--master_addr={master_addr.strip()}", f"--master_port={master_port}", f"--node_rank={node}",
                        f"--log_dir={path / 'msrun'}", "--join=True",
                        "python", *TRAIN_PROGRAM, "--run", str(path), *args])
            for node in range(hosts)]


def write_host_script(path: Path, commands: Sequence[str]) -> Path:
    """A script that runs the command of the host whose node rank it is given (`sh SCRIPT 1` on the second)."""
    cases = "\n".join(f"  {node}) exec {command} ;;" for node, command in enumerate(commands))
    script = (f"#!/bin/sh\n# Run on each host with its node rank: sh {path.name} 0 on the first "
              f"(the master address), sh {path.name} 1 on the next, ...\n"
              f'case "$1" in\n{cases}\n  *) echo "usage: sh {path.name} NODE_RANK (0 to {len(commands) - 1})" >&2; '
              "exit 2 ;;\nesac\n")
    atomic_write_bytes(path, script.encode())
    path.chmod(0o755)
    return path
