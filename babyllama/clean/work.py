"""The files a clean keeps while it runs, in the hidden folder `.NAME.jsonl.work/` beside its
output: the journal (what is done, where reading continues, the counts so far), and for each
chunk of input the filters' verdicts and the kept documents' hashes, signatures and band keys
as .npy files (`ChunkStore`). See docs/ARCHITECTURE.md."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babyllama.clean.signatures import ChunkResult
from babyllama.errors import UserError
from babyllama.files import atomic_write_json, temp_path

JOURNAL_KIND = "babyllama-clean-journal"
ARRAYS = ("status", "exact", "signatures", "bands")


@dataclass(frozen=True)
class CleanPaths:
    out: Path

    @property
    def manifest(self) -> Path:
        return self.out.with_name(self.out.name + ".json")

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    @property
    def work(self) -> Path:
        return self.out.with_name(f".{self.out.name}.work")

    @property
    def lock(self) -> Path:
        """Held by the running clean (beside the work folder, which a run may remove and remake)."""
        return self.out.with_name(f".{self.out.name}.lock")

    @property
    def journal(self) -> Path:
        return self.work / "journal.json"

    @property
    def decisions(self) -> Path:
        """A byte per document: 0 kept, else 1 + its rule's index in RULES."""
        return self.work / "decisions.u8"

    @property
    def parents(self) -> Path:
        return self.work / "parents.i64"

    def all(self) -> tuple[Path, ...]:
        return (self.out, self.manifest, self.partial)


def read_journal(path: Path) -> dict | None:
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(journal, dict) and journal.get("kind") == JOURNAL_KIND and journal.get("version") == 1:
        return journal
    return None


def write_journal(paths: CleanPaths, journal: dict) -> None:
    atomic_write_json(paths.journal, journal)


def discard(paths: CleanPaths) -> None:
    shutil.rmtree(paths.work, ignore_errors=True)
    paths.partial.unlink(missing_ok=True)


class ChunkStore:
    """Each chunk's arrays on disk; a kept document (one the filters let through) is known by its
    candidate index, its place among all kept documents in input order."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets = [0]  # candidate index of each chunk's first kept document, and the total last

    def path(self, chunk: int, name: str) -> Path:
        return self.folder / f"chunk-{chunk:06d}.{name}.npy"

    def save(self, chunk: int, result: ChunkResult) -> None:
        # Each array under a temporary name first: a kill leaves no half-written array under its name.
        for name in ARRAYS:
            target = self.path(chunk, name)
            tmp = temp_path(target)
            with open(tmp, "wb") as file:
                np.save(file, getattr(result, name))
            tmp.replace(target)

    def open(self, chunks: int) -> None:
        """Read the chunks' sizes (the journal counts `chunks` of them)."""
        self.offsets = [0]
        for chunk in range(chunks):
            try:
                rows = len(self.load(chunk, "exact"))
            except (OSError, ValueError) as e:
                raise UserError(f"{self.path(chunk, 'exact')} cannot be read ({e}); run again with --restart") from e
            self.offsets.append(self.offsets[-1] + rows)

    @property
    def chunks(self) -> int:
        return len(self.offsets) - 1

    @property
    def candidates(self) -> int:
        return self.offsets[-1]

    def load(self, chunk: int, name: str) -> np.ndarray:
        return np.load(self.path(chunk, name), mmap_mode="r")

    def gather(self, name: str, indices: np.ndarray) -> np.ndarray:
        """The rows of array `name` for candidate `indices` (any order), reading only their chunks."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            sample = self.load(0, name)
            return np.empty((0, *sample.shape[1:]), sample.dtype)
        order = np.argsort(indices, kind="stable")
        chunk_of = np.searchsorted(self.offsets, indices[order], side="right") - 1
        pieces = []
        for chunk in np.unique(chunk_of):
            rows = indices[order][chunk_of == chunk] - self.offsets[chunk]
            pieces.append(np.asarray(self.load(int(chunk), name)[rows]))
        gathered = np.concatenate(pieces)
        result = np.empty_like(gathered)
        result[order] = gathered
        return result
