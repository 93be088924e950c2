"""`babyllama runs`: the table of runs, and `show`, `stop`, `kill`, `delete`, `rename`, `note` for one.
See docs/ARCHITECTURE.md, "The run directory".
"""

from __future__ import annotations

import argparse
import json
import shlex
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

from babyllama.runs.control import kill_run, stop_run
from babyllama.runs.listing import DEFAULT_ROOT, RunInfo, list_runs, resolve_run, run_info
from babyllama.runs.liveness import ACTIVE_STATES, format_duration
from babyllama.runs.manage import NOTE_MAX_CHARS, rename_run, set_note, trash_run
from babyllama.runs.readers import latest_rows, tail_lines
from babyllama.runs.rundir import RunDir, alert_words
from babyllama.runs.settings import format_settings, run_lineage, run_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def common(p: argparse.ArgumentParser, suppress: bool) -> None:
        # The same options are accepted before and after the action; SUPPRESS keeps an
        # action's parser from overwriting what was given before it.
        p.add_argument("--root", type=Path, default=argparse.SUPPRESS if suppress else DEFAULT_ROOT,
                       help=f"folder holding the run directories (default {DEFAULT_ROOT})")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                       help="print JSON instead of a table")

    parser.epilog = "Without an ACTION: the table of runs under --root, newest first."
    common(parser, suppress=False)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="status, latest metrics, checkpoints and log tail of one run")
    show.add_argument("run", metavar="NAME|PATH")
    show.add_argument("--log-lines", type=int, default=15, help="lines of train.log to show (default 15)")
    stop = actions.add_parser("stop", help="SIGTERM a run: it saves a checkpoint and exits stopped")
    stop.add_argument("run", metavar="NAME|PATH")
    stop.add_argument("--wait", action="store_true", help="wait until it has stopped")
    stop.add_argument("--timeout", type=float, default=600.0, help="seconds to wait with --wait (default 600)")
    kill = actions.add_parser("kill", help="SIGKILL a run that does not stop; unsaved steps are lost")
    kill.add_argument("run", metavar="NAME|PATH")
    delete = actions.add_parser("delete", help="move a run that is not active to the trash, out/trash/NAME-TIME "
                                "(moving it back restores it)")
    delete.add_argument("run", metavar="NAME|PATH")
    rename = actions.add_parser("rename", help="rename a run that is not active")
    rename.add_argument("run", metavar="NAME|PATH")
    rename.add_argument("new_name", metavar="NEW")
    note = actions.add_parser("note", help=f"give a run a note of one line, at most {NOTE_MAX_CHARS} characters "
                              "(\"\" removes it)")
    note.add_argument("run", metavar="NAME|PATH")
    note.add_argument("text")
    for action in (show, stop, kill, delete, rename, note):
        common(action, suppress=True)


def run(args: argparse.Namespace) -> int:
    if args.action is None:
        return _print_table(list_runs(args.root), args.json)
    target = resolve_run(args.run, args.root)
    if args.action == "show":
        return _print_show(target, args.json, args.log_lines)
    if args.action in MANAGING:
        return MANAGING[args.action](target, args)
    report = stop_run(target, wait=args.wait, timeout=args.timeout) if args.action == "stop" else kill_run(target)
    print(json.dumps(asdict(report)) if args.json else report.message)
    waited = args.action == "kill" or args.wait
    return 1 if waited and report.state in ACTIVE_STATES else 0


def _delete(target: RunDir, args: argparse.Namespace) -> int:
    moved = trash_run(target)
    if args.json:
        print(json.dumps({"name": target.name, "trash": str(moved)}))
    else:
        print(f"moved {target.name} to {moved}; to restore it: {shlex.join(['mv', str(moved), str(target.path)])}")
    return 0


def _rename(target: RunDir, args: argparse.Namespace) -> int:
    renamed = rename_run(target, args.new_name)
    print(json.dumps({"name": renamed.name, "path": str(renamed.path)}) if args.json
          else f"renamed {target.name} to {renamed.name} ({renamed.path})")
    return 0


def _note(target: RunDir, args: argparse.Namespace) -> int:
    note = set_note(target, args.text)
    if args.json:
        print(json.dumps({"name": target.name, "note": note}, ensure_ascii=False))
    else:
        print(f"{target.name}: {note}" if note else f"{target.name}: note removed")
    return 0


MANAGING = {"delete": _delete, "rename": _rename, "note": _note}


