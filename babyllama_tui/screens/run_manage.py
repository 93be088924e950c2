"""Delete (to the trash), rename and annotate a run from the Train screen: ask, then call babyllama.runs.

After a move the app is told (`BabyLlamaApp.run_moved`), so what pointed at the old folder follows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.screen import Screen

from babyllama.errors import UserError
from babyllama.runs import RunDir, note_problem, rename_problem, rename_run, set_note, trash_dir, trash_run
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.screens.run_text import RunTextScreen


def shown(path: Path, root: Path) -> str:
    """`path` relative to the project when it is inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def request_delete(screen: Screen, path: Path, done: Callable[[], None]) -> None:
    app = screen.app
    trash = shown(trash_dir(path), app.root)
    question = ConfirmScreen(
        f"Delete {path.name}?",
        f"Its folder, with its checkpoints, metrics and log, moves to {trash}/{path.name}-<time>. "
        f"Nothing is erased: move it back to {shown(path, app.root)} to restore it.",
        "Delete",
    )

    def answered(yes: bool | None) -> None:
        if not yes:
            return
        try:
            moved = trash_run(path)
        except UserError as e:
            screen.notify(str(e), severity="error")
            return
        app.run_moved(path, None)
        screen.notify(f"moved {path.name} to {shown(moved, app.root)}")
        done()

    app.push_screen(question, answered)


def request_rename(screen: Screen, path: Path, done: Callable[[Path], None]) -> None:
    app = screen.app

    def chosen(name: str | None) -> None:
        if name is None:
            return
        try:
            renamed = rename_run(path, name.strip())
        except UserError as e:
            screen.notify(str(e), severity="error")
            return
        app.run_moved(path, renamed.path)
        screen.notify(f"renamed {path.name} to {renamed.name}")
        done(renamed.path)

    question = RunTextScreen(
        f"Rename {path.name}",
        "Its folder is renamed; checkpoints, metrics and log go with it.",
        "new name",
        path.name,
        "Rename",
        lambda text: rename_problem(path, text.strip()),
    )
    app.push_screen(question, chosen)


def request_note(screen: Screen, path: Path, done: Callable[[], None]) -> None:
    def chosen(text: str | None) -> None:
        if text is None:
            return
        try:
            note = set_note(path, text)
        except UserError as e:
            screen.notify(str(e), severity="error")
            return
        screen.notify(f"{path.name}: {note}" if note else f"{path.name}: note removed")
        done()

    question = RunTextScreen(
        f"Note on {path.name}",
        "A line of your own, shown below the runs table and by `babyllama runs`; empty removes it.",
        "note",
        RunDir(path).read_note() or "",
        "Save",
        note_problem,
    )
    screen.app.push_screen(question, chosen)
