"""`babyllama prepare`: corpora -> a token file, NAME.bin plus its manifest NAME.bin.json.

NAME.bin holds the ids of each kept document followed by the tokenizer's eos id, back to
back, as uint16 while the vocabulary has at most 65,536 ids and uint32 beyond. A document
whose ids (eos included) number fewer than `min_tokens` is dropped, as the seed drops those
of 5 or fewer, so with the ChatGLM2 tokenizer the file is byte for byte what the seed's
data_process.py writes.

How it runs
    The main thread reads records in input order and cuts them into chunks of about
    `chunk_bytes` of raw input; workers (one per core) encode whole chunks, and the main
    thread writes the results strictly in chunk order, so the bytes never depend on the
    number of workers. Only a few chunks per worker are in flight at a time, so memory
    stays bounded whatever the size of the corpus. SentencePiece encodes a batch without
    holding the GIL, so its workers are threads: the main thread parses the next chunk
    while they encode, and no document or id is copied between processes. Other
    tokenizers may hold the GIL, so theirs are worker processes.

Interrupted runs
    NAME.bin.partial grows chunk by chunk. Beside it the journal NAME.bin.partial.json says
    how many of its bytes are good and where in the inputs the next chunk starts; it is
    rewritten atomically after each chunk is on disk. Running the same command again
    resumes there (changed inputs, tokenizer or options start over instead). At the end
    the manifest is written first, then NAME.bin.partial is renamed to NAME.bin, then the
    journal is removed: a NAME.bin without its manifest, which would be read as the seed's
    corpus, never appears. A write that fails (a full disk) is one line naming the file;
    the journal still counts only whole chunks and the partial file is cut back to them,
    so the same command resumes once there is space.

The journal (read_journal; the app reads it to show and resume unfinished runs)
    {"kind": "babyllama-prepare-journal", "version": 1,
     "options": {"inputs": [{"path" (resolved), "size", "mtime_ns", "format"}], "format",
                 "tokenizer" (fingerprint), "min_tokens", "dtype"},   equal options resume
     "tokenizer": Tokenizer.describe(), "chunks", "bytes" (good bytes of NAME.bin.partial),
     "position": {"file" (index into inputs), "records" (read in it), "end" (byte offset)},
     "counts": {"documents", "tokens", "too_short", "malformed", "examples", "cut_short"},
     "finished": null or the UTC time the last chunk was written}

Progress events (`--progress jsonl`): one JSON object a line on stdout
    {"event": "start", "out", "files", "total_bytes", "resumed_bytes", "workers", "dtype",
     "tokenizer"}
    {"event": "note", "message"}      files --format auto leaves out; resuming, or starting over, and why
    {"event": "progress", "bytes", "total_bytes", "documents", "tokens", "skipped",
     "mb_per_s", "eta_s", "elapsed_s"}   at most about 5 a second, and always one at the end
    {"event": "warning", "message"}   a file read only up to where it is cut short or corrupt
    {"event": "done", "out", "manifest", "documents", "tokens", "skipped", "examples",
     "cut_short", "elapsed_s", "mb_per_s"}
    {"event": "error", "message"}     a failure or an interruption; nothing follows it
"bytes" counts raw input (compressed bytes for .gz) up to the last record written, so it
only grows; "skipped" is {"too_short": n, "malformed": n}; "examples" names the first
malformed records ("file:line: reason"), as the manifest does; "mb_per_s" is the rate of
this run (MB = 10**6 bytes); "eta_s" is null until a rate is known.

Nothing to write
    --format auto leaves out the files it does not recognise (binary files, text not named
    *.txt, JSON of an unknown shape), and says so in a note. Inputs that give no document
    at all (none left, empty, all malformed, all too short, the wrong --format) are an error: nothing is written, an existing NAME.bin is left as it was, and
    the message says what each input held. A file that is cut short or corrupt (a truncated
    .gz, a JSON array broken in the middle) gives its records up to there; the run goes on,
    warns about it, and the manifest lists it under skipped.cut_short.
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from babyllama import __version__
from babyllama.corpora import (
    FORMAT_HELP,
    BadRecord,
    Document,
    UnrecognisedFile,
    check_format,
    describe_format,
    expand_inputs,
    iter_records,
    sniff_format,
)
from babyllama.errors import UserError
from babyllama.files import atomic_write_json
from babyllama.tokenizer import SentencePieceTokenizer, load_tokenizer
from babyllama.units import format_clock

# Small enough that the last chunks leave no worker idle for long, large enough that the
# journal's fsyncs (two a chunk) cost nothing next to encoding a chunk.
DEFAULT_CHUNK_BYTES = 2 << 20
# Chunks in flight: enough queued per worker that a slow fsync in the main process does not
# leave a worker idle, and never more raw text than IN_FLIGHT_BYTES, whatever the core count.
WINDOW_PER_WORKER = 2
IN_FLIGHT_BYTES = 256 << 20
MAX_EXAMPLES = 20
# Malformed records the summary on the terminal names; the manifest names MAX_EXAMPLES.
EXAMPLES_SHOWN = 5
# Files an error message names one by one before it says how many more there are.
MAX_FILES_NAMED = 5
PROGRESS_INTERVAL_S = 0.2
UINT16_VOCAB_LIMIT = 65536
JOURNAL_KIND = "babyllama-prepare-journal"

ProgressCallback = Callable[[dict], None]


@dataclass
class Counts:
    documents: int = 0
    tokens: int = 0
    too_short: int = 0
    malformed: int = 0
    examples: list[str] = field(default_factory=list)
    cut_short: list[str] = field(default_factory=list)  # the last record of each file read only in part

    def skipped(self) -> dict:
        return {"too_short": self.too_short, "malformed": self.malformed}


@dataclass(frozen=True)
class Position:
    """Where reading continues: the index of a source, how many of its records were read,
    and the byte offset in it after them."""

    file: int = 0
    records: int = 0
    end: int = 0


@dataclass(frozen=True)
class Source:
    path: Path
    format: str
    size: int
    mtime_ns: int


@dataclass
class ChunkInfo:
    """What the main process keeps of a chunk while its documents are being encoded."""

    malformed: list[str]
    cut_short: list[str]
    next_position: Position


@dataclass
class EncodedChunk:
    ids: np.ndarray
    documents: int
    too_short: int


@dataclass(frozen=True)
class OutputPaths:
    out: Path

    @property
    def manifest(self) -> Path:
        return self.out.with_name(self.out.name + ".json")

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    @property
    def journal(self) -> Path:
        return self.out.with_name(self.out.name + ".partial.json")


class ChunkEncoder:
    """Turns the documents of a chunk into the ids the token file holds for them."""

    def __init__(self, tokenizer, min_tokens: int, dtype: str):
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_id
        self.min_tokens = min_tokens
        self.dtype = np.dtype(dtype)

    def __call__(self, documents: Sequence[tuple[str, ...]]) -> EncodedChunk:
        # Every segment of the chunk in one call, as arrays: no Python int is made per token,
        # and the ids are cut, filtered and joined with eos in whole-array steps rather than
        # per document: in an encoding thread, Python work holds the GIL the main thread parses with.
        encoded = self.tokenizer.encode_arrays([segment for document in documents for segment in document])
        if not encoded:
            return EncodedChunk(np.empty(0, self.dtype), 0, 0)
        ids = np.concatenate(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        if len(encoded) != len(documents):
            segment_counts = np.fromiter(map(len, documents), dtype=np.int64, count=len(documents))
            lengths = np.add.reduceat(lengths, np.cumsum(segment_counts) - segment_counts)
        kept = lengths + 1 >= self.min_tokens
        kept_ids = ids[np.repeat(kept, lengths)]
        with_eos = np.insert(kept_ids, np.cumsum(lengths[kept]), self.eos_id)
        return EncodedChunk(with_eos.astype(self.dtype), int(kept.sum()), int(len(kept) - kept.sum()))


_worker_encoder: ChunkEncoder | None = None


def _start_worker(tokenizer_path: str, min_tokens: int, dtype: str, parent_pid: int) -> None:
    global _worker_encoder
    # What the fork inherited stays shared: the collector no longer visits (and so copies) it.
    gc.freeze()
    # Ctrl-C reaches the whole process group; only the main process decides what to keep.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    _worker_encoder = ChunkEncoder(load_tokenizer(tokenizer_path), min_tokens, dtype)


def _exit_when_orphaned(parent_pid: int) -> None:
    # A main process killed with SIGKILL cannot stop its workers, and they would wait forever.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _encode_in_worker(documents: list[tuple[str, ...]]) -> EncodedChunk:
    return _worker_encoder(documents)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_chunks(
    sources: Sequence[Source], start: Position, chunk_bytes: int
) -> Iterator[tuple[list[tuple[str, ...]], ChunkInfo]]:
    """The documents from `start` on, cut into chunks of about `chunk_bytes` of raw input."""
    documents: list[tuple[str, ...]] = []
    malformed: list[str] = []
    cut_short: list[str] = []
    raw_bytes = 0
    for index in range(start.file, len(sources)):
        source = sources[index]
        records, previous_end = (start.records, start.end) if index == start.file else (0, 0)
        for record in iter_records(source.path, source.format, skip=records):
            records += 1
            if isinstance(record, BadRecord):
                (cut_short if record.rest_skipped else malformed).append(str(record))
            else:
                documents.append(record.segments)
            raw_bytes += record.end - previous_end
            previous_end = record.end
            if raw_bytes >= chunk_bytes:
                yield documents, ChunkInfo(malformed, cut_short, Position(index, records, previous_end))
                documents, malformed, cut_short, raw_bytes = [], [], [], 0
    if documents or malformed or cut_short:
        yield documents, ChunkInfo(malformed, cut_short, Position(len(sources)))


def encode_in_order(
    chunks: Iterable[tuple[list[tuple[str, ...]], ChunkInfo]],
    encoder: ChunkEncoder,
    tokenizer_path: str | Path,
    workers: int,
    window: int,
) -> Iterator[tuple[ChunkInfo, EncodedChunk]]:
    """Encoded chunks in input order: in this thread, or by `workers` threads or processes
    with at most `window` chunks in flight (submitted and not yet handed back)."""
    if workers <= 1:
        for documents, info in chunks:
            yield info, encoder(documents)
        return

    from concurrent.futures.process import BrokenProcessPool

    if isinstance(encoder.tokenizer, SentencePieceTokenizer):
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encode")
        encode = encoder
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: workers start in milliseconds, and `python -m babyllama` cannot be re-imported
        # as the __main__ of a spawned child.
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=(str(tokenizer_path), encoder.min_tokens, encoder.dtype.name, os.getpid()),
        )
        encode = _encode_in_worker
    pending: deque = deque()
    try:
        for documents, info in chunks:
            pending.append((info, pool.submit(encode, documents)))
            if len(pending) >= window:
                info, future = pending.popleft()
                yield info, future.result()
        while pending:
            info, future = pending.popleft()
            yield info, future.result()
    except BrokenProcessPool as e:
        raise UserError(
            "a worker process died (out of memory?); run the same command again to resume, "
            "perhaps with fewer --workers"
        ) from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class ProgressTracker:
    """Emits progress events, at most about 5 a second."""

    def __init__(self, emit: ProgressCallback, total_bytes: int, resumed_bytes: int):
        self.emit = emit
        self.total_bytes = total_bytes
        self.resumed_bytes = resumed_bytes
        self.started = time.monotonic()
        self.last_emitted = float("-inf")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self, done_bytes: int) -> float:
        elapsed = self.elapsed()
        return (done_bytes - self.resumed_bytes) / elapsed if elapsed > 0 else 0.0

    def update(self, done_bytes: int, counts: Counts, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_emitted < PROGRESS_INTERVAL_S:
            return
        self.last_emitted = now
        rate = self.rate(done_bytes)
        self.emit(
            {
                "event": "progress",
                "bytes": done_bytes,
                "total_bytes": self.total_bytes,
                "documents": counts.documents,
                "tokens": counts.tokens,
                "skipped": counts.skipped(),
                "mb_per_s": round(rate / 1e6, 3),
                "eta_s": round((self.total_bytes - done_bytes) / rate, 1) if rate > 0 else None,
                "elapsed_s": round(self.elapsed(), 3),
            }
        )


def resolve_sources(
    inputs: Sequence[str | Path], fmt: str, paths: OutputPaths
) -> tuple[list[Source], list[UnrecognisedFile]]:
    """The files to read, each with its format, and under --format auto the files left out
    because their format cannot be told."""
    check_format(fmt)
    own_files = {p.resolve() for p in (paths.out, paths.manifest, paths.partial, paths.journal)}
    sources = []
    left_out = []
    for path in expand_inputs(inputs):
        if path.resolve() in own_files:
            raise UserError(f"{path} is an output of this command, not a corpus; leave it out of the inputs")
        try:
            stat = path.stat()
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from e
        file_format = fmt
        if fmt == "auto":
            try:
                file_format = sniff_format(path)
            except UnrecognisedFile as e:
                left_out.append(e)
                continue
        sources.append(Source(path, file_format, stat.st_size, stat.st_mtime_ns))
    return sources, left_out


def describe_left_out(left_out: list[UnrecognisedFile]) -> str:
    shown = ", ".join(f"{e.where} ({e.reason})" for e in left_out[:MAX_FILES_NAMED])
    more = len(left_out) - MAX_FILES_NAMED
    return (
        f"--format auto leaves out {len(left_out):,} file{'s' if len(left_out) > 1 else ''} it does not "
        f"recognise: {shown}" + (f" and {more:,} more" if more > 0 else "") + "; name a --format to read them"
    )


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


def build_manifest(tokenizer, dtype: str, counts: Counts, min_tokens: int, sources, created: str) -> dict:
    return {
        "kind": "babyllama-token-file",
        "version": 1,
        "dtype": dtype,
        "tokens": counts.tokens,
        "documents": counts.documents,
        "eos_id": tokenizer.eos_id,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": tokenizer.describe(),
        "skipped": {
            "too_short": counts.too_short,
            "malformed": counts.malformed,
            "examples": counts.examples,
            "cut_short": counts.cut_short,
        },
        "min_tokens": min_tokens,
        "sources": [{"path": str(s.path), "size": s.size, "format": s.format} for s in sources],
        "created": created,
        "babyllama_version": __version__,
    }


@contextmanager
def writing(path: Path, fix: str = "fix that and run the same command again") -> Iterator[None]:
    """An OSError while writing `path` as a one-line UserError that says what to do."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free some space there and run the same command again"
        raise UserError(f"cannot write {path}: {e.strerror or e}; {fix}") from e


