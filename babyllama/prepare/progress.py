"""Progress events: emitted at most about 5 a second, and shown as a live bar or a line every
few seconds on stderr, as JSON lines on stdout (`--progress jsonl`), or as warnings only.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

from babyllama.prepare.token_file import Counts
from babyllama.units import format_clock

# Malformed records the summary on the terminal names; the manifest names MAX_EXAMPLES.
EXAMPLES_SHOWN = 5

PROGRESS_INTERVAL_S = 0.2

ProgressCallback = Callable[[dict], None]


class ProgressTracker:
    """Emits progress events, at most about 5 a second."""

    def __init__(self, emit: ProgressCallback, total_bytes: int, resumed_bytes: int):
        self.emit = emit
        self.total_bytes = total_bytes
        self.resumed_bytes = resumed_bytes
        self.started = time.monotonic()
        self.last_emitted = float("-inf")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self, done_bytes: int) -> float:
        elapsed = self.elapsed()
        return (done_bytes - self.resumed_bytes) / elapsed if elapsed > 0 else 0.0

    def update(self, done_bytes: int, counts: Counts, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_emitted < PROGRESS_INTERVAL_S:
            return
        self.last_emitted = now
        rate = self.rate(done_bytes)
        self.emit(
            {
                "event": "progress",
                "bytes": done_bytes,
                "total_bytes": self.total_bytes,
                "documents": counts.documents,
                "tokens": counts.tokens,
                "skipped": counts.skipped(),
                "mb_per_s": round(rate / 1e6, 3),
                "eta_s": round((self.total_bytes - done_bytes) / rate, 1) if rate > 0 else None,
                "elapsed_s": round(self.elapsed(), 3),
            }
        )


def format_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def describe_progress(event: dict) -> str:
    total = event["total_bytes"]
    bad = event["skipped"]["malformed"]
    return (
        f"{event['bytes'] / 1e6:,.0f}/{total / 1e6:,.0f} MB  "
        f"{event['documents']:,} docs  {format_count(event['tokens'])} tokens  "
        f"{event['mb_per_s']:.1f} MB/s  ETA {format_clock(event['eta_s'])}" + (f"  {bad:,} bad" if bad else "")
    )


def describe_done(event: dict) -> str:
    """The summary line, then a line for each of the first malformed records."""
    skipped = event["skipped"]
    cut_short = len(event["cut_short"])
    written = f"{event['documents']:,} documents, {event['tokens']:,} tokens"
    if "trained_tokens" in event:
        written = (f"{event['documents']:,} conversations, {event['tokens']:,} tokens of which "
                   f"{event['trained_tokens']:,} are trained on (the loss mask {event['out']}.mask)")
    lines = [
        f"wrote {event['out']} and {event['manifest']}: {written}; skipped {skipped['too_short']:,} too short, "
        f"{skipped['malformed']:,} malformed"
        + (f", and the rest of {cut_short:,} file{'s' if cut_short > 1 else ''} (warned above)" if cut_short else "")
        + f"; {event['elapsed_s']:.1f} s at {event['mb_per_s']:.1f} MB/s"
    ]
    shown = event["examples"][:EXAMPLES_SHOWN]
    lines += (f"  {example}" for example in shown)
    more = skipped["malformed"] - len(shown)
    if more > 0:
        named = len(event["examples"])
        lines.append(
            f"  and {more:,} more malformed record{'s' if more > 1 else ''}"
            + (f"; {event['manifest']} names the first {named}" if named > len(shown) else "")
        )
    return "\n".join(lines)


def describe_warning(event: dict) -> str:
    return f"babyllama prepare: warning: {event['message']}"


def describe_message(event: dict) -> str | None:
    """The line a note, warning or done event shows on the terminal; None for other events."""
    kind = event["event"]
    if kind == "note":
        return f"babyllama prepare: {event['message']}"
    if kind == "warning":
        return describe_warning(event)
    if kind == "done":
        return describe_done(event)
    return None


class BarReport:
    """A one-line live bar on a terminal."""

    def __init__(self, stream=sys.stderr, width: int = 24):
        self.stream = stream
        self.width = width
        self.drawn = False

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "progress":
            total = event["total_bytes"]
            fraction = event["bytes"] / total if total else 1.0
            filled = int(fraction * self.width)
            bar = "█" * filled + "░" * (self.width - filled)
            self.stream.write(f"\r{bar} {fraction:4.0%}  {describe_progress(event)}\x1b[K")
            self.drawn = True
        elif kind in ("note", "warning", "done", "error"):
            self.end_line()
            message = describe_message(event)
            if message is not None:
                self.stream.write(message + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


class LinesReport:
    """A line every few seconds, for logs and pipes. prepare's events by default; another command
    (clean) gives its own prefix and lines for them."""

    def __init__(self, stream=sys.stderr, interval_s: float = 5.0, *, prefix: str = "babyllama prepare",
                 progress: Callable[[dict], str] = describe_progress,
                 message: Callable[[dict], str | None] = describe_message):
        self.stream = stream
        self.interval_s = interval_s
        self.last = time.monotonic()
        self.prefix, self.progress, self.message = prefix, progress, message

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "progress" and time.monotonic() - self.last >= self.interval_s:
            self.last = time.monotonic()
            self.stream.write(f"{self.prefix}: {self.progress(event)}\n")
        elif (message := self.message(event)) is not None:
            self.stream.write(message + "\n")
        self.stream.flush()


class WarningsReport:
    """Nothing but warnings, for --progress none: a file read only in part is never silent.
    `message` gives a warning's line (prepare's by default)."""

    def __init__(self, stream=sys.stderr, *, message: Callable[[dict], str | None] = describe_message):
        self.stream = stream
        self.message = message

    def __call__(self, event: dict) -> None:
        if event["event"] == "warning":
            self.stream.write(self.message(event) + "\n")
            self.stream.flush()


class JsonlReport:
    """One JSON object a line on stdout, for programs. A reader that goes away does not stop
    the work: the rest of the events are dropped."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.reader_gone = False

    def __call__(self, event: dict) -> None:
        if self.reader_gone:
            return
        try:
            self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.reader_gone = True
            # Python flushes stdout again at exit; point it at /dev/null so that is quiet too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)


def make_report(kind: str) -> ProgressCallback:
    if kind == "auto":
        kind = "bar" if sys.stderr.isatty() else "lines"
    return {"bar": BarReport, "lines": LinesReport, "jsonl": JsonlReport, "none": WarningsReport}[kind]()
