"""Managing run directories: the rule for run names, moving a run to the trash, renaming it, its note.

A run that is active (starting, running, stopping) is neither moved nor renamed: its trainer
writes to the folder by its path. Both moves are renames on one filesystem, under the run's
status lock, so a trainer cannot claim the run halfway. See docs/ARCHITECTURE.md, "The run directory".
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, atomic_write_json, fsync_dir
from babyllama.runs.liveness import ACTIVE_STATES, effective_state
from babyllama.runs.rundir import RunDir, as_run

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RUN_NAME_RULE = "a run name is letters, digits, '.', '_' and '-', starting with a letter or digit"
# Beside the folder of runs: out/runs/NAME goes to out/trash/NAME-YYYYmmdd-HHMMSS.
TRASH_DIR = "trash"
NOTE_MAX_CHARS = 200


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run, or None when it can (whether it is taken is the caller's to check)."""
    return None if RUN_NAME.fullmatch(name) else RUN_NAME_RULE


def rename_problem(run: RunDir | str | os.PathLike, new_name: str) -> str | None:
    """Why `run` cannot be renamed to `new_name` whatever its state (a bad or taken name), or None."""
    run = as_run(run)
    problem = run_name_problem(new_name)
    if problem is not None:
        return problem
    if new_name == run.name:
        return f"{run.name} already has that name"
    if os.path.lexists(run.path.parent / new_name):
        return f"{run.path.parent / new_name} exists; choose another name"
    return None


def note_problem(text: str) -> str | None:
    """Why `text` cannot be a run's note (it is too long), or None."""
    length = len(" ".join(text.split()))
    return None if length <= NOTE_MAX_CHARS else f"a note is at most {NOTE_MAX_CHARS} characters; this one has {length}"


def trash_dir(run: RunDir | str | os.PathLike) -> Path:
    """Where `run` goes when it is deleted: `trash/` beside the folder holding it, found through any
    symbolic link so that it is on the run's filesystem."""
    return as_run(run).path.resolve().parent.parent / TRASH_DIR


def trash_run(run: RunDir | str | os.PathLike, *, now: float | None = None) -> Path:
    """Move `run` into the trash as NAME-YYYYmmdd-HHMMSS (-2, -3 ... when taken); returns where it went.

    Nothing is deleted: moving the folder back restores the run."""
    run = _existing(run)
    trash = trash_dir(run)
    stem = f"{run.name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(time.time() if now is None else now))}"
    target, n = trash / stem, 1
    while os.path.lexists(target):
        n += 1
        target = trash / f"{stem}-{n}"
    try:
        with run.status_lock():
            _refuse_if_active(run, "delete")
            trash.mkdir(parents=True, exist_ok=True)
            os.rename(run.path, target)
        fsync_dir(trash)
        fsync_dir(run.path.parent)
    except OSError as e:
        raise UserError(f"cannot move {run.path} to {target}: {e.strerror or e}") from None
    return target


def rename_run(run: RunDir | str | os.PathLike, new_name: str) -> RunDir:
    """Rename `run` to `new_name` in the same folder; returns the run under its new name.

    Paths to the old folder that status.json holds (the launch command, an error's advice to
    resume) are rewritten to the new one."""
    run = _existing(run)
    problem = rename_problem(run, new_name)
    if problem is not None:
        raise UserError(f"cannot rename {run.name} to {new_name!r}: {problem}")
    renamed = RunDir(run.path.parent / new_name)
    # The trainer writes its folder's path absolute; launches write it resolved.
    moves = {run.path.absolute(): renamed.path.absolute(), run.path.resolve(): run.path.resolve().parent / new_name}
    try:
        with run.status_lock():
            _refuse_if_active(run, "rename")
            os.rename(run.path, renamed.path)
            _repoint_status(renamed, moves)
        fsync_dir(renamed.path.parent)
    except OSError as e:
        raise UserError(f"cannot rename {run.path} to {renamed.path}: {e.strerror or e}") from None
    return renamed


def set_note(run: RunDir | str | os.PathLike, text: str) -> str | None:
    """Give `run` a note of one line (runs of white space become one space); an empty text removes it.
    Returns the note kept, or None."""
    run = _existing(run)
    problem = note_problem(text)
    if problem is not None:
        raise UserError(problem)
    note = " ".join(text.split())
    try:
        if note:
            atomic_write_bytes(run.note_path, f"{note}\n".encode())
        else:
            run.note_path.unlink(missing_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {run.note_path}: {e.strerror or e}") from None
    return note or None


def _existing(run: RunDir | str | os.PathLike) -> RunDir:
    run = as_run(run)
    if not run.exists():
        raise UserError(f"{run.path} is not a run directory (it has no config.json or status.json)")
    return run


def _refuse_if_active(run: RunDir, doing: str) -> None:
    try:
        status = run.read_status()
    except UserError:
        return  # a status that cannot be read belongs to no live trainer: the run reads as failed
    state = effective_state(status).state
    if state in ACTIVE_STATES:
        raise UserError(
            f"cannot {doing} {run.name}: it is {state} (pid {status.get('pid')} on {status.get('host')}); "
            f"stop it first with `babyllama runs stop {run.path}`"
        )


def _repoint_status(run: RunDir, moves: dict[Path, Path]) -> None:
    """Rewrite each old path of `moves` to its new one in the status's command and error, keeping
    `updated`: the run's state did not change."""
    try:
        status = run.read_status()
    except UserError:
        return
    olds = sorted((str(old) for old in moves), key=len, reverse=True)
    pattern = re.compile("(" + "|".join(map(re.escape, olds)) + r")(?![A-Za-z0-9._-])")
    news = {str(old): str(new) for old, new in moves.items()}

    def repoint(text):
        return pattern.sub(lambda match: news[match.group(1)], text) if isinstance(text, str) else text

    changed = dict(status)
    if isinstance(status.get("error"), str):
        changed["error"] = repoint(status["error"])
    if isinstance(status.get("command"), list):
        changed["command"] = [repoint(arg) for arg in status["command"]]
    if changed != status:
        atomic_write_json(run.status_path, changed)
