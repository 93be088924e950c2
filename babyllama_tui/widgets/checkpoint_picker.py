"""CheckpointPicker: choose what the playground continues prompts with, from the keyboard.

The list holds every saved step of every run under out/runs (runs with the newest checkpoint
first, each run's newest step first) and every exported Hugging Face Llama folder under out/.
Typing filters it; typing a path offers that folder instead (an export elsewhere, a checkpoint
folder). Up and down move through the list without leaving the line; enter loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from babyllama.runs import RunDir
from babyllama_tui.widgets.dialog import Dialog

NO_CHECKPOINT = "-"
TYPED_PATH = "path"
# Folders under out/ that hold no exports, and how deep below out/ exports are looked for.
NOT_EXPORTS = {"runs", "tokenizers"}
EXPORT_DEPTH = 2


@dataclass(frozen=True)
class CheckpointChoice:
    path: Path
    label: str  # short, for a panel's title: "tiny step 1,000"
    detail: str = ""  # "latest", "hf export", ...


@dataclass(frozen=True)
class PickedCheckpoint:
    """The answer: a checkpoint, or None when the user chose "none" (cancelling dismisses with None instead)."""

    choice: CheckpointChoice | None


def moved_choice(choice: CheckpointChoice, old: Path, new: Path) -> CheckpointChoice:
    """`choice` after the run folder `old` it is in was renamed to `new`."""
    label = choice.label
    if label.startswith(f"{old.name} "):
        label = new.name + label[len(old.name):]
    return dataclasses.replace(choice, path=new / choice.path.relative_to(old), label=label)


def run_checkpoints(runs_dir: Path) -> list[CheckpointChoice]:
    found: list[tuple[float, list[CheckpointChoice]]] = []
    if not runs_dir.is_dir():
        return []
    for entry in os.scandir(runs_dir):
        if not entry.is_dir():
            continue
        run = RunDir(entry.path)
        saved = run.checkpoints()
        if not saved:
            continue
        latest = run.latest_checkpoint()
        choices = [CheckpointChoice(ckpt.path, f"{run.name} step {ckpt.step:,}", "latest" if ckpt == latest else "")
                   for ckpt in reversed(saved)]
        try:
            newest = max(ckpt.path.stat().st_mtime for ckpt in saved)
        except FileNotFoundError:  # pruned while we looked
            newest = 0.0
        found.append((newest, choices))
    found.sort(key=lambda item: item[0], reverse=True)
    return [choice for _, choices in found for choice in choices]


def is_hf_llama(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "llama"


def exported_folders(out_dir: Path, root: Path) -> list[CheckpointChoice]:
    found = []
    level = [Path(e.path) for e in os.scandir(out_dir) if e.is_dir() and e.name not in NOT_EXPORTS] \
        if out_dir.is_dir() else []
    for _ in range(EXPORT_DEPTH):
        below = []
        for folder in sorted(level):
            if is_hf_llama(folder):
                found.append(CheckpointChoice(folder, shown_path(folder, root), "hf export"))
            else:
                below += [Path(e.path) for e in os.scandir(folder) if e.is_dir()]
        level = below
    return found


def list_checkpoints(root: Path) -> list[CheckpointChoice]:
    """Run checkpoints, newest first, then exported folders."""
    return run_checkpoints(root / "out" / "runs") + exported_folders(root / "out", root)


def shown_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def folder_choice(typed: str, root: Path) -> tuple[CheckpointChoice | None, str]:
    """(choice, "") for a typed folder that could hold a model, else (None, why not)."""
    path = Path(typed).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        return None, f"{typed}: no such folder"
    run = RunDir(path)
    if run.checkpoints_dir.is_dir():
        latest = run.latest_checkpoint()
        if latest is None:
            return None, f"{typed}: the run has no complete checkpoint yet"
        return CheckpointChoice(latest.path, f"{run.name} step {latest.step:,}", "latest"), ""
    if not (path / "config.json").is_file():
        return None, f"{typed}: no config.json; give a checkpoint folder, a run or an exported folder"
    detail = "hf export" if is_hf_llama(path) else ""
    return CheckpointChoice(path.resolve(), shown_path(path, root), detail), ""


def looks_like_path(typed: str) -> bool:
    return typed.startswith(("/", ".", "~")) or "/" in typed


def choice_prompt(choice: CheckpointChoice) -> Text:
    text = Text(choice.label, style="bold")
    if choice.detail:
        text.append(f"  {choice.detail}", style="dim")
    return text


class FilterInput(Input):
    """The picker's filter line, which keeps the focus: up and down move through the list below.

    Bound here rather than on the screen so that they come before Input's own up and down
    (scrolling, which a one-line field never needs) instead of relying on those to pass the
    key on: the app runs a text field's first binding of a key itself (textual_fixes.KeysInOrderApp)."""

    BINDINGS = [
        Binding("up", "screen.move(-1)", "Up", show=False),
        Binding("down", "screen.move(1)", "Down", show=False),
        Binding("pageup", "screen.move(-10)", "Page up", show=False),
        Binding("pagedown", "screen.move(10)", "Page down", show=False),
    ]


