"""TokenFileTable: token files with their manifests, and unfinished ones with their progress."""

from __future__ import annotations

import time
from dataclasses import replace

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

from babyllama_tui.corpora.listing import TokenFileEntry, TokenFileState, elide_middle, format_count

NAME_MIN_WIDTH = 12
PROGRESS_REDRAW_S = 1.0
TOKENIZER_MIN_WIDTH = 10
# Tokens, docs and dtype columns, cell padding included, the padding of the state column and of
# the two columns that share what is left, and the cursor's margin.
FIXED_COLUMNS_WIDTH = 10 + 10 + 8 + 2 + 4 + 2
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
    if entry.state == TokenFileState.READY and entry.sft:
        return "ready SFT"
    return entry.state


def state_width(entries: list[TokenFileEntry]) -> int:
    """The widest state the rows can show, a percentage that grows to 100% included: "ready" needs
    5 cells and "interrupted 100%" 16, which at 80 columns the names need more."""
    growing = (TokenFileState.PREPARING, TokenFileState.INTERRUPTED)
    shown = [describe_state(replace(e, done_fraction=1.0) if e.state in growing else e) for e in entries]
    return max(map(len, ["State", *shown]))


def tokenizer_text(entry: TokenFileEntry) -> str:
    return entry.tokenizer_name or (entry.tokenizer_fingerprint or "")[:15] or "-"


def share_spare(spare: int, name_need: int, tokenizer_need: int) -> tuple[int, int]:
    """Cells beyond their minimums for the name and tokenizer columns: each its need up to its
    share (three fifths for names), then what the other leaves; names take what is left over."""
    tokenizer = min(tokenizer_need, spare - min(name_need, spare * 3 // 5))
    return spare - tokenizer, tokenizer


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
        if self._fit_columns():
            # Names are shortened to the column in the middle, not by the table at their end.
            for key, label in self.labels.items():
                self.update_cell(key, "name", self.name_cell(label))
            self._require_update_dimensions = True
            self.refresh(layout=True)

    def _fit_columns(self) -> bool:
        """Size the state column to its states, and share the rest of the width between the names
        and the tokenizers by what they need; True when a width changed."""
        entries = list(self.entries.values())
        state = state_width(entries)
        spare = max(0, self.size.width - FIXED_COLUMNS_WIDTH - state - NAME_MIN_WIDTH - TOKENIZER_MIN_WIDTH)
        name_need = max((cell_len(label) for label in self.labels.values()), default=0) - NAME_MIN_WIDTH
        tokenizer_need = max((cell_len(tokenizer_text(e)) for e in entries), default=0) - TOKENIZER_MIN_WIDTH
        name, tokenizer = share_spare(spare, max(0, name_need), max(0, tokenizer_need))
        widths = {"name": NAME_MIN_WIDTH + name, "state": state, "tokenizer": TOKENIZER_MIN_WIDTH + tokenizer}
        changed = False
        for key, width in widths.items():
            column = self.columns.get(key)
            if column is not None and column.width != width:
                column.width = width
                changed = True
        return changed

    def show_entries(self, entries: list[tuple[TokenFileEntry, str]]) -> None:
        """List (entry, label) rows, keeping the cursor on the same file when it is still there."""
        keep = self.cursor_row_key()
        self.clear()
        self.entries = {str(entry.path): entry for entry, _ in entries}
        self.labels = {str(entry.path): label for entry, label in entries}
        self._fit_columns()
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
        tokenizer = tokenizer_text(entry)
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
