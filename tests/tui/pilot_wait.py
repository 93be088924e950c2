"""Waiting in Pilot tests for what the app does in its own time (workers, files, child processes)."""

from __future__ import annotations

import time

WAIT_LIMIT_S = 60.0


async def wait_until(pilot, condition, what: str, limit: float = WAIT_LIMIT_S) -> None:
    """Let the app run until `condition()` holds; fail (not hang) if it does not within `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await pilot.pause(0.05)
