"""The inputs read in chunks of about `chunk_bytes` of raw input, and the chunks encoded in
input order: in this thread, on worker threads (SentencePiece encodes without the GIL) or on
worker processes (other tokenizers, and conversations, whose chat template runs in Python).
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from babyllama.chat_template import BadConversation, template_for
from babyllama.corpora import BadRecord, is_sft_format, iter_records
from babyllama.errors import UserError
from babyllama.prepare.sources import Source
from babyllama.tokenizer import SentencePieceTokenizer, load_tokenizer

# Small enough that the last chunks leave no worker idle for long, large enough that the
# journal's fsyncs (two a chunk) cost nothing next to encoding a chunk.
DEFAULT_CHUNK_BYTES = 2 << 20
# Chunks in flight: enough queued per worker that a slow fsync in the main process does not
# leave a worker idle, and never more raw text than IN_FLIGHT_BYTES, whatever the core count.
WINDOW_PER_WORKER = 2
IN_FLIGHT_BYTES = 256 << 20


@dataclass(frozen=True)
class Position:
    """Where reading continues: the index of a source, how many of its records were read,
    and the byte offset in it after them."""

    file: int = 0
    records: int = 0
    end: int = 0


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
    mask: np.ndarray | None = None  # conversations: uint8, 1 where the loss is counted
    malformed: list[str] = field(default_factory=list)  # conversations the chat template refused


class ChunkEncoder:
    """Turns the documents of a chunk into the ids the token file holds for them."""

    def __init__(self, tokenizer, min_tokens: int, dtype: str):
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_id
        self.min_tokens = min_tokens
        self.dtype = np.dtype(dtype)

    @property
    def on_threads(self) -> bool:
        """Whether workers may be threads: the encoding must run without the GIL."""
        return isinstance(self.tokenizer, SentencePieceTokenizer)

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


class ConversationEncoder(ChunkEncoder):
    """Turns a chunk's conversations, (roles, contents, "file:line") each, into ids and the loss
    mask through the tokenizer's chat template (`template_for`, which refuses a tokenizer without
    one); a conversation the template cannot encode comes back in `malformed`, named."""

    def __init__(self, tokenizer, min_tokens: int, dtype: str):
        super().__init__(tokenizer, min_tokens, dtype)
        self.template = template_for(tokenizer)

    @property
    def on_threads(self) -> bool:
        # The template builds each conversation in Python, holding the GIL: processes use every core.
        return False

    def __call__(self, conversations: Sequence[tuple[tuple[str, ...], tuple[str, ...], str]]) -> EncodedChunk:
        ids: list[int] = []
        mask: list[int] = []
        malformed: list[str] = []
        documents = too_short = 0
        for roles, contents, where in conversations:
            try:
                encoded, trained = self.template.encode(
                    [{"role": role, "content": content} for role, content in zip(roles, contents)]
                )
            except BadConversation as e:
                malformed.append(f"{where}: {e}")
                continue
            if len(encoded) < self.min_tokens:
                too_short += 1
                continue
            ids += encoded
            mask += trained
            documents += 1
        return EncodedChunk(np.array(ids, self.dtype), documents, too_short, np.array(mask, np.uint8), malformed)


_worker_encoder: ChunkEncoder | None = None


def _start_worker(encoder_class: type[ChunkEncoder], tokenizer_path: str, min_tokens: int, dtype: str,
                  parent_pid: int) -> None:
    global _worker_encoder
    # What the fork inherited stays shared: the collector no longer visits (and so copies) it.
    gc.freeze()
    # Ctrl-C reaches the whole process group; only the main process decides what to keep.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    _worker_encoder = encoder_class(load_tokenizer(tokenizer_path), min_tokens, dtype)


def _exit_when_orphaned(parent_pid: int) -> None:
    # A main process killed with SIGKILL cannot stop its workers, and they would wait forever.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _encode_in_worker(documents: list) -> EncodedChunk:
    return _worker_encoder(documents)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_chunks(
    sources: Sequence[Source], start: Position, chunk_bytes: int
) -> Iterator[tuple[list, ChunkInfo]]:
    """The documents from `start` on, cut into chunks of about `chunk_bytes` of raw input: each
    document's segments, or a conversation's (roles, contents, "file:line")."""
    documents: list = []
    malformed: list[str] = []
    cut_short: list[str] = []
    raw_bytes = 0
    for index in range(start.file, len(sources)):
        source = sources[index]
        records, previous_end = (start.records, start.end) if index == start.file else (0, 0)
        conversations = is_sft_format(source.format)
        for record in iter_records(source.path, source.format, skip=records):
            records += 1
            if isinstance(record, BadRecord):
                (cut_short if record.rest_skipped else malformed).append(str(record))
            else:
                documents.append(
                    (record.roles, record.segments, f"{record.path}:{record.line}") if conversations
                    else record.segments
                )
            raw_bytes += record.end - previous_end
            previous_end = record.end
            if raw_bytes >= chunk_bytes:
                yield documents, ChunkInfo(malformed, cut_short, Position(index, records, previous_end))
                documents, malformed, cut_short, raw_bytes = [], [], [], 0
    if documents or malformed or cut_short:
        yield documents, ChunkInfo(malformed, cut_short, Position(len(sources)))


def encode_in_order(
    chunks: Iterable[tuple[list, ChunkInfo]],
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

    if encoder.on_threads:
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
            initargs=(type(encoder), str(tokenizer_path), encoder.min_tokens, encoder.dtype.name, os.getpid()),
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