class CheckpointPicker(Dialog[PickedCheckpoint | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, root: Path, *, none_label: str | None = None, current: Path | None = None,
                 other: Path | None = None) -> None:
        """`current` is highlighted first; else, with `other` (the checkpoint to compare with), the first one
        that is not `other`."""
        super().__init__(classes="dialog-screen")
        self._title = title
        self.root = root
        self.choices = list_checkpoints(root)
        self._none_label = none_label
        self._current = current
        self._other = other
        self._typed_choice: CheckpointChoice | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="checkpoint-picker"):
            yield Label(self._title, classes="dialog-title")
            yield FilterInput(placeholder="filter, or a folder path", id="checkpoint-filter", compact=True)
            yield OptionList(id="checkpoint-options")
            yield Static("", id="checkpoint-message")
            yield Static("type to filter, or a path · ↑↓ choose · enter loads · esc cancels",
                         classes="corpora-dialog-keys")

    def on_mount(self) -> None:
        self._show("")
        options = self.query_one(OptionList)
        if self._current is not None:
            try:
                options.highlighted = options.get_option_index(str(self._current))
            except LookupError:
                pass
        elif self._other is not None:
            others = [c for c in self.choices if c.path != self._other]
            if others:
                options.highlighted = options.get_option_index(str(others[0].path))

    @on(Input.Changed)
    def _filter(self, event: Input.Changed) -> None:
        self._show(event.value.strip())

    def _show(self, typed: str) -> None:
        options = self.query_one(OptionList)
        words = typed.lower().split()
        shown = [Option(choice_prompt(c), id=str(c.path)) for c in self.choices
                 if all(word in f"{c.label} {c.detail}".lower() for word in words)]
        message = ""
        self._typed_choice = None
        if typed and looks_like_path(typed):
            self._typed_choice, message = folder_choice(typed, self.root)
            if self._typed_choice is not None:
                shown.insert(0, Option(Text.assemble(("open ", "dim"), choice_prompt(self._typed_choice)), id=TYPED_PATH))
        if self._none_label is not None and not typed:
            shown.insert(0, Option(Text(self._none_label, style="italic"), id=NO_CHECKPOINT))
        if not shown and not message:
            message = "nothing saved matches; a run saves checkpoints as it trains" if typed else \
                "no checkpoints yet: train a run (screen 2), or type the path of an exported folder"
        options.clear_options()
        options.add_options(shown)
        if shown:
            options.highlighted = 0
        self.query_one("#checkpoint-message", Static).update(Text(message, style="yellow"))

    def action_move(self, step: int) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            current = options.highlighted if options.highlighted is not None else 0
            options.highlighted = max(0, min(options.option_count - 1, current + step))

    @on(Input.Submitted)
    def _submitted(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self._choose(options.get_option_at_index(options.highlighted).id)

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id)

    def _choose(self, option_id: str | None) -> None:
        if option_id == NO_CHECKPOINT:
            self.dismiss(PickedCheckpoint(None))
        elif option_id == TYPED_PATH:
            self.dismiss(PickedCheckpoint(self._typed_choice))
        else:
            self.dismiss(PickedCheckpoint(next(c for c in self.choices if str(c.path) == option_id)))
