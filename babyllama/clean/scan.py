"""The first pass: inputs read in input order and cut into chunks of about `chunk_bytes` of raw
input, each chunk's documents filtered, hashed and signed by worker processes, the results
handed back in chunk order so nothing depends on the number of workers.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from babyllama.clean.settings import CleanSettings
from babyllama.clean.signatures import ChunkResult, analyse_chunk
from babyllama.corpora import BadRecord, iter_records
from babyllama.errors import UserError
from babyllama.prepare.sources import Source

DEFAULT_CHUNK_BYTES = 4 << 20
WINDOW_PER_WORKER = 2


@dataclass(frozen=True)
class Position:
    """Where reading continues: a source's index, the records of it read, the byte after them."""

    file: int = 0
    records: int = 0
    end: int = 0


@dataclass
class Chunk:
    texts: list[str]
    wheres: list[str]  # "file:line" of each document
    malformed: list[str]
    cut_short: list[str]
    next_position: Position


def document_text(segments: tuple[str, ...]) -> str:
    """One text for a document of several segments (baike's sections, wudao's title and content)."""
    return "\n".join(segments)


def read_chunks(sources: Sequence[Source], start: Position, chunk_bytes: int) -> Iterator[Chunk]:
    texts: list[str] = []
    wheres: list[str] = []
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
                texts.append(document_text(record.segments))
                wheres.append(f"{record.path}:{record.line}")
            raw_bytes += record.end - previous_end
            previous_end = record.end
            if raw_bytes >= chunk_bytes:
                yield Chunk(texts, wheres, malformed, cut_short, Position(index, records, previous_end))
                texts, wheres, malformed, cut_short, raw_bytes = [], [], [], [], 0
    if texts or malformed or cut_short:
        yield Chunk(texts, wheres, malformed, cut_short, Position(len(sources)))


_settings: CleanSettings | None = None


def _start_worker(settings: CleanSettings, parent_pid: int) -> None:
    global _settings
    gc.freeze()
    # Ctrl-C reaches the whole process group; only the main process decides what to keep.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    _settings = settings


def _exit_when_orphaned(parent_pid: int) -> None:
    # A main process killed with SIGKILL cannot stop its workers, and they would wait forever.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _analyse_in_worker(texts: list[str], examples: dict[str, int]) -> ChunkResult:
    return analyse_chunk(texts, _settings, examples)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def analyse_in_order(
    chunks: Iterable[Chunk], settings: CleanSettings, workers: int, examples: dict[str, int]
) -> Iterator[tuple[Chunk, ChunkResult]]:
    """Each chunk with its result, in input order: here, or on `workers` forked processes with
    a few chunks each in flight."""
    if workers <= 1:
        for chunk in chunks:
            yield chunk, analyse_chunk(chunk.texts, settings, examples)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(settings, os.getpid()),
    )
    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append((chunk, pool.submit(_analyse_in_worker, chunk.texts, examples)))
            if len(pending) >= WINDOW_PER_WORKER * workers:
                chunk, future = pending.popleft()
                yield chunk, future.result()
        while pending:
            chunk, future = pending.popleft()
            yield chunk, future.result()
    except BrokenProcessPool as e:
        raise UserError(
            "a worker process died (out of memory?); run the same command again to resume, perhaps with fewer --workers"
        ) from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
