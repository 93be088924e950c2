"""What msrun tells each process it starts, read before MindSpore is up (docs/MINDSPORE.md)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2)


def expected_world_size() -> int:
    """Workers in this job as msrun announces them (1 outside msrun)."""
    return int(os.environ.get("MS_WORKER_NUM", "1"))


def is_scheduler() -> bool:
    """msrun's scheduler, which runs the workers' command but is no worker."""
    return os.environ.get("MS_ROLE") == "MS_SCHED"


def expected_rank() -> int:
    """This worker's rank as msrun announces it, for choosing who writes before MindSpore is up.

    msrun's scheduler runs the same command with rank 0 announced; it is no worker: -1.
    """
    if is_scheduler():
        return -1
    return int(os.environ.get("RANK_ID", "0"))


def serve_as_scheduler() -> int:
    """The scheduler's whole part: MindSpore's cluster service, until every worker has left.

    Nothing else: a scheduler that had compiled a fused kernel (as a trainer does at its start)
    ended with "terminate called without an active exception", so msrun reported every run failed.
    """
    from mindspore.communication import init

    init()
    return 0


def stop_with_launcher() -> None:
    """Under msrun, a worker whose msrun ends (SIGTERM to it, its terminal closed) is sent SIGTERM,
    which stops the run after the step with a checkpoint on every host, as a stop does.

    msrun starts each worker in a session of its own and dies of a SIGTERM without passing it on, so
    without this its workers trained on. Call after the SIGTERM handler is installed.
    """
    if os.environ.get("MS_ROLE") != "MS_WORKER" or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # msrun ended before the request was made
        os.kill(os.getpid(), signal.SIGTERM)
