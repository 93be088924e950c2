"""Tokenizers: one interface over three kinds, chosen by what a path holds.

- "chatglm": ChatGLM2-6B's SentencePiece `tokenizer.model` (64,789 pieces) plus its five
  special tokens as ids 64,789..64,793 (vocabulary 64,794, eos 2). Ids equal what the seed's
  `ChatGLMTokenizer.encode(text, add_special_tokens=False)` gives: that tokenizer registers no
  added tokens, so it is plain SentencePiece encoding.
- "huggingface": a local Hugging Face tokenizer folder, loaded offline without remote code.
- "sentencepiece": a SentencePiece model, normally one trained here with
  `babyllama tokenizer train` (BPE with byte fallback, so no character is ever unknown).

Decoding skips ids outside the vocabulary and special tokens (they are not text). For
streaming, `IncrementalDecoder` gives out only text that later tokens cannot change, so a
multi-byte character is never split.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import random
import re
import shutil
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sentencepiece as spm

from babyllama import __version__
from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, atomic_write_json

SENTENCEPIECE_FILE = "tokenizer.model"
BABYLLAMA_CONFIG_FILE = "babyllama_tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
HF_TOKENIZER_FILE = "tokenizer.json"

CHATGLM_PIECES = 64_789
CHATGLM_SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")

# Files that define a Hugging Face tokenizer; weights that may share the folder are left out of
# the fingerprint so hashing stays cheap.
HF_TOKENIZER_FILE_PATTERNS = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
    "merges*",
    "*.model",
    "*.tiktoken",
)

# What `babyllama tokenizer train` feeds SentencePiece; see train_sentencepiece.
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_MAX_LINES = 2_000_000
DEFAULT_CHARACTER_COVERAGE = 0.9995
CONTROL_PIECES = 3  # <unk> <s> </s>
BYTE_PIECES = 256
MIN_VOCAB_SIZE = 384
CHARACTER_SHARE = 0.75  # of the pieces after control and byte pieces; the rest are merges
MAX_LINE_CHARS = 2000
UTF8_MAX_BYTES = 4
SPACE_SYMBOL = "\u2581"  # how SentencePiece writes a space inside pieces
REPLACEMENT_CHARACTER = "\ufffd"


class Tokenizer(ABC):
    """Text <-> token ids. Load one with `load_tokenizer(path)`."""

    kind: str
    name: str
    path: Path
    vocab_size: int
    eos_id: int
    bos_id: int | None
    fingerprint: str

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of `text`, with no special tokens added."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids of each text as an int32 array, on this thread only (for worker processes)."""
        return [np.array(ids, dtype=np.int32) for ids in self.encode_batch(texts)]

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens and ids outside the vocabulary give no text."""

    def incremental_decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)

    def describe(self) -> dict:
        """What manifests and run configs record about the tokenizer."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path),
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
            "sha256": self.fingerprint,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} vocab={self.vocab_size} eos={self.eos_id} path={self.path}>"


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model; ids are its pieces."""

    kind = "sentencepiece"

    def __init__(self, processor: spm.SentencePieceProcessor, *, path: Path, name: str, fingerprint: str):
        self._sp = processor
        self.piece_count = processor.get_piece_size()
        self.path = path
        self.name = name
        self.vocab_size = self.piece_count
        self.eos_id = processor.eos_id()
        self.bos_id = processor.bos_id() if processor.bos_id() >= 0 else None
        self.fingerprint = fingerprint
        if self.eos_id < 0:
            raise UserError(
                f"{path}: the SentencePiece model has no end-of-text piece (eos_id is -1); "
                "train one with `babyllama tokenizer train`, which sets eos 2"
            )

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]:
        """All texts at once on SentencePiece's own threads (-1: one a core)."""
        return self._sp.encode(list(texts), num_threads=num_threads)

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        # Arrays straight from C++ skip building a Python int per token: a third less CPU in prepare.
        return self._sp.encode(list(texts), num_threads=1, return_type="numpy")

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([i for i in map(int, ids) if 0 <= i < self.piece_count])


class ChatGLMTokenizer(SentencePieceTokenizer):
    """ChatGLM2-6B's tokenizer: its SentencePiece pieces, then five special tokens after them."""

    kind = "chatglm"

    def __init__(self, processor: spm.SentencePieceProcessor, *, path: Path, fingerprint: str):
        super().__init__(processor, path=path, name="chatglm2-6b", fingerprint=fingerprint)
        self.special_ids = {token: self.piece_count + i for i, token in enumerate(CHATGLM_SPECIAL_TOKENS)}
        self.vocab_size = self.piece_count + len(CHATGLM_SPECIAL_TOKENS)


