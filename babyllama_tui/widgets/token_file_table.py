"""TokenFileTable: token files with their manifests, and unfinished ones with their progress."""

from __future__ import annotations

import time
from dataclasses import replace

from rich.text import Text
from textual.widgets import DataTable

from babyllama_tui.corpora.listing import TokenFileEntry, TokenFileState, elide_middle, format_count

NAME_MIN_WIDTH = 12
PROGRESS_REDRAW_S = 1.0
TOKENIZER_MIN_WIDTH = 10
# State, tokens, docs and dtype columns, cell padding included, and the padding of the two
# columns that share what is left.
FIXED_COLUMNS_WIDTH = 18 + 10 + 10 + 8 + 4
STATE_STYLES = {
    TokenFileState.READY: "green",
    TokenFileState.PREPARING: "bold yellow",
    TokenFileState.INTERRUPTED: "yellow",
    TokenFileState.BROKEN: "bold red",
}


def describe_state(entry: TokenFileEntry) -> str:
    percent = f" {entry.done_fraction:.0%}" if entry.done_fraction is not None else ""
    if entry.state == TokenFileState.INTERRUPTED:
        return f"interrupted{percent}"
    if entry.state == TokenFileState.PREPARING:
        return f"preparing{percent}"
    return entry.state


class TokenFileTable(DataTable):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.entries: dict[str, TokenFileEntry] = {}
        self.labels: dict[str, str] = {}
        self.progress_drawn = float("-inf")

    def on_mount(self) -> None:
        self.add_column("Token file", width=NAME_MIN_WIDTH, key="name")
        self.add_column("State", width=16, key="state")
        self.add_column("Tokens", width=8, key="tokens")
        self.add_column("Docs", width=8, key="docs")
        self.add_column("dtype", width=6, key="dtype")
        self.add_column("Tokenizer", width=TOKENIZER_MIN_WIDTH, key="tokenizer")

    def on_resize(self) -> None:
        spare = max(0, self.size.width - FIXED_COLUMNS_WIDTH - NAME_MIN_WIDTH - TOKENIZER_MIN_WIDTH - 2)
        widths = {"name": NAME_MIN_WIDTH + spare * 3 // 5, "tokenizer": TOKENIZER_MIN_WIDTH + spare - spare * 3 // 5}
        changed = False
        for key, width in widths.items():
            column = self.columns.get(key)
            if column is not None and column.width != width:
                column.width = width
                changed = True
        if changed:
            # Names are shortened to the column in the middle, not by the table at their end.
            for key, label in self.labels.items():
                self.update_cell(key, "name", self.name_cell(label))
            self._require_update_dimensions = True
            self.refresh(layout=True)

    def show_entries(self, entries: list[tuple[TokenFileEntry, str]]) -> None:
        """List (entry, label) rows, keeping the cursor on the same file when it is still there."""
        keep = self.cursor_row_key()
        self.clear()
        self.entries = {str(entry.path): entry for entry, _ in entries}
        self.labels = {str(entry.path): label for entry, label in entries}
        for entry, label in entries:
            self.add_row(*self._cells(entry, label), key=str(entry.path))
        if keep in self.entries:
            self.move_cursor(row=self.get_row_index(keep))

    def show_progress(self, key: str, event: dict) -> bool:
        """A progress event of the prepare writing this file: its state, tokens and documents.
        Drawn at most once a second, and only when the percentage moved; True when drawn."""
        entry = self.entries.get(key)
        total = event.get("total_bytes") or 0
        if entry is None or not total:
            return False
        updated = replace(entry, done_fraction=event["bytes"] / total, tokens=event["tokens"], documents=event["documents"])
        now = time.monotonic()
        if describe_state(updated) == describe_state(entry) or now - self.progress_drawn < PROGRESS_REDRAW_S:
            return False
        self.progress_drawn = now
        self.entries[key] = updated
        for column, value in zip(("state", "tokens", "docs"), self._cells(updated, "")[1:4]):
            self.update_cell(key, column, value)
        return True

    def select_path(self, key: str) -> bool:
        if key not in self.entries:
            return False
        self.move_cursor(row=self.get_row_index(key))
        return True

    def name_cell(self, label: str) -> Text:
        column = self.columns.get("name")
        return Text(elide_middle(label, column.width if column is not None else NAME_MIN_WIDTH), no_wrap=True)

    def _cells(self, entry: TokenFileEntry, label: str) -> tuple:
        tokenizer = entry.tokenizer_name or (entry.tokenizer_fingerprint or "")[:15] or "-"
        return (
            self.name_cell(label),
            Text(describe_state(entry), style=STATE_STYLES.get(entry.state, "")),
            Text(format_count(entry.tokens), justify="right"),
            Text(format_count(entry.documents), justify="right"),
            Text(entry.dtype or "-"),
            Text(tokenizer, overflow="ellipsis", no_wrap=True),
        )

    def cursor_row_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def highlighted(self) -> TokenFileEntry | None:
        key = self.cursor_row_key()
        return self.entries.get(key) if key is not None else None