class PartialTokenFile:
    """NAME.bin.partial with its journal: chunks are appended, and after each the journal
    records how many bytes are good, where reading continues and the counts so far.

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
            partial.file.truncate(journal["bytes"])
            partial.file.seek(journal["bytes"])
        return partial

    def open(self, mode: str) -> None:
        # Unbuffered: bytes the disk refused are not kept in a buffer that close() would try,
        # and fail, to write again.
        self.file = open(self.paths.partial, mode, buffering=0)

    @property
    def finished(self) -> str | None:
        return self.journal["finished"]

    def append(self, encoded: EncodedChunk, info: ChunkInfo) -> None:
        before = self.counts
        counts = Counts(
            documents=before.documents + encoded.documents,
            tokens=before.tokens + len(encoded.ids),
            too_short=before.too_short + encoded.too_short,
            malformed=before.malformed + len(info.malformed),
            examples=before.examples + info.malformed[: MAX_EXAMPLES - len(before.examples)],
            cut_short=before.cut_short + info.cut_short,
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
                data = memoryview(encoded.ids).cast("B")
                while data:
                    data = data[self.file.write(data) :]
                os.fsync(self.file.fileno())
            self.write_journal(journal)
        except UserError:
            # The journal on disk still ends before this chunk: give back the space it took.
            # Should that fail too, resuming cuts the file back all the same.
            with suppress(OSError):
                self.file.truncate(self.journal["bytes"])
            raise
        self.counts = counts
        self.position = info.next_position
        self.chunks_this_run += 1

    def finish(self) -> None:
        self.file.close()
        if not self.finished:
            self.write_journal(dict(self.journal, finished=utc_now()))

    def write_journal(self, journal: dict) -> None:
        with writing(self.paths.journal):
            atomic_write_json(self.paths.journal, journal)
        self.journal = journal

    def discard(self) -> None:
        if self.file:
            self.file.close()
        self.paths.partial.unlink(missing_ok=True)
        self.paths.journal.unlink(missing_ok=True)


def prepare(
    inputs: Sequence[str | Path],
    fmt: str,
    tokenizer_path: str | Path,
    out: Path,
    *,
    min_tokens: int = 6,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    resume: bool = True,
    force: bool = False,
) -> dict:
    """Tokenize `inputs` into `out` (NAME.bin) and its manifest; returns the manifest.

    `workers`: encoding threads, or processes for tokenizers other than SentencePiece
    (None: one per core; 0 or 1: encode in the calling thread).
    `resume`: continue an interrupted run of the same command; False starts over.
    `force`: replace an existing `out`, once the new one is complete.
    """
    emit = progress or (lambda event: None)
    paths = OutputPaths(Path(out))
    if paths.out.suffix != ".bin":
        raise UserError(f"--out {paths.out} must name a .bin file, e.g. data/NAME.bin")
    sources, left_out = resolve_sources(inputs, fmt, paths)
    not_recognised = [f"{e.where}: {e.reason} ({e.hint})" for e in left_out]
    if not sources:
        raise nothing_to_write(not_recognised)
    if left_out:
        emit({"event": "note", "message": describe_left_out(left_out)})
    tokenizer = load_tokenizer(tokenizer_path)
    dtype = "uint16" if tokenizer.vocab_size <= UINT16_VOCAB_LIMIT else "uint32"
    workers = default_workers() if workers is None else workers
    options = {
        "inputs": [
            {"path": str(s.path.resolve()), "size": s.size, "mtime_ns": s.mtime_ns, "format": s.format}
            for s in sources
        ],
        "format": fmt,
        "tokenizer": tokenizer.fingerprint,
        "min_tokens": min_tokens,
        "dtype": dtype,
    }

    journal = journal_to_resume(paths, options, resume, force, emit)
    if journal:
        partial = PartialTokenFile.resume(paths, journal)
    else:
        partial = PartialTokenFile.start(paths, options, tokenizer.describe())
    offsets = np.cumsum([0] + [s.size for s in sources]).tolist()

    def done_bytes(position: Position) -> int:
        return offsets[position.file] + position.end

    tracker = ProgressTracker(emit, offsets[-1], done_bytes(partial.position))
    try:
        if journal:
            emit({"event": "note", "message": f"resuming after {journal['chunks']:,} chunks "
                  f"({partial.counts.documents:,} documents, {partial.counts.tokens:,} tokens already written)"})
        emit(
            {
                "event": "start",
                "out": str(paths.out),
                "files": len(sources),
                "total_bytes": offsets[-1],
                "resumed_bytes": done_bytes(partial.position),
                "workers": workers,
                "dtype": dtype,
                "tokenizer": tokenizer.name,
            }
        )
        if not partial.finished:
            encoder = ChunkEncoder(tokenizer, min_tokens, dtype)
            window = max(2, min(WINDOW_PER_WORKER * workers, IN_FLIGHT_BYTES // max(chunk_bytes, 1)))
            # Closed explicitly: an exception's traceback would otherwise keep the pool and
            # the open input alive for as long as someone holds on to it.
            with closing(read_chunks(sources, partial.position, chunk_bytes)) as chunks, closing(
                encode_in_order(chunks, encoder, tokenizer_path, workers, window)
            ) as encoded_chunks:
                for info, encoded in encoded_chunks:
                    partial.append(encoded, info)
                    tracker.update(done_bytes(partial.position), partial.counts)
    except BaseException:
        if journal is None and partial.chunks_this_run == 0:
            partial.discard()
        raise
    counts = partial.counts
    if counts.documents == 0:
        partial.discard()
        raise nothing_to_write(not_recognised + [what_was_found(source, min_tokens) for source in sources])
    partial.finish()
    tracker.update(offsets[-1], counts, final=True)
    for entry in counts.cut_short:
        emit({"event": "warning", "message": f"{entry}; the records before it are kept"})

    manifest = build_manifest(tokenizer, dtype, counts, min_tokens, sources, partial.finished)
    # In this order, so that NAME.bin never exists without its manifest, nor beside another's.
    if force and paths.out.exists():
        with writing(paths.out):
            paths.manifest.unlink(missing_ok=True)
            paths.out.unlink()
    with writing(paths.manifest):
        atomic_write_json(paths.manifest, manifest)
    with writing(paths.out):
        os.replace(paths.partial, paths.out)
    with writing(paths.journal):
        paths.journal.unlink()
    emit(
        {
            "event": "done",
            "out": str(paths.out),
            "manifest": str(paths.manifest),
            "documents": counts.documents,
            "tokens": counts.tokens,
            "skipped": counts.skipped(),
            "examples": counts.examples,
            "cut_short": counts.cut_short,
            "elapsed_s": round(tracker.elapsed(), 3),
            "mb_per_s": round(tracker.rate(offsets[-1]) / 1e6, 3),
        }
    )
    return manifest


def what_was_found(source: Source, min_tokens: int) -> str:
    """What a file that gave no document holds, in a few words, and the format to try if it
    looks like another."""
    documents = bad = 0
    first_bad = cut = None
    for record in iter_records(source.path, source.format):
        if type(record) is Document:
            documents += 1
        elif record.rest_skipped:
            cut = record
        else:
            bad += 1
            first_bad = first_bad or record
    parts = []
    if documents:
        parts.append(f"{documents:,} documents, all shorter than --min-tokens {min_tokens} (ids, eos included)")
    if first_bad:
        parts.append(f"{bad:,} malformed records, the first on line {first_bad.line}: {first_bad.reason}")
    if cut:
        parts.append(f"line {cut.line}: {cut.reason}")
    found = f"{source.path}: " + (", ".join(parts) or ("empty" if source.size == 0 else "no records"))
    if documents or not (first_bad or cut):
        return found
    found += f" ({source.format} reads {describe_format(source.format)})"
    try:
        sniffed = sniff_format(source.path)
    except UnrecognisedFile:
        return found
    return found + (f"; try --format {sniffed}" if sniffed != source.format else "")


def nothing_to_write(found: list[str]) -> UserError:
    more = len(found) - MAX_FILES_NAMED
    return UserError(
        "no documents in the inputs, so nothing was written: " + "; ".join(found[:MAX_FILES_NAMED])
        + (f"; and {more:,} more files without one" if more > 0 else "")
    )


def format_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def describe_progress(event: dict) -> str:
    total = event["total_bytes"]
    bad = event["skipped"]["malformed"]
    return (
        f"{event['bytes'] / 1e6:,.0f}/{total / 1e6:,.0f} MB  "
        f"{event['documents']:,} docs  {format_count(event['tokens'])} tokens  "
        f"{event['mb_per_s']:.1f} MB/s  ETA {format_clock(event['eta_s'])}" + (f"  {bad:,} bad" if bad else "")
    )


def describe_done(event: dict) -> str:
    """The summary line, then a line for each of the first malformed records."""
    skipped = event["skipped"]
    cut_short = len(event["cut_short"])
    lines = [
        f"wrote {event['out']} and {event['manifest']}: {event['documents']:,} documents, "
        f"{event['tokens']:,} tokens; skipped {skipped['too_short']:,} too short, "
        f"{skipped['malformed']:,} malformed"
        + (f", and the rest of {cut_short:,} file{'s' if cut_short > 1 else ''} (warned above)" if cut_short else "")
        + f"; {event['elapsed_s']:.1f} s at {event['mb_per_s']:.1f} MB/s"
    ]
    shown = event["examples"][:EXAMPLES_SHOWN]
    lines += (f"  {example}" for example in shown)
    more = skipped["malformed"] - len(shown)
    if more > 0:
        named = len(event["examples"])
        lines.append(
            f"  and {more:,} more malformed record{'s' if more > 1 else ''}"
            + (f"; {event['manifest']} names the first {named}" if named > len(shown) else "")
        )
    return "\n".join(lines)


def describe_warning(event: dict) -> str:
    return f"babyllama prepare: warning: {event['message']}"


class BarReport:
    """A one-line live bar on a terminal."""

    def __init__(self, stream=sys.stderr, width: int = 24):
        self.stream = stream
        self.width = width
        self.drawn = False

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "progress":
            total = event["total_bytes"]
            fraction = event["bytes"] / total if total else 1.0
            filled = int(fraction * self.width)
            bar = "█" * filled + "░" * (self.width - filled)
            self.stream.write(f"\r{bar} {fraction:4.0%}  {describe_progress(event)}\x1b[K")
            self.drawn = True
        elif kind in ("note", "warning", "done", "error"):
            self.end_line()
            if kind == "note":
                self.stream.write(f"babyllama prepare: {event['message']}\n")
            elif kind == "warning":
                self.stream.write(describe_warning(event) + "\n")
            elif kind == "done":
                self.stream.write(describe_done(event) + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


class LinesReport:
    """A line every few seconds, for logs and pipes."""

    def __init__(self, stream=sys.stderr, interval_s: float = 5.0):
        self.stream = stream
        self.interval_s = interval_s
        self.last = time.monotonic()

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "progress" and time.monotonic() - self.last >= self.interval_s:
            self.last = time.monotonic()
            self.stream.write(f"babyllama prepare: {describe_progress(event)}\n")
        elif kind == "note":
            self.stream.write(f"babyllama prepare: {event['message']}\n")
        elif kind == "warning":
            self.stream.write(describe_warning(event) + "\n")
        elif kind == "done":
            self.stream.write(describe_done(event) + "\n")
        self.stream.flush()


class WarningsReport:
    """Nothing but warnings, for --progress none: a file read only in part is never silent."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream

    def __call__(self, event: dict) -> None:
        if event["event"] == "warning":
            self.stream.write(describe_warning(event) + "\n")
            self.stream.flush()


