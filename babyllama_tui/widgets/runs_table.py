"""RunsTable: every run under out/runs, newest first, with its state (or that it stalled or slowed),
progress, loss, speed, age, ETA, how many alerts it recorded and its model FLOPs utilisation."""

from __future__ import annotations

from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from babyllama.runs import format_duration
from babyllama_tui.training.formatting import format_count, format_loss, format_mfu, format_steps
from babyllama_tui.training.runs_watcher import RunRow

STATE_STYLES = {
    "starting": "bold cyan",
    "running": "bold green",
    "stopping": "bold yellow",
    "stopped": "yellow",
    "finished": "blue",
    "failed": "bold red",
    "cancelled": "yellow",
    "created": "dim",
}

COLUMNS = (
    ("name", "run"),
    ("state", "state"),
    ("step", "step"),
    ("loss", "loss"),
    ("tps", "tok/s"),
    ("age", "age"),
    ("eta", "ETA"),
    ("val", "val"),
    ("alerts", "alerts"),
    # Last: at 80 columns the table scrolls to it, the columns a user reads first stay in view.
    ("mfu", "MFU"),
)


# After the state of a run still stopping STOP_OVERDUE_S after its stop was asked, where there is
# room (the Monitor's status line, the Train screen's run detail): K is both screens' kill key.
KILL_HINT = " — K kills"
OVERDUE_STYLE = "bold red"
# A running run that stalled or slowed shows that word in place of `running`; the reason is in the run's detail.
HEALTH_STYLES = {"stalled": "bold red", "slow": "bold yellow"}
ALERTS_STYLE = "bold red"


def state_text(state: str, words: str | None = None, overdue: bool = False) -> Text:
    """`state` in its colour, as `words` ("stopping 42s") when given; red when a stop is overdue."""
    return Text(words or state, style=OVERDUE_STYLE if overdue else STATE_STYLES.get(state, ""))


def state_with_hint(state: str, words: str | None = None, overdue: bool = False) -> Text:
    """`state_text`, and how to kill a run whose stop is overdue."""
    text = state_text(state, words, overdue)
    if overdue:
        text.append(KILL_HINT, style=OVERDUE_STYLE)
    return text


def alerts_text(count: int) -> Text:
    """A run's alerts count, red; nothing when it has none."""
    return Text(f"{count:,}" if count else "", style=ALERTS_STYLE)


def row_cells(row: RunRow, now: float) -> tuple[Text | str, ...]:
    if row.health is not None:
        state = Text(row.health.mark, style=HEALTH_STYLES[row.health.mark])
    else:
        state = state_text(row.state, row.state_words(now), row.stop_overdue(now))
    return (
        Text(row.name, style="bold"),
        state,
        format_steps(row.step, row.max_steps),
        format_loss(row.loss),
        format_count(row.tokens_per_s),
        format_duration(row.age_s(now)),
        format_duration(row.eta_s) if row.eta_s is not None else "-",
        format_loss(row.val_loss),
        alerts_text(row.alerts),
        format_mfu(row.mfu) if row.mfu is not None else "",
    )


class RunsTable(DataTable):
    """Rows keyed by run directory; `show` touches only the cells whose text changed.

    A column widens when a changed cell outgrows it: sized by the first values shown, it cut
    "28/100" to "28/10". It does not narrow again until the rows are rebuilt, so an age or
    ETA that loses a digit does not shift the columns right of it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.runs: dict[Path, RunRow] = {}
        self._cells: dict[Path, tuple] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, rows: list[RunRow], now: float) -> None:
        order = [row.path for row in rows]
        if order != list(self.runs):
            self._rebuild(rows, now)
            return
        for row in rows:
            cells = row_cells(row, now)
            old = self._cells[row.path]
            for (key, _), cell, before in zip(COLUMNS, cells, old):
                if str(cell) != str(before) or (isinstance(cell, Text) and cell.style != getattr(before, "style", None)):
                    wider = cell_len(str(cell)) > self.columns[ColumnKey(key)].content_width
                    self.update_cell(str(row.path), key, cell, update_width=wider)
            self._cells[row.path] = cells
        self.runs = {row.path: row for row in rows}

    def _rebuild(self, rows: list[RunRow], now: float) -> None:
        order = [row.path for row in rows]
        highlighted = self.highlighted_run.path if self.highlighted_run else None
        self.clear()
        self.runs = {row.path: row for row in rows}
        self._cells = {}
        for row in rows:
            cells = row_cells(row, now)
            self._cells[row.path] = cells
            self.add_row(*cells, key=str(row.path))
        if highlighted in self.runs:
            self.move_cursor(row=order.index(highlighted), animate=False)

    def highlight(self, path: Path) -> None:
        """Put the cursor on the run at `path`, if it is shown."""
        if path in self.runs:
            self.move_cursor(row=list(self.runs).index(path), animate=False)

    @property
    def highlighted_run(self) -> RunRow | None:
        if not self.runs or self.cursor_row < 0 or self.cursor_row >= len(self.runs):
            return None
        return list(self.runs.values())[self.cursor_row]

