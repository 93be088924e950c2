"""Run states, and whether the process behind an active state still lives.

On this host the recorded pid and its start time decide; a run on another host is judged by how old
its `updated` heartbeat is. Also the words every report on a run shares (`format_duration`,
`stop_it_first`). See docs/ARCHITECTURE.md, "The run directory".
"""

from __future__ import annotations

import os
import socket
import time
from typing import NamedTuple

import psutil

from babyllama.devices import process_rss_mb

ACTIVE_STATES = ("starting", "running", "stopping")
# cancelled: only a job ends so, when asked to (`runs.jobs.cancel_job`); a run asked to stop ends stopped.
ENDED_STATES = ("finished", "failed", "stopped", "cancelled")
STATES = ACTIVE_STATES + ENDED_STATES
# Shown for a run directory that has a config but has never been launched; never written.
CREATED = "created"

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
# A run still stopping this long after its stop was asked is offered a kill (the app's K, `babyllama runs kill`).
STOP_OVERDUE_S = 30.0

# Set in a launched trainer's environment and recorded in status.json as launch_id, so the
# trainer (any msrun rank included) knows the "starting" status it finds is its own.
LAUNCH_ID_ENV = "BABYLLAMA_LAUNCH_ID"

# psutil derives creation times from boot time + clock ticks: equal for the same process,
# so a difference above this means the pid was reused.
CREATE_TIME_TOLERANCE_S = 1.0


def this_host() -> str:
    return socket.gethostname()


def process_identity() -> dict:
    """The status fields that let a reader tell whether this process still lives."""
    me = psutil.Process()
    return {"pid": me.pid, "pid_create_time": me.create_time(), "host": this_host()}


class RunState(NamedTuple):
    state: str
    reason: str | None


def _recorded_process(pid: int, create_time: float | None) -> tuple[psutil.Process | None, str | None]:
    """(the process, None) while `pid` still names the process that was recorded, else (None, why)."""
    gone = f"process {pid} is gone"
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None, gone
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return None, f"{gone} (it exited without recording why)"
        if create_time is not None and abs(process.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return None, f"{gone} (the pid now belongs to another process)"
    except psutil.NoSuchProcess:
        return None, gone
    except psutil.AccessDenied:
        # Another user's process: we cannot tell more, and it may well be the trainer.
        pass
    return process, None


def live_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    return None if pid is None else _recorded_process(pid, create_time)[0]


def process_memory_mb(status: dict) -> float | None:
    """Resident memory (MiB) of the live process a status names, its children (msrun's workers)
    included; None when it runs on another host or has ended."""
    if status.get("host") != this_host():
        return None
    process = live_process(status.get("pid"), status.get("pid_create_time"))
    if process is None:
        return None
    try:
        return process_rss_mb(process.pid)
    except psutil.Error:
        return None


def still_running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def effective_state(status: dict, *, now: float | None = None, stale_after: float = STALE_AFTER_S) -> RunState:
    """What a status means right now: an active state whose process has died reads as failed."""
    state = status.get("state")
    if state is None:
        return RunState(CREATED, None)
    if state not in ACTIVE_STATES:
        return RunState(state, status.get("error"))
    host, pid = status.get("host"), status.get("pid")
    if host == this_host() and pid is not None:
        _, gone = _recorded_process(pid, status.get("pid_create_time"))
        if gone and state == "stopping":
            gone = f"stopping, then {gone}"
        return RunState("failed", gone) if gone else RunState(state, None)
    now = time.time() if now is None else now
    updated = status.get("updated")
    if updated is None or now - updated > stale_after:
        silent = "ever" if updated is None else f"for {format_duration(now - updated)}"
        return RunState(
            "failed",
            f"no update from {host or 'its host'} {silent} (a live trainer writes every "
            f"{HEARTBEAT_S:.0f} s; silent runs count as failed after {format_duration(stale_after)})",
        )
    return RunState(state, None)


def stopping_for(state: str, stop_requested: object, now: float) -> float | None:
    """Seconds since the stop of a run still stopping was asked; None when it is not stopping, or
    the time of the ask was not recorded."""
    if state != "stopping" or not isinstance(stop_requested, (int, float)):
        return None
    return max(0.0, now - stop_requested)


def state_words(state: str, stop_requested: object, now: float) -> str:
    """A state as every report shows it: "stopping 42s" says how long a stop has waited."""
    waited = stopping_for(state, stop_requested, now)
    return state if waited is None else f"{state} {format_duration(waited)}"


def stop_overdue(state: str, stop_requested: object, now: float) -> bool:
    """Whether a stop has waited STOP_OVERDUE_S without the run ending: time to offer a kill."""
    waited = stopping_for(state, stop_requested, now)
    return waited is not None and waited >= STOP_OVERDUE_S


def owned_by_this_process(status: dict) -> bool:
    """Whether the status belongs to this process: it launched us, or names us."""
    launch_id = status.get("launch_id")
    if launch_id is not None and launch_id == os.environ.get(LAUNCH_ID_ENV):
        return True
    return status.get("host") == this_host() and status.get("pid") == os.getpid()


def stop_it_first(path: str | os.PathLike, status: dict, state: str) -> str:
    """The refusal to touch a run that another live process holds, saying how to stop it."""
    return (f"{path} is already {state} (pid {status.get('pid')} on {status.get('host')}); "
            f"stop it first with `babyllama runs stop {path}`.")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
