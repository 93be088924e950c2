"""How a clean's events are shown: a live bar, or prepare's reports with clean's
lines (a line every few seconds, JSON lines on stdout for `--progress jsonl`, warnings only); the summary, and the
removed examples by rule (`--explain N`). See docs/ARCHITECTURE.md."""

from __future__ import annotations

import sys

from babyllama.clean.settings import RULE_HELP, RULES
from babyllama.prepare.progress import JsonlReport, LinesReport, WarningsReport
from babyllama.units import format_clock

PREFIX = "babyllama clean"


def describe_removed(removed: dict) -> str:
    parts = [f"{rule} {n:,}" for rule, n in removed.items() if n]
    return ", ".join(parts) if parts else "none"


def describe_progress(event: dict) -> str:
    phase = event["phase"]
    if phase == "dedup":
        return f"dedup: pass {event['passes']}/{event['total_passes']}"
    removed = sum(event["removed"].values())
    line = (f"{phase}: {event['bytes'] / 1e6:,.0f}/{event['total_bytes'] / 1e6:,.0f} MB  "
            f"{event['documents']:,} docs  {removed:,} removed  {event['mb_per_s']:.1f} MB/s  "
            f"ETA {format_clock(event['eta_s'])}")
    return line + (f"  {event['malformed']:,} bad" if event["malformed"] else "")


def describe_done(event: dict) -> str:
    total_in, total_out = event["documents_in"], event["documents_out"]
    sizes = event["duplicate_clusters"]["sizes"]
    lines = [
        f"wrote {event['out']} and {event['manifest']}: {total_out:,} of {total_in:,} documents kept "
        f"({total_out / total_in:.1%}); {event['elapsed_s']:.1f} s at {event['mb_per_s']:.1f} MB/s",
        f"  removed: {describe_removed(event['removed'])}",
    ]
    if sizes:
        lines.append(f"  duplicate clusters: {event['duplicate_clusters']['clusters']:,} "
                     f"(sizes: {', '.join(f'{n:,} of {size}' for size, n in sizes.items())})")
    if event["malformed"]:
        lines.append(f"  skipped {event['malformed']:,} malformed records, the first: {event['malformed_examples'][0]}")
    return "\n".join(lines)


def describe_examples(manifest: dict, count: int) -> str:
    """Up to `count` removed documents for each rule that removed any, with what was measured."""
    lines = []
    for rule in RULES:
        removed = manifest["removed"][rule]
        if not removed:
            continue
        shown = manifest["examples"][rule][:count]
        lines.append(f"{rule}: {removed:,} removed ({RULE_HELP[rule]})")
        for example in shown:
            measured = example.get("measured") or f"similarity {example['similarity']:.2f} to {example['kept']['where']}"
            lines.append(f"  {example['where']}: {measured}")
            lines.append(f"    {one_line(example['text'])}")
            if "kept" in example:
                lines.append(f"    kept: {one_line(example['kept']['text'])}")
    return "\n".join(lines) if lines else "no document was removed"


def one_line(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width] + "…"


def describe_message(event: dict) -> str | None:
    kind = event["event"]
    if kind == "note":
        return f"{PREFIX}: {event['message']}"
    if kind == "warning":
        return f"{PREFIX}: warning: {event['message']}"
    if kind == "done":
        return describe_done(event)
    return None


class BarReport:
    """A one-line live status on a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.drawn = False

    def __call__(self, event: dict) -> None:
        if event["event"] == "progress":
            self.stream.write(f"\r{describe_progress(event)}\x1b[K")
            self.drawn = True
        elif event["event"] in ("note", "warning", "done", "error"):
            if self.drawn:
                self.stream.write("\n")
                self.drawn = False
            message = describe_message(event)
            if message is not None:
                self.stream.write(message + "\n")
        self.stream.flush()


def make_report(kind: str):
    if kind == "auto":
        kind = "bar" if sys.stderr.isatty() else "lines"
    if kind == "lines":
        return LinesReport(prefix=PREFIX, progress=describe_progress, message=describe_message)
    if kind == "none":
        return WarningsReport(message=describe_message)
    return {"bar": BarReport, "jsonl": JsonlReport}[kind]()