class HuggingFaceTokenizer(Tokenizer):
    """A tokenizer folder saved by Hugging Face `save_pretrained`, loaded with AutoTokenizer."""

    kind = "huggingface"

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
        except Exception as e:  # transformers reports a bad folder through many exception types
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"{folder}: the Hugging Face tokenizer failed to load ({reason}); the folder needs the files "
                "`save_pretrained` writes (tokenizer.json and tokenizer_config.json), and tokenizers that "
                "need remote code are not supported"
            ) from None
        if self._tok.eos_token_id is None:
            raise UserError(
                f"{folder}: the Hugging Face tokenizer has no end-of-text token; set \"eos_token\" in "
                f"{folder / HF_CONFIG_FILE}"
            )
        self.path = folder
        self.name = folder.name
        self.vocab_size = len(self._tok)
        self.eos_id = self._tok.eos_token_id
        self.bos_id = self._tok.bos_token_id
        self.fingerprint = _fingerprint_files(
            sorted(p for p in folder.iterdir() if p.is_file() and _is_hf_tokenizer_file(p.name))
        )

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False, verbose=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        batch = self._tok(list(texts), add_special_tokens=False, return_attention_mask=False, verbose=False)
        return batch["input_ids"]

    def decode(self, ids: Iterable[int]) -> str:
        # No clean-up of spaces: it rewrites text next to punctuation, which breaks exact
        # round trips and lets a later token change text already streamed.
        return self._tok.decode(
            [i for i in map(int, ids) if 0 <= i < self.vocab_size],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )


class IncrementalDecoder:
    """Turns ids arriving one by one into text, giving out only text that is complete.

    The ids since a recent anchor token are decoded together, so everything a tokenizer does
    across token boundaries (SentencePiece dropping the space of the first piece, byte pieces
    joining into one character) happens just as in `decode` of the whole sequence. Text that
    ends in U+FFFD is held back: it is a character whose remaining bytes have not arrived yet.
    All pushes plus `flush()` join to exactly `tokenizer.decode(all ids)`.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._decode = tokenizer.decode
        self._window: list[int] = []
        self._given = 0  # characters of decode(window) already given out

    def push(self, ids: int | Iterable[int]) -> str:
        if isinstance(ids, Iterable):
            self._window.extend(int(i) for i in ids)
        else:
            self._window.append(int(ids))
        text = self._decode(self._window)
        complete = len(text.rstrip(REPLACEMENT_CHARACTER))
        new = text[self._given : complete]
        self._given = max(self._given, complete)
        if complete == len(text):
            self._move_anchor()
        return new

    def flush(self) -> str:
        """Whatever is held back (an unfinished character comes out as U+FFFD); then start over."""
        rest = self._decode(self._window)[self._given :]
        self._window = []
        self._given = 0
        return rest

    def _move_anchor(self) -> None:
        # Keep the last token as context when it is text on its own: then decoding from it
        # treats every later token exactly as decoding the whole sequence would.
        last = self._window[-1:]
        alone = self._decode(last)
        if alone and REPLACEMENT_CHARACTER not in alone:
            self._window = last
            self._given = len(alone)


def tokenizer_location(path: str | Path) -> Path:
    """`path` made absolute, refused when nothing is there; what it holds is judged on loading."""
    path = Path(path).absolute()
    if not path.exists():
        raise UserError(
            f"{path}: no such file or folder; give a tokenizer.model file or a tokenizer folder "
            "(train one with `babyllama tokenizer train --out DIR INPUT...`)"
        )
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer at `path`: a SentencePiece .model file or a tokenizer folder."""
    path = tokenizer_location(path)
    if path.is_dir():
        return _load_folder(path)
    return _load_model_file(path, path=path, name=_name_for_model_file(path))


def _load_folder(folder: Path) -> Tokenizer:
    model_file = folder / SENTENCEPIECE_FILE
    own_config = folder / BABYLLAMA_CONFIG_FILE
    if own_config.is_file():
        kind = _read_json(own_config).get("kind")
        if kind != SentencePieceTokenizer.kind:
            raise UserError(f"{own_config}: unknown tokenizer kind {kind!r}; expected \"sentencepiece\"")
        if not model_file.is_file():
            raise UserError(f"{folder}: {SENTENCEPIECE_FILE} is missing; train the tokenizer again")
        return _load_model_file(model_file, path=folder, name=folder.name, chatglm=False)
    hf_config = folder / HF_CONFIG_FILE
    hf_config_data = _read_json(hf_config) if hf_config.is_file() else None
    if hf_config_data is not None and hf_config_data.get("tokenizer_class") == "ChatGLMTokenizer":
        if not model_file.is_file():
            raise UserError(
                f"{folder}: {HF_CONFIG_FILE} names ChatGLMTokenizer but {SENTENCEPIECE_FILE} is missing; "
                "copy ChatGLM2-6B's tokenizer.model there"
            )
        return _load_model_file(model_file, path=folder, name=folder.name, chatglm=True)
    if hf_config_data is not None or (folder / HF_TOKENIZER_FILE).is_file():
        return HuggingFaceTokenizer(folder)
    if model_file.is_file():
        return _load_model_file(model_file, path=folder, name=folder.name)
    raise UserError(
        f"{folder}: no tokenizer here; expected {SENTENCEPIECE_FILE} (ChatGLM2's or one from "
        f"`babyllama tokenizer train`) or a Hugging Face tokenizer ({HF_TOKENIZER_FILE}, {HF_CONFIG_FILE})"
    )