def _print_table(infos: list[RunInfo], as_json: bool) -> int:
    if as_json:
        print(json.dumps([info.to_dict() for info in infos], ensure_ascii=False, indent=2))
        return 0
    if not infos:
        print("no runs yet")
        return 0
    now = time.time()
    header = ("NAME", "STATE", "STEP", "LOSS", "VAL", "BPB", "TOK/S", "MFU", "AGE", "NOTE")
    rows = [
        (
            info.name,
            info.state_words(now),
            f"{_or_dash(info.step)}/{_or_dash(info.max_steps)}",
            _number(info.loss, ".4f"),
            _number(info.val_loss, ".4f"),
            _number(info.val_bpb if info.val_bpb is not None else info.bpb, ".3f"),
            _number(info.tokens_per_s, ",.0f"),
            _number(info.mfu, ".1%"),
            format_duration(info.age_s(now)),
            "; ".join(note for note in (_parent_note(info), info.note, info.reason, _kill_note(info, now), _incomplete_note(info),
                                        _alerts_note(info)) if note),
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _print_show(target: RunDir, as_json: bool, log_lines: int) -> int:
    info = run_info(target)
    rows = latest_rows(target.metrics_path)
    checkpoints = target.checkpoints()
    log = tail_lines(target.log_path, log_lines)
    settings = run_settings(target)
    if as_json:
        print(json.dumps({"run": info.to_dict(), "status": target.read_status(), "latest_rows": rows,
                          "checkpoints": [c.step for c in checkpoints], "settings": dict(settings), "log": log},
                         ensure_ascii=False, indent=2))
        return 0
    now = time.time()
    print(f"run         {info.name}  ({info.path})")
    print(f"state       {info.state_words(now)}" + (f" - {info.reason}" if info.reason else ""))
    kill = _kill_note(info, now)
    if kill:
        print(f"            {kill}")
    if info.note:
        print(f"note        {info.note}")
    print(f"process     pid {_or_dash(info.pid)} on {_or_dash(info.host)}, world size {_or_dash(info.world_size)}")
    print(f"step        {_or_dash(info.step)}/{_or_dash(info.max_steps)}")
    print(f"created     {_clock(info.created)} ({format_duration(info.age_s(now))} ago)")
    print(f"started     {_clock(info.started)}")
    print(f"updated     {_clock(info.updated)}")
    print("\n".join(format_settings(settings)))
    measures = _measures_line(info, rows.get("baselines"))
    if measures:
        print(textwrap.fill(measures, 80, initial_indent="measures    ", subsequent_indent=" " * 12))
    for kind in ("train", "eval", "sample", "baselines"):
        if kind in rows:
            print(f"last {kind:<6} {json.dumps(rows[kind], ensure_ascii=False)}")
    names = ", ".join(c.path.name for c in checkpoints) or "none"
    latest = ""
    if info.latest_checkpoint is not None:
        latest = f" (latest {info.latest_checkpoint}{', INCOMPLETE' if info.latest_checkpoint_problem else ''})"
    print(f"checkpoints {names}{latest}")
    if info.latest_checkpoint_problem:
        print(f"            {info.latest_checkpoint_problem}")
    if log:
        print(f"--- last {len(log)} lines of {target.log_path}")
        print("\n".join(log))
    return 0


def _measures_line(info: RunInfo, baselines: dict | None) -> str:
    """Bits per byte, MFU and the baselines, as far as the run has written them."""
    parts = []
    bpb = [f"{value:.3f} {what}" for value, what in ((info.val_bpb, "val"), (info.bpb, "train")) if value is not None]
    if bpb:
        parts.append(f"bits per byte {', '.join(bpb)}")
    if info.mfu is not None:
        parts.append(f"MFU {info.mfu:.1%}")
    if baselines:
        parts.append(f"baselines: uniform {_number(baselines.get('uniform_loss'), '.3f')}, "
                     f"unigram {_number(baselines.get('unigram_loss'), '.3f')}")
    return "; ".join(parts)


def _parent_note(info: RunInfo) -> str | None:
    return run_lineage(RunDir(info.path))


def _kill_note(info: RunInfo, now: float) -> str | None:
    if not info.stop_overdue(now):
        return None
    return f"the stop has not ended yet: `babyllama runs kill {info.path}` ends it without a checkpoint"


def _incomplete_note(info: RunInfo) -> str | None:
    if not info.latest_checkpoint_problem:
        return None
    return f"latest checkpoint, step {info.latest_checkpoint}, is incomplete: `babyllama runs show {info.path}` says what to do"


def _alerts_note(info: RunInfo) -> str | None:
    """How many health events the run recorded, and the newest in its own words."""
    if not info.alerts:
        return None
    count = f"{info.alerts} alert{'s' if info.alerts != 1 else ''}"
    last = info.last_alert or {}
    if not isinstance(last.get("step"), int) or not isinstance(last.get("message"), str):
        return count
    return f"{count}, the last at step {last['step']:,}: {alert_words(last['step'], last['message'])}"


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _clock(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
