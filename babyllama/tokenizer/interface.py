"""The `Tokenizer` interface (text <-> ids) every kind provides, and `IncrementalDecoder`,
which streams text as ids arrive without ever splitting a character. See docs/ARCHITECTURE.md."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

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

    def special_ids(self) -> dict[str, int]:
        """Tokens that no text encodes to (control pieces, added special tokens), by name."""
        return {}

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