def _load_model_file(model_file: Path, *, path: Path, name: str, chatglm: bool | None = None) -> Tokenizer:
    """A SentencePiece model file; ChatGLM2's is told by its piece count unless `chatglm` says."""
    data = _read_bytes(model_file)
    processor = _load_sentencepiece(data, model_file)
    fingerprint = "sha256:" + hashlib.sha256(data).hexdigest()
    if chatglm is None:
        chatglm = processor.get_piece_size() == CHATGLM_PIECES
    if chatglm:
        return ChatGLMTokenizer(processor, path=path, fingerprint=fingerprint)
    return SentencePieceTokenizer(processor, path=path, name=name, fingerprint=fingerprint)


def _name_for_model_file(model_file: Path) -> str:
    if model_file.stem == "tokenizer" and model_file.parent.name:
        return model_file.parent.name
    return model_file.stem


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def _load_sentencepiece(data: bytes, model_file: Path) -> spm.SentencePieceProcessor:
    not_a_model = UserError(
        f"{model_file}: not a SentencePiece model; give ChatGLM2's tokenizer.model, a folder from "
        "`babyllama tokenizer train`, or a Hugging Face tokenizer folder"
    )
    try:
        processor = spm.SentencePieceProcessor(model_proto=data) if data else None
    except RuntimeError:
        processor = None
    if processor is None or processor.get_piece_size() == 0:
        raise not_a_model
    return processor


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(_read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object; fix or remove the file")
    return data


def _is_hf_tokenizer_file(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in HF_TOKENIZER_FILE_PATTERNS)


def _fingerprint_files(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        data = _read_bytes(file)
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
    return "sha256:" + digest.hexdigest()


# --- training ---------------------------------------------------------------------------------


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


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser(
        "train",
        help="train a SentencePiece BPE tokenizer (byte fallback) on corpora",
        description="Train a SentencePiece BPE tokenizer with byte fallback on corpora, in the formats "
        "`babyllama prepare` reads. Writes DIR/tokenizer.model and DIR/babyllama_tokenizer.json.",
    )
    train.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files, folders or globs")
    train.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder, e.g. out/tokenizers/NAME"
    )
    train.add_argument(
        "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, metavar="N", help="vocabulary size (default %(default)s)"
    )
    train.add_argument(
        "--format", default="auto", metavar="FMT", help="corpus format (default: auto, sniffed per file)"
    )
    train.add_argument(
        "--max-lines",
        type=int,
        default=DEFAULT_MAX_LINES,
        metavar="N",
        help="train on at most N lines, sampled uniformly from all that are read (default %(default)s)",
    )
    train.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    train.add_argument("--verbose", action="store_true", help="show SentencePiece's own training log")

    info = actions.add_parser("info", help="show a tokenizer's kind, vocabulary, eos id and fingerprint")
    info.add_argument("path", type=Path, metavar="PATH", help="tokenizer.model file or tokenizer folder")
    info.add_argument("--json", action="store_true", help="print it as one JSON object")

    encode = actions.add_parser("encode", help="print the token ids of a text")
    encode.add_argument("path", type=Path, metavar="PATH", help="tokenizer.model file or tokenizer folder")
    encode.add_argument("text", metavar="TEXT")


def run(args: argparse.Namespace) -> int:
    if args.action == "train":
        return _run_train(args)
    if args.action == "info":
        return _run_info(args)
    return _run_encode(args)


def _run_train(args: argparse.Namespace) -> int:
    from babyllama.corpora import read_documents

    check_output_folder(args.out, args.force)
    if args.max_lines < 1:
        raise UserError(f"--max-lines must be at least 1, not {args.max_lines}")
    texts = ("".join(document.segments) for document in read_documents(args.inputs, args.format))
    train_sentencepiece(
        texts,
        args.out,
        args.vocab_size,
        max_lines=args.max_lines,
        force=args.force,
        log=lambda message: print(message, file=sys.stderr, flush=True),
        verbose=args.verbose,
    )
    tokenizer = load_tokenizer(args.out)
    print(f"{args.out}: vocabulary {tokenizer.vocab_size:,}, eos {tokenizer.eos_id}, {tokenizer.fingerprint}")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    description = load_tokenizer(args.path).describe()
    if args.json:
        print(json.dumps(description, ensure_ascii=False))
        return 0
    labels = {"sha256": "fingerprint", "vocab_size": "vocabulary"}
    for key, value in description.items():
        print(f"{labels.get(key, key) + ':':<13}{value if value is not None else '-'}")
    return 0


def _run_encode(args: argparse.Namespace) -> int:
    print(" ".join(map(str, load_tokenizer(args.path).encode(args.text))))
    return 0
