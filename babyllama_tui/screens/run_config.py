"""RunConfigScreen: how a run was started (shape, parameters, tokens per step, learning-rate schedule,
data, tokenizer, the command line), as `babyllama runs show` says it (`babyllama.runs.settings`).

Opened from the Monitor and from the Train screen's runs table. The values wrap beside their
labels, so a long path or command line is read whole at 80 columns.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from babyllama.runs import RunDir
from babyllama.runs.settings import run_settings

KEYS = "↑↓ pgup pgdn home end · esc closes"


def settings_table(run: Path) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("folder", Text(str(run)))
    for label, value in run_settings(RunDir(run)):
        table.add_row(label, Text(value))
    return table


class RunConfigScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, run: Path) -> None:
        super().__init__(classes="dialog-screen")
        self.run = run

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="run-config") as scroll:
            scroll.border_title = f"How {self.run.name} was started"
            scroll.border_subtitle = KEYS
            yield Static(settings_table(self.run), id="run-config-settings")

    def on_mount(self) -> None:
        self.query_one("#run-config").focus()
