"""Clock-style durations for progress lines, shared by the CLI and the app.

Standard library only: the app imports it at start-up, where numpy must not load.
"""

from __future__ import annotations


def format_clock(seconds: float | None) -> str:
    """125 -> "2:05", 4000 -> "1:06:40"; "--:--" while unknown (an ETA before any progress)."""
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
