"""`--progress jsonl` for `babyllama eval` and `export`: one JSON object a line on stdout, for the
job runner (`runs.jobs`) and other programs. The events each command prints: docs/ARCHITECTURE.md,
"Jobs".
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from babyllama.errors import UserError

PROGRESS_CHOICES = ("none", "jsonl")
# Progress events come at most this often; start, stage, done and error events always.
PROGRESS_INTERVAL_S = 0.2

Emit = Callable[[dict], None]


def add_progress_argument(parser) -> None:
    parser.add_argument("--progress", choices=PROGRESS_CHOICES, default="none",
                        help="jsonl: JSON events on stdout (start, progress, done, error) instead of the text report")


def event_printer(progress: str) -> Emit | None:
    """What prints an event for `--progress`, or None when events are not wanted.

    A reader that went away is not ignored, unlike prepare's report: the job runner is the
    reader, and a job whose runner was killed should end (and remove its unfinished output)
    rather than finish unrecorded.
    """
    if progress != "jsonl":
        return None

    def emit(event: dict) -> None:
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    return emit


class Throttle:
    """True at most once every PROGRESS_INTERVAL_S, and always when `last`."""

    def __init__(self) -> None:
        self.shown = float("-inf")

    def due(self, last: bool = False) -> bool:
        now = time.monotonic()
        if last or now - self.shown >= PROGRESS_INTERVAL_S:
            self.shown = now
            return True
        return False


def report_or_events(progress: str, compute: Callable[[Emit | None], dict]) -> dict | None:
    """`compute(emit)`'s report for the text and `--json` output, or None once, with `--progress
    jsonl`, its events went out followed by `done` (or `error`, and the UserError raised again)."""
    emit = event_printer(progress)
    if emit is None:
        return compute(None)
    try:
        report = compute(emit)
    except UserError as e:
        emit({"event": "error", "message": str(e)})
        raise
    emit({"event": "done", **report})
    return None
