"""Short, fixed-width renderings of the numbers a run produces, for narrow terminals."""

from __future__ import annotations

import math

_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def format_count(value: float | None) -> str:
    """12 -> "12", 12_345 -> "12.3k", 4_500_000 -> "4.50M": three significant digits."""
    if value is None or not math.isfinite(value):
        return "-"
    for scale, suffix in _SUFFIXES:
        if abs(value) >= scale:
            scaled = value / scale
            digits = 2 if abs(scaled) < 10 else 1 if abs(scaled) < 100 else 0
            return f"{scaled:.{digits}f}{suffix}"
    return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.1f}"


def format_steps(step: int | None, max_steps: int | None) -> str:
    if step is None:
        return "-" if max_steps is None else f"-/{max_steps:,}"
    return f"{step:,}" if max_steps is None else f"{step:,}/{max_steps:,}"


def format_loss(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def format_lr(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def format_number(value) -> str:
    """Three significant digits: a gradient norm."""
    return f"{value:.3g}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def format_ms(value) -> str:
    """A step's time: "850 ms", "1.41 s"."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.3g} s"


def format_mib_short(mib: float | None) -> str:
    """812 -> "812M", 6963 -> "6.8G", 23400 -> "23G": memory in at most four characters and a unit."""
    if mib is None or not math.isfinite(mib):
        return "-"
    if mib < 1024:
        return f"{mib:.0f}M"
    gib = mib / 1024
    return f"{gib:.1f}G" if gib < 10 else f"{gib:.0f}G"


def progress_bar(fraction: float, width: int) -> str:
    """A bar of `width` cells in eighths, e.g. "███▍    " for 0.43 of 8."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part and full < width else ""
    return ("█" * full + partial).ljust(width)


def format_flops(value) -> str:
    """Achieved model FLOP/s: 4.12e10 -> "41.2 GFLOP/s"."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    count = format_count(value)
    if abs(value) >= 1e3:
        # format_count's suffix (k, M, G, T) becomes the unit's prefix.
        return f"{count[:-1]} {count[-1]}FLOP/s"
    return f"{count} FLOP/s"


def format_mfu(value) -> str:
    """Model FLOPs utilisation, 0..1: 0.123 -> "12.3%", 0.004 -> "0.40%"."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.1%}" if value >= 0.01 else f"{value:.2%}"


BENCH_NAMES = {"ceval": "C-Eval", "cmmlu": "CMMLU"}


def format_bench(row: dict, short: bool = False) -> str:
    """A `bench` row: "C-Eval 5-shot 27.1% (chance 25%) @600", or short: "C-Eval 27.1% @600"."""
    task = str(row.get("task"))
    shots = row.get("shots")
    shot = f" {shots}-shot" if isinstance(shots, int) and not short else ""
    chance = row.get("chance")
    against = f" (chance {chance:.0%})" if isinstance(chance, (int, float)) and not short else ""
    return f"{BENCH_NAMES.get(task, task)}{shot} {row['accuracy']:.1%}{against} @{row['step']:,}"
