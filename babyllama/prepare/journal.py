"""Resuming: NAME.bin.partial (and for conversations NAME.bin.mask.partial, a byte per token)
grows chunk by chunk, and its journal says how many of its bytes are good and where in the
inputs reading continues. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import json
import os
from contextlib import suppress
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from babyllama.errors import UserError
from babyllama.files import atomic_write_json
from babyllama.prepare.chunks import ChunkInfo, EncodedChunk, Position
from babyllama.prepare.progress import ProgressCallback
from babyllama.prepare.token_file import Counts, OutputPaths, writing

MAX_EXAMPLES = 20

JOURNAL_KIND = "babyllama-prepare-journal"


def read_journal(path: Path) -> dict | None:
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(journal, dict) and journal.get("kind") == JOURNAL_KIND and journal.get("version") == 1:
        return journal
    return None


def why_not_resumable(journal: dict, options: dict, paths: OutputPaths) -> str | None:
    """None when the journal's run can be continued, else the reason it cannot."""
    previous = journal["options"]
    for key, what in [
        ("inputs", "other inputs (or they changed since)"),
        ("format", "another --format"),
        ("tokenizer", "another tokenizer"),
        ("min_tokens", "another --min-tokens"),
        ("dtype", "another token type"),
    ]:
        if previous.get(key) != options[key]:
            return f"the interrupted run had {what}"
    if not paths.partial.exists() or paths.partial.stat().st_size < journal["bytes"]:
        return f"{paths.partial} is missing or shorter than its journal says"
    if options.get("sft") and (
        not paths.mask_partial.exists() or paths.mask_partial.stat().st_size < journal["counts"]["tokens"]
    ):
        return f"{paths.mask_partial} is missing or shorter than its journal says"
    return None


def journal_to_resume(
    paths: OutputPaths, options: dict, resume: bool, force: bool, emit: ProgressCallback
) -> dict | None:
    """The journal of an interrupted run to continue, or None to start afresh; refuses to
    overwrite a finished token file without `force`."""
    journal = read_journal(paths.journal)
    if journal and journal["finished"] and paths.out.exists() and not paths.partial.exists():
        # The run that wrote it stopped between renaming NAME.bin into place and removing the journal.
        paths.journal.unlink()
        journal = None
    if paths.out.exists() and not force:
        raise UserError(f"{paths.out} already exists; pass --force to replace it, or choose another --out")
    if journal and not resume:
        emit({"event": "note", "message": "starting over (--restart): the unfinished run's progress is dropped"})
        return None
    if journal and (reason := why_not_resumable(journal, options, paths)):
        emit({"event": "note", "message": f"starting over: {reason}"})
        return None
    return journal


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PartialTokenFile:
    """NAME.bin.partial with its journal: chunks are appended, and after each the journal
    records how many bytes are good, where reading continues and the counts so far. For
    conversations (the journal's options say "sft") NAME.bin.mask.partial grows beside it, as
    many bytes as there are tokens.

    A write that fails (a full disk) leaves the journal as it was and the partial file cut
    back to the bytes it counts, so running the command again resumes after the last chunk
    that was written whole."""

    def __init__(self, paths: OutputPaths, journal: dict):
        self.paths = paths
        self.journal = journal
        self.counts = Counts(**journal["counts"])
        self.position = Position(**journal["position"])
        self.chunks_this_run = 0
        self.file = None
        self.mask_file = None

    @classmethod
    def start(cls, paths: OutputPaths, options: dict, tokenizer: dict) -> "PartialTokenFile":
        """A new partial file; `options` decide whether a later run may resume it, `tokenizer`
        (Tokenizer.describe()) tells the app which tokenizer to resume it with."""
        journal = {
            "kind": JOURNAL_KIND,
            "version": 1,
            "options": options,
            "tokenizer": tokenizer,
            "chunks": 0,
            "bytes": 0,
            "position": asdict(Position()),
            "counts": asdict(Counts()),
            "finished": None,
        }
        partial = cls(paths, journal)
        with writing(paths.partial, "choose an --out in a folder you can write"):
            paths.out.parent.mkdir(parents=True, exist_ok=True)
            partial.open("wb")
        try:
            partial.write_journal(journal)
        except UserError:
            partial.discard()
            raise
        return partial

    @classmethod
    def resume(cls, paths: OutputPaths, journal: dict) -> "PartialTokenFile":
        partial = cls(paths, journal)
        with writing(paths.partial):
            partial.open("r+b")
            partial.cut_back()
        return partial

    @property
    def sft(self) -> bool:
        return bool(self.journal["options"].get("sft"))

    def open(self, mode: str) -> None:
        # Unbuffered: bytes the disk refused are not kept in a buffer that close() would try,
        # and fail, to write again.
        self.file = open(self.paths.partial, mode, buffering=0)
        if self.sft:
            self.mask_file = open(self.paths.mask_partial, mode, buffering=0)

    def cut_back(self) -> None:
        """Cut the partial files back to what the journal counts, and continue writing there."""
        for file, size in ((self.file, self.journal["bytes"]), (self.mask_file, self.journal["counts"]["tokens"])):
            if file is not None:
                file.truncate(size)
                file.seek(size)

    @property
    def finished(self) -> str | None:
        return self.journal["finished"]

    def append(self, encoded: EncodedChunk, info: ChunkInfo) -> None:
        before = self.counts
        counts = Counts(
            documents=before.documents + encoded.documents,
            tokens=before.tokens + len(encoded.ids),
            too_short=before.too_short + encoded.too_short,
            malformed=before.malformed + len(info.malformed) + len(encoded.malformed),
            examples=before.examples + (info.malformed + encoded.malformed)[: MAX_EXAMPLES - len(before.examples)],
            cut_short=before.cut_short + info.cut_short,
            trained_tokens=before.trained_tokens + (0 if encoded.mask is None else int(encoded.mask.sum())),
        )
        journal = dict(
            self.journal,
            chunks=self.journal["chunks"] + 1,
            bytes=self.journal["bytes"] + encoded.ids.nbytes,
            position=asdict(info.next_position),
            counts=asdict(counts),
        )
        try:
            with writing(self.paths.partial):
                write_all(self.file, encoded.ids)
            if self.mask_file is not None:
                with writing(self.paths.mask_partial):
                    write_all(self.mask_file, encoded.mask)
            self.write_journal(journal)
        except UserError:
            # The journal on disk still ends before this chunk: give back the space it took.
            # Should that fail too, resuming cuts the files back all the same.
            with suppress(OSError):
                self.cut_back()
            raise
        self.counts = counts
        self.position = info.next_position
        self.chunks_this_run += 1

    def finish(self) -> None:
        self.close()
        if not self.finished:
            self.write_journal(dict(self.journal, finished=utc_now()))

    def write_journal(self, journal: dict) -> None:
        with writing(self.paths.journal):
            atomic_write_json(self.paths.journal, journal)
        self.journal = journal

    def close(self) -> None:
        for file in (self.file, self.mask_file):
            if file:
                file.close()

    def discard(self) -> None:
        self.close()
        self.paths.partial.unlink(missing_ok=True)
        self.paths.mask_partial.unlink(missing_ok=True)
        self.paths.journal.unlink(missing_ok=True)


def write_all(file, array) -> None:
    """Every byte of `array` into an unbuffered file, then to the disk."""
    data = memoryview(array).cast("B")
    while data:
        data = data[file.write(data) :]
    os.fsync(file.fileno())
