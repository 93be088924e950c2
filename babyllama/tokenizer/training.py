"""`train_sentencepiece`: a BPE SentencePiece tokenizer with byte fallback, trained on a
sample of a corpus's lines into a tokenizer folder. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import sentencepiece as spm

from babyllama import __version__
from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, atomic_write_json
from babyllama.tokenizer.folder import BABYLLAMA_CONFIG_FILE, SENTENCEPIECE_FILE
from babyllama.tokenizer.kinds import SentencePieceTokenizer

# What `babyllama tokenizer train` feeds SentencePiece; see train_sentencepiece.
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_MAX_LINES = 2_000_000
DEFAULT_CHARACTER_COVERAGE = 0.9995
# The chat template's markers (babyllama/chat_template.py), reserved as control pieces: single
# ids that no text encodes to, so a conversation's structure cannot be forged by its content.
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CONTROL_PIECES = 3 + len(CHAT_TOKENS)  # <unk> <s> </s> and the chat tokens
BYTE_PIECES = 256
MIN_VOCAB_SIZE = 384
CHARACTER_SHARE = 0.75  # of the pieces after control and byte pieces; the rest are merges
MAX_LINE_CHARS = 2000
UTF8_MAX_BYTES = 4
SPACE_SYMBOL = "\u2581"  # how SentencePiece writes a space inside pieces


def training_lines(text: str, max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
    """The pieces of a document SentencePiece trains on: its non-blank lines, long ones cut.

    SentencePiece drops a training sentence longer than its limit, and whole documents
    (a novel's chapter) are far longer, so lines are the unit.
    """
    for line in text.splitlines():
        if not line.strip():
            continue
        for start in range(0, len(line), max_chars):
            yield line[start : start + max_chars]


def train_sentencepiece(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    max_lines: int = DEFAULT_MAX_LINES,
    character_coverage: float = DEFAULT_CHARACTER_COVERAGE,
    force: bool = False,
    seed: int = 0,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> Path:
    """Train a BPE SentencePiece tokenizer on `texts` into `out_dir`; returns `out_dir`.

    The model keeps text exactly as it is: no normalisation (full-width punctuation is
    meaningful in Chinese), no dummy space in front and no squeezing of spaces, so
    `decode(encode(t)) == t` for every text (except that a literal U+2581 comes back as a
    space, as with every SentencePiece model). Characters outside the vocabulary are spelled
    as UTF-8 byte pieces. Ids 0, 1, 2 are <unk>, <s>, </s> as in ChatGLM2, so eos is 2.

    At most `max_lines` lines, a uniform sample of all lines read, are trained on, so memory
    and training time stay bounded whatever the corpus size. The most frequent characters
    covering `character_coverage` of the text get a piece each, but at most three quarters
    of the ids left after control and byte pieces, so a quarter or more go to merged pieces.

    The result is written under a temporary name and renamed to `out_dir` when complete;
    an existing non-empty `out_dir` is refused unless `force`.
    """
    out_dir = Path(out_dir)
    say = log or (lambda message: None)
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"vocabulary size {vocab_size} is too small: {CONTROL_PIECES + BYTE_PIECES} ids go to "
            f"control and byte pieces; use at least {MIN_VOCAB_SIZE}"
        )
    check_output_folder(out_dir, force)

    lines, stats = _sample_lines(texts, max_lines, random.Random(seed), say)
    if not lines:
        raise UserError("the inputs hold no text to train a tokenizer on")
    sampled = len(lines)
    kept, coverage = _choose_characters(lines, vocab_size, character_coverage)
    lines = _without_characters_outside(lines, kept)
    say(
        f"training BPE, vocabulary {vocab_size:,}, on {sampled:,} lines "
        f"({stats['sampled_chars'] / 1e6:.1f} M characters); {len(kept):,} characters get a piece "
        f"and cover {coverage:.4%} of the text, the rest are spelled in bytes"
    )
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            byte_fallback=True,
            character_coverage=1.0,
            required_chars=SPACE_SYMBOL,
            split_digits=True,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            control_symbols=list(CHAT_TOKENS),
            input_sentence_size=0,
            max_sentence_length=MAX_LINE_CHARS * UTF8_MAX_BYTES,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=0 if verbose else 1,
        )
    except RuntimeError as e:
        raise UserError(
            f"SentencePiece could not train a vocabulary of {vocab_size:,} on this text ({_last_line(e)}); "
            "use a smaller --vocab-size or more text"
        ) from None

    config = {
        "kind": SentencePieceTokenizer.kind,
        "model": SENTENCEPIECE_FILE,
        "vocab_size": vocab_size,
        "eos_id": 2,
        "bos_id": 1,
        "chat_tokens": list(CHAT_TOKENS),
        "sha256": "sha256:" + hashlib.sha256(model.getvalue()).hexdigest(),
        "training": {
            "model_type": "bpe",
            "byte_fallback": True,
            "normalization": "identity",
            "characters": len(kept),
            "character_coverage": round(coverage, 6),
            "requested_character_coverage": character_coverage,
            "documents": stats["documents"],
            "lines_read": stats["lines"],
            "characters_read": stats["chars"],
            "lines_trained_on": sampled,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "babyllama_version": __version__,
        },
    }
    _write_folder_atomically(out_dir, {SENTENCEPIECE_FILE: model.getvalue()}, config, force)
    return out_dir


def check_output_folder(out_dir: Path, force: bool) -> None:
    """Refuse to train over something already there, before any time is spent reading."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(
            f"{out_dir}: folder exists and is not empty; choose another --out or pass --force to replace it"
        )


