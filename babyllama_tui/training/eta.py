"""Speed and time to finish from (step, time) points of a run's train rows."""

from __future__ import annotations

from collections.abc import Sequence


def steps_per_second(points: Sequence[tuple[int, float]], since: float | None = None) -> float | None:
    """Steps a second over (step, time) points, counting only those logged at or after `since`
    (the current attempt's start: the gap before a resume is not training time)."""
    if since is not None:
        points = [p for p in points if p[1] >= since]
    if len(points) < 2:
        return None
    (first_step, first_time), (last_step, last_time) = points[0], points[-1]
    if last_time <= first_time or last_step <= first_step:
        return None
    return (last_step - first_step) / (last_time - first_time)


def eta_seconds(
    points: Sequence[tuple[int, float]], max_steps: int | None, now: float, since: float | None = None
) -> float | None:
    """Seconds until `max_steps` at the recent speed, counted from `now`."""
    rate = steps_per_second(points, since)
    if rate is None or not max_steps:
        return None
    last_step, last_time = points[-1]
    return max(0.0, (max_steps - last_step) / rate - max(0.0, now - last_time))
