"""PickRunScreen: choose a run from a list (to monitor it, or to compare with the one shown)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from babyllama_tui.training.formatting import format_loss, format_steps
from babyllama_tui.training.runs_watcher import RunRow
from babyllama_tui.widgets.runs_table import STATE_STYLES

NO_RUN = "-"


@dataclass(frozen=True)
class PickedRun:
    """The answer: a run, or None when the user chose "none" (cancelling dismisses with None instead)."""

    path: Path | None


def run_prompt(row: RunRow) -> Text:
    text = Text(row.name, style="bold")
    text.append(f"  {row.state}", style=STATE_STYLES.get(row.state, ""))
    text.append(f"  step {format_steps(row.step, row.max_steps)}  loss {format_loss(row.loss)}", style="dim")
    return text


class PickRunScreen(ModalScreen[PickedRun | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, rows: list[RunRow], *, none_label: str | None = None,
                 current: Path | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._rows = rows
        self._none_label = none_label
        self._current = current

    def compose(self) -> ComposeResult:
        options = [Option(run_prompt(row), id=str(row.path)) for row in self._rows]
        if self._none_label is not None:
            options.insert(0, Option(Text(self._none_label, style="italic"), id=NO_RUN))
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            if options:
                yield OptionList(*options, id="run-options")
            else:
                yield Label("No runs yet: start one on the Train screen (2).", classes="dialog-body")

    def on_mount(self) -> None:
        if self._current is not None and self.query("#run-options"):
            options = self.query_one("#run-options", OptionList)
            try:
                options.highlighted = options.get_option_index(str(self._current))
            except LookupError:
                pass

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        chosen = event.option.id
        self.dismiss(PickedRun(None if chosen == NO_RUN else Path(chosen)))