def _sample_lines(
    texts: Iterable[str], max_lines: int, rng: random.Random, say: Callable[[str], None]
) -> tuple[list[str], dict]:
    """A uniform sample of at most `max_lines` training lines (reservoir sampling), and counts."""
    sample: list[str] = []
    stats = {"documents": 0, "lines": 0, "chars": 0}
    next_report = time.monotonic() + 2.0
    for text in texts:
        stats["documents"] += 1
        stats["chars"] += len(text)
        for line in training_lines(text):
            stats["lines"] += 1
            if len(sample) < max_lines:
                sample.append(line)
            else:
                slot = rng.randrange(stats["lines"])
                if slot < max_lines:
                    sample[slot] = line
        if time.monotonic() >= next_report:
            say(_reading_progress(stats))
            next_report = time.monotonic() + 2.0
    say(_reading_progress(stats) + ": done")
    stats["sampled_chars"] = sum(map(len, sample))
    return sample, stats


def _reading_progress(stats: dict) -> str:
    return f"read {stats['documents']:,} documents, {stats['chars'] / 1e6:,.1f} M characters, {stats['lines']:,} lines"


def _choose_characters(lines: Sequence[str], vocab_size: int, coverage: float) -> tuple[set[str], float]:
    """The characters that get their own piece, and the share of all characters they cover.

    The most frequent ones, until they cover `coverage` of the text or fill their share of
    the vocabulary. SentencePiece's own coverage cannot go below 0.98, too high for a small
    vocabulary on Chinese text (三国演义 alone has ~4,000 distinct characters), so the choice
    is made here and the rest are kept out of the training text.
    """
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(line)
    budget = int((vocab_size - CONTROL_PIECES - BYTE_PIECES) * CHARACTER_SHARE) - 1  # -1: the space symbol
    total = sum(counts.values())
    kept: set[str] = set()
    covered = 0
    for character, count in counts.most_common():
        if covered >= coverage * total or len(kept) >= budget:
            break
        kept.add(character)
        covered += count
    return kept, covered / total


def _without_characters_outside(lines: Sequence[str], kept: set[str]) -> list[str]:
    """The lines cut at every character not in `kept`, so no piece is learned across one."""
    outside = re.compile("[^" + "".join(re.escape(c) for c in sorted(kept)) + "]+")
    result = []
    for line in lines:
        if kept.issuperset(line):
            result.append(line)
        else:
            result.extend(part for part in outside.split(line) if part)
    return result


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _write_folder_atomically(out_dir: Path, files: dict[str, bytes], config: dict, force: bool) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        atomic_write_json(staging / BABYLLAMA_CONFIG_FILE, config)
        check_output_folder(out_dir, force)
        replaced = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if out_dir.exists():
            out_dir.rename(replaced)
        staging.rename(out_dir)
        shutil.rmtree(replaced, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
