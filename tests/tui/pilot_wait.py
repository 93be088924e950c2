"""Waiting in Pilot tests for what the app does in its own time (workers, files, child processes)."""

from __future__ import annotations

import time

from textual.widgets._footer import FooterKey

WAIT_LIMIT_S = 60.0


async def wait_until(pilot, condition, what: str, limit: float = WAIT_LIMIT_S) -> None:
    """Let the app run until `condition()` holds; fail (not hang) if it does not within `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await pilot.pause(0.05)


def footer_settled(screen) -> bool:
    """The footer, rebuilt after the screen's keys change, shows exactly the keys that apply now."""
    shown = {key.action for key in screen.query(FooterKey)} - {"app.command_palette", "command_palette"}
    return shown == {active.binding.action for active in screen.active_bindings.values() if active.binding.show}
