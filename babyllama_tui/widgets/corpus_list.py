"""CorpusList: corpus files and folders with format, size and a document estimate; marks the
ones to tokenize. Space marks a row and steps to the next, as in file pickers, so a run of
rows is marked by holding it down."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from babyllama_tui.corpora.listing import CorpusEntry, elide_middle, format_bytes, format_count

MARK = "✓"
NAME_MIN_WIDTH = 12
# Widths of the columns after the name, cell padding included, and a column for the vertical
# scrollbar, which comes with more rows than fit without a resize to make room for it.
OTHER_COLUMNS_WIDTH = 3 + 19 + 11 + 10 + 8 + 1
# The longest --format name, sft-conversations (cut to "sft-conversa", it no longer said what the corpus holds).
FORMAT_WIDTH = 17


class CorpusList(DataTable):
    """One row a corpus; space marks a row as a source for the next prepare."""

    BINDINGS = [Binding("space", "toggle_mark", "Mark", tooltip="Mark or unmark the row, then step down")]

    class MarksChanged(Message):
        def __init__(self, marked: list[Path]) -> None:
            super().__init__()
            self.marked = marked

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.entries: dict[str, CorpusEntry | None] = {}
        self.labels: dict[str, str] = {}
        self.marked: list[Path] = []

    def on_mount(self) -> None:
        self.add_column("", width=1, key="mark")
        self.add_column("Corpus", width=NAME_MIN_WIDTH, key="name")
        self.add_column("Format", width=FORMAT_WIDTH, key="format")
        self.add_column("Size", width=9, key="size")
        self.add_column("Docs", width=8, key="docs")
        self.add_column("Files", width=6, key="files")

    def on_resize(self) -> None:
        name_width = max(NAME_MIN_WIDTH, self.size.width - OTHER_COLUMNS_WIDTH - 2)
        column = self.columns.get("name")
        if column is not None and column.width != name_width:
            column.width = name_width
            # Names are shortened to the column in the middle, not by the table at their end.
            for key, label in self.labels.items():
                self.update_cell(key, "name", self.name_cell(label, self.entries[key]))
            self.refresh(layout=True)
            self._require_update_dimensions = True

    def show_paths(self, paths: list[tuple[Path, str]]) -> None:
        """List (path, label) rows; known entries keep their details, new ones wait for them."""
        keep = self.cursor_row_key()
        self.clear()
        self.entries = {str(path): self.entries.get(str(path)) for path, _ in paths}
        self.labels = {str(path): label for path, label in paths}
        self.marked = [path for path in self.marked if str(path) in self.entries]
        for path, label in paths:
            self.add_row(*self._cells(path, label, self.entries[str(path)]), key=str(path))
        if keep in self.entries:
            self.move_cursor(row=self.get_row_index(keep))

    def show_entry(self, entry: CorpusEntry) -> None:
        key = str(entry.path)
        if key not in self.entries:
            return
        self.entries[key] = entry
        for column, value in zip(("mark", "name", "format", "size", "docs", "files"),
                                 self._cells(entry.path, self.labels[key], entry)):
            self.update_cell(key, column, value)

    def name_cell(self, label: str, entry: CorpusEntry | None) -> Text:
        column = self.columns.get("name")
        width = column.width if column is not None else NAME_MIN_WIDTH
        return Text(elide_middle(label + ("/" if entry is not None and entry.is_folder else ""), width), no_wrap=True)

    def _cells(self, path: Path, label: str, entry: CorpusEntry | None) -> tuple:
        mark = Text(MARK, style="bold green") if path in self.marked else ""
        name = self.name_cell(label, entry)
        if entry is None:
            return mark, name, Text("…", style="dim"), "", "", ""
        more = "" if entry.complete else "+"
        fmt = Text(entry.format) if entry.format else Text("?", style="bold yellow")
        docs = format_count(entry.documents, approximate=not entry.documents_exact) if entry.documents is not None else "?"
        return (
            mark,
            name,
            fmt,
            Text(format_bytes(entry.size) + more, justify="right"),
            Text(docs + more, justify="right"),
            Text(f"{entry.files:,}{more}", justify="right"),
        )

    def cursor_row_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def highlighted(self) -> tuple[Path, CorpusEntry | None] | None:
        key = self.cursor_row_key()
        return (Path(key), self.entries.get(key)) if key is not None else None

    def action_toggle_mark(self) -> None:
        key = self.cursor_row_key()
        if key is None:
            return
        path = Path(key)
        if path in self.marked:
            self.marked.remove(path)
        else:
            self.marked.append(path)
        self.update_cell(key, "mark", Text(MARK, style="bold green") if path in self.marked else "")
        self.post_message(self.MarksChanged(list(self.marked)))
        if self.cursor_row < self.row_count - 1:
            self.move_cursor(row=self.cursor_row + 1)
