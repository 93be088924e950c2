"""PickRunScreen: choose a run from a list (to monitor it); PickRunsScreen: choose the runs to
compare with the one shown, those of the same data and tokenizer first and marked."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option
from textual.widgets.selection_list import Selection

from babyllama_tui.training.formatting import format_loss, format_steps
from babyllama_tui.training.runs_watcher import RunRow
from babyllama_tui.widgets.check_list import CheckList
from babyllama_tui.widgets.dialog import Dialog
from babyllama_tui.widgets.runs_table import STATE_STYLES

SAME_DATA = "same data"


def run_prompt(row: RunRow, same_data: bool = False) -> Text:
    text = Text(row.name, style="bold")
    text.append(f"  {row.state}", style=STATE_STYLES.get(row.state, ""))
    text.append(f"  step {format_steps(row.step, row.max_steps)}  loss {format_loss(row.loss)}", style="dim")
    if same_data:
        text.append(f"  {SAME_DATA}", style="green")
    return text


class PickRunScreen(Dialog[Path | None]):
    """The run chosen; cancelling dismisses with None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, rows: list[RunRow], *, current: Path | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._rows = rows
        self._current = current

    def compose(self) -> ComposeResult:
        options = [Option(run_prompt(row), id=str(row.path)) for row in self._rows]
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
        self.dismiss(Path(event.option.id))


class RunChoiceList(CheckList[Path]):
    """Space toggles a run; Enter confirms the choice (a SelectionList would toggle on it too)."""

    BINDINGS = [
        Binding("space", "toggle_highlighted", "Choose", show=False),
        Binding("enter", "screen.confirm", "Compare", show=False),
    ]

    def action_toggle_highlighted(self) -> None:
        """At once: SelectionList toggles through a message, which an Enter typed right after the
        space (both in one packet over SSH) overtook, confirming the choice without that run."""
        if self.highlighted is not None:
            self.toggle(self.get_option_at_index(self.highlighted))


class PickRunsScreen(Dialog[list[Path] | None]):
    """The runs chosen, in the list's order (none: no comparison); cancelling dismisses with None."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("c", "clear", "Clear all"),
    ]

    def __init__(self, title: str, rows: list[RunRow], chosen: list[Path], suggested: set[Path] = frozenset()) -> None:
        """`suggested`: the runs of the same data and tokenizer, marked (the caller lists them first)."""
        super().__init__(classes="dialog-screen")
        self._title = title
        self._rows = rows
        self._chosen = set(chosen)
        self._suggested = suggested

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            if self._rows:
                yield RunChoiceList(
                    *(Selection(run_prompt(row, row.path in self._suggested), row.path, row.path in self._chosen)
                      for row in self._rows),
                    id="run-choices",
                )
                yield Label("space choose · enter compare · c clear all · esc cancel", classes="dialog-keys")
                if self._suggested:
                    # One line at 80 columns: p is the Monitor's key for the previous such run.
                    yield Label(f"{SAME_DATA} = same token files and tokenizer (p: the previous one)",
                                classes="dialog-keys")
            else:
                yield Label("No other run yet: start one on the Train screen (2).", classes="dialog-body")

    def action_clear(self) -> None:
        for choices in self.query(RunChoiceList):
            choices.deselect_all()

    def action_confirm(self) -> None:
        choices = self.query(RunChoiceList)
        chosen = set(choices.first().selected) if choices else set()
        self.dismiss([row.path for row in self._rows if row.path in chosen])
