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
from textual.widgets import Static

from babyllama.runs import RunDir
from babyllama.runs.settings import format_settings, run_settings
from babyllama_tui.widgets.dialog import Dialog

KEYS = "↑↓ pgup pgdn home end · ctrl+c copies · esc closes"


def settings_table(run: Path) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("folder", Text(str(run)))
    for label, value in run_settings(RunDir(run)):
        table.add_row(label, Text(value))
    return table


class RunConfigScreen(Dialog[None]):
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

    async def interrupt(self) -> None:
        """ctrl+c copies what is shown, each value on one line (a command line pastes whole)."""
        lines = format_settings([("folder", str(self.run)), *run_settings(RunDir(self.run))], width=1_000_000)
        self.app.copy_to_clipboard("\n".join(lines) + "\n")
        self.notify(f"How {self.run.name} was started: copied")
