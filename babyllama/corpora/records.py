"""What corpus readers yield: a `Document` to tokenize, or a `BadRecord` that says which
record could not be read and why. See docs/ARCHITECTURE.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Document:
    """One document: its segments are encoded one by one, concatenated, then end-of-text. A
    conversation (the sft-* formats) has a role for each segment, its turn's content; the chat
    template encodes it."""

    segments: tuple[str, ...]
    path: Path
    line: int  # 1-based line where the record starts
    end: int = 0  # byte position in the raw (for .gz: compressed) file after this record
    roles: tuple[str, ...] = ()  # a conversation's: "system", "user" or "assistant" for each segment


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that could not be read; the run goes on without it. `rest_skipped`: the file
    cannot be read past it (cut short, corrupt, or a broken JSON array), so it is the last."""

    path: Path
    line: int
    reason: str
    end: int = 0
    rest_skipped: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


Record = Document | BadRecord
