"""What msrun tells each process it starts, read before MindSpore is up (docs/MINDSPORE.md)."""

from __future__ import annotations

import os


def expected_world_size() -> int:
    """Workers in this job as msrun announces them (1 outside msrun)."""
    return int(os.environ.get("MS_WORKER_NUM", "1"))


def expected_rank() -> int:
    """This worker's rank as msrun announces it, for choosing who writes before MindSpore is up.

    msrun's scheduler runs the same command with rank 0 announced; it is no worker: -1.
    """
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        return -1
    return int(os.environ.get("RANK_ID", "0"))