class JsonlReport:
    """One JSON object a line on stdout, for programs. A reader that goes away does not stop
    the work: the rest of the events are dropped."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.reader_gone = False

    def __call__(self, event: dict) -> None:
        if self.reader_gone:
            return
        try:
            self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.reader_gone = True
            # Python flushes stdout again at exit; point it at /dev/null so that is quiet too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)


def make_report(kind: str) -> ProgressCallback:
    if kind == "auto":
        kind = "bar" if sys.stderr.isatty() else "lines"
    return {"bar": BarReport, "lines": LinesReport, "jsonl": JsonlReport, "none": WarningsReport}[kind]()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files, folders or globs")
    parser.add_argument("--tokenizer", required=True, metavar="PATH", help="tokenizer.model file or tokenizer folder")
    parser.add_argument("--format", default="auto", metavar="FMT", help=FORMAT_HELP + "; default: auto")
    parser.add_argument("--out", required=True, type=Path, metavar="data/NAME.bin", help="the token file to write")
    parser.add_argument(
        "--min-tokens", type=int, default=6, metavar="N",
        help="drop documents with fewer ids than this, eos included (default: 6, the seed's rule)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="encoding threads, or processes for tokenizers other than SentencePiece "
        "(default: one per core; 1 encodes in the main thread)",
    )
    parser.add_argument(
        "--chunk-mb", type=float, default=DEFAULT_CHUNK_BYTES / 2**20, metavar="MB",
        help="raw input per unit of work and of resumption (default: %(default)g)",
    )
    parser.add_argument(
        "--progress", choices=["auto", "bar", "lines", "jsonl", "none"], default="auto",
        help="auto: a live bar on a terminal, else a line every few seconds; jsonl: JSON events on stdout; "
        "none: warnings only",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--restart", action="store_true", help="ignore an unfinished run's progress and start over")


def run(args: argparse.Namespace) -> int:
    if args.chunk_mb <= 0:
        raise UserError("--chunk-mb must be positive")
    report = make_report(args.progress)
    try:
        prepare(
            args.inputs,
            args.format,
            args.tokenizer,
            args.out,
            min_tokens=args.min_tokens,
            workers=args.workers,
            progress=report,
            chunk_bytes=max(1, int(args.chunk_mb * 2**20)),
            resume=not args.restart,
            force=args.force,
        )
    except KeyboardInterrupt:
        report({"event": "error", "message": "interrupted"})
        if OutputPaths(args.out).journal.exists():
            print("babyllama prepare: progress is kept; run the same command again to resume", file=sys.stderr)
        raise
    except UserError as e:
        report({"event": "error", "message": str(e)})
        raise
    return 0
