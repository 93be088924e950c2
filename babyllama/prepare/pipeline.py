"""`prepare`: corpora through chunks and workers into NAME.bin and its manifest (conversations
with their loss mask, NAME.bin.mask), resuming an interrupted run. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from babyllama.chat_template import template_for
from babyllama.errors import UserError
from babyllama.files import atomic_write_json
from babyllama.prepare.chunks import (
    DEFAULT_CHUNK_BYTES,
    IN_FLIGHT_BYTES,
    WINDOW_PER_WORKER,
    ChunkEncoder,
    ConversationEncoder,
    Position,
    default_workers,
    encode_in_order,
    read_chunks,
)
from babyllama.prepare.journal import PartialTokenFile, journal_to_resume
from babyllama.prepare.progress import ProgressCallback, ProgressTracker
from babyllama.prepare.sources import (
    describe_left_out,
    holds_conversations,
    nothing_to_write,
    resolve_sources,
    what_was_found,
)
from babyllama.prepare.token_file import UINT16_VOCAB_LIMIT, OutputPaths, build_manifest, writing
from babyllama.tokenizer import load_tokenizer


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

    Conversations (the sft-* formats) are encoded with the tokenizer's chat template, and their
    loss mask written beside as NAME.bin.mask; a tokenizer without a template is refused before
    anything is written, and so are inputs that mix conversations with pretraining text.

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
    sft = holds_conversations(sources)
    if left_out:
        emit({"event": "note", "message": describe_left_out(left_out)})
    tokenizer = load_tokenizer(tokenizer_path)
    template = template_for(tokenizer) if sft else None
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
        "sft": sft,
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
            encoder = (ConversationEncoder if sft else ChunkEncoder)(tokenizer, min_tokens, dtype)
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
        raise nothing_to_write(not_recognised + [what_was_found(source, min_tokens, template) for source in sources])
    partial.finish()
    tracker.update(offsets[-1], counts, final=True)
    for entry in counts.cut_short:
        emit({"event": "warning", "message": f"{entry}; the records before it are kept"})

    manifest = build_manifest(tokenizer, dtype, counts, min_tokens, sources, partial.finished,
                              (paths.mask.name, template.describe()) if sft else None)
    # In this order, so that NAME.bin never exists without its manifest (and mask), nor beside another's.
    if force and paths.out.exists():
        with writing(paths.out):
            paths.manifest.unlink(missing_ok=True)
            paths.mask.unlink(missing_ok=True)
            paths.out.unlink()
    with writing(paths.manifest):
        atomic_write_json(paths.manifest, manifest)
    if sft:
        with writing(paths.mask):
            os.replace(paths.mask_partial, paths.mask)
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
            **({"trained_tokens": counts.trained_tokens} if sft else {}),
            "examples": counts.examples,
            "cut_short": counts.cut_short,
            "elapsed_s": round(tracker.elapsed(), 3),
            "mb_per_s": round(tracker.rate(offsets[-1]) / 1e6, 3),
        }
    )
    return manifest
