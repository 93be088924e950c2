"""OpenFolderDialog: a folder (or a single corpus file) outside data/ to list beside it."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from babyllama_tui.widgets.dialog import Dialog


class OpenFolderDialog(Dialog[Path | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(id="open-folder-dialog", classes="corpora-dialog") as dialog:
            dialog.border_title = "Open a folder of corpora"
            # A Static wraps where a Label would be cut at 80 columns.
            yield Static("A folder (each file or folder in it is a corpus) or one corpus file:")
            yield Input(placeholder="path, relative to the project or absolute", id="folder-path", compact=True)
            yield Static(id="open-message")
            yield Static("enter opens · esc cancels", classes="corpora-dialog-keys")

    @on(Input.Submitted)
    def open_path(self, event: Input.Submitted) -> None:
        given = event.value.strip()
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = self.root / path
        if not given or not path.exists():
            self.query_one("#open-message", Static).update(Text(f"{given or '(empty)'}: no such file or folder", "bold red"))
            return
        self.dismiss(path.resolve())

    def action_cancel(self) -> None:
        self.dismiss(None)
