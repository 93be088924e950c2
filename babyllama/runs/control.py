"""Stopping a run on this host: SIGTERM to its trainers (`stop_run`), SIGKILL as the last resort (`kill_run`).
See docs/ARCHITECTURE.md, "Launching and stopping".
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import psutil

from babyllama.errors import UserError
from babyllama.runs.launch import reap_launched
from babyllama.runs.liveness import (
    ACTIVE_STATES,
    RunState,
    effective_state,
    format_duration,
    live_process,
    still_running,
    this_host,
)
from babyllama.runs.rundir import RunDir, as_run


@dataclass
class StopReport:
    name: str
    state: str
    signalled: list[int]
    message: str


def _run_processes(status: dict) -> tuple[list[int], list[psutil.Process]]:
    """What to signal to stop a run on this host, and which processes to watch until gone.

    The trainers themselves, never their process groups: a trainer's group holds MindSpore's
    kernel compiler server, which a SIGTERM would end mid-compile, failing the run. A
    detached launch is the trainer; msrun starts each worker in a session of its own, so an
    msrun launch is stopped through its workers (msrun and its scheduler follow once the
    workers have exited); a run started by hand through its trainer pid. `kill_run` ends
    every process watched.
    """
    launcher = live_process(status.get("launcher_pid"), status.get("launcher_create_time"))
    if launcher is not None:
        try:
            descendants = launcher.children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        watch = [launcher, *descendants]
        if status.get("launcher") == "msrun":
            workers = [p for p in descendants if _is_session_leader(p.pid)]
            if workers:
                return [p.pid for p in workers], watch
        return [launcher.pid], watch
    trainer = live_process(status.get("pid"), status.get("pid_create_time"))
    if trainer is not None:
        return [trainer.pid], [trainer]
    return [], []


def _is_session_leader(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:
        return False


def _send(pids: list[int], sig: signal.Signals) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def wait_gone(processes: list[psutil.Process], timeout: float) -> bool:
    # Polled rather than waited on: these are rarely our children, and a zombie that nobody
    # reaps has ended all the same.
    deadline = time.monotonic() + timeout
    while any(still_running(p) for p in processes):
        reap_launched()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _require_local(run: RunDir, status: dict) -> None:
    host = status.get("host")
    if host is not None and host != this_host():
        raise UserError(f"{run.name} runs on host {host}, not {this_host()}: stop it from {host}.")


def _what_to_stop(run: RunDir) -> tuple[StopReport | None, list[int], list[psutil.Process]]:
    """(a report when the run is not active, else None; what to signal; what to watch until gone).
    A run active on another host is refused."""
    status = run.read_status()
    current = effective_state(status)
    if current.state not in ACTIVE_STATES:
        return StopReport(run.name, current.state, [], f"{run.name} is not running ({current.state})."), [], []
    _require_local(run, status)
    return None, *_run_processes(status)


def stop_run(run: RunDir | str | os.PathLike, *, wait: bool = False, timeout: float = 600.0) -> StopReport:
    """Ask a run to stop: SIGTERM to its trainer processes, which checkpoint and exit `stopped`.

    The run reads `stopping` from then on, with `stop_requested`. With `wait`, return once its
    processes are gone or after `timeout` seconds. A process that died of the signal before the
    trainer could record it (still importing, say) is recorded as stopped here, with a note in `error`.
    """
    run = as_run(run)
    idle, targets, watch = _what_to_stop(run)
    if idle is not None:
        return idle
    signalled = _send(targets, signal.SIGTERM)
    if signalled:
        # Said at once, not when the trainer gets to it: a trainer in a long step or compile runs no
        # Python until it ends, and every reader of the run (the app's too) shows how long a stop waits.
        run.mark_stopping()
    if not wait:
        return StopReport(run.name, "stopping", signalled,
                          f"sent SIGTERM to {_pids(signalled)}; {run.name} saves a checkpoint and stops.")
    if not wait_gone(watch, timeout):
        state = run.state().state
        return StopReport(run.name, state, signalled,
                          f"{run.name} is still {state} {format_duration(timeout)} after SIGTERM; "
                          f"`babyllama runs kill {run.name}` ends it without a checkpoint.")
    final = _record_end_if_silent(run, "process ended on SIGTERM before the trainer recorded its state",
                                  unless_killed=True)
    if _kill_asked(run.read_status()):
        return StopReport(run.name, "stopped", signalled, f"{run.name} was killed before it stopped.")
    return StopReport(run.name, final.state, signalled, f"{run.name} is {final.state}.")


def kill_run(run: RunDir | str | os.PathLike, *, timeout: float = 30.0) -> StopReport:
    """Last resort: SIGKILL every process of the run. Steps after the last checkpoint are lost;
    `babyllama train --resume` continues from that checkpoint."""
    run = as_run(run)
    idle, targets, watch = _what_to_stop(run)
    if idle is not None:
        return idle
    # Said before the signal: a stop waiting for the same processes then leaves the end for this kill to record.
    run.update_status(lambda status: {"kill_requested": time.time()} if status.get("state") in ACTIVE_STATES else None)
    signalled = _send(targets, signal.SIGKILL)
    signalled += _send([p.pid for p in watch if p.pid not in signalled], signal.SIGKILL)
    wait_gone(watch, timeout)
    latest = run.latest_checkpoint()
    kept = f"resume continues from {latest.path.name}" if latest else "no checkpoint was saved"
    final = _record_end_if_silent(run, f"killed with SIGKILL; {kept}")
    return StopReport(run.name, final.state, signalled, f"killed {_pids(signalled)}; {kept}.")


def _record_end_if_silent(run: RunDir, note: str, *, unless_killed: bool = False) -> RunState:
    """`stopped` with `note` if the run's processes ended without recording an end; `unless_killed`,
    a kill asked meanwhile records its own."""

    def end(status: dict) -> dict | None:
        if status.get("state") not in ACTIVE_STATES or (unless_killed and _kill_asked(status)):
            return None
        return {"state": "stopped", "error": note}

    run.update_status(end)
    return run.state()


def _kill_asked(status: dict) -> bool:
    return isinstance(status.get("kill_requested"), (int, float))


def _pids(pids: list[int]) -> str:
    return ", ".join(map(str, pids)) if pids else "no process (already gone)"
