"""The three kinds of tokenizer: `SentencePieceTokenizer`, `ChatGLMTokenizer`, `HuggingFaceTokenizer`.

See docs/ARCHITECTURE.md, "tokenizer/".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from babyllama.errors import UserError
from babyllama.tokenizer.folder import HF_CONFIG_FILE, fingerprint_files, is_hf_tokenizer_file
from babyllama.tokenizer.interface import Tokenizer

CHATGLM_PIECES = 64_789
CHATGLM_SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")


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

    def special_ids(self) -> dict[str, int]:
        return {self._sp.id_to_piece(i): i for i in range(self.piece_count) if self._sp.is_control(i)}


class ChatGLMTokenizer(SentencePieceTokenizer):
    """ChatGLM2-6B's tokenizer: its SentencePiece pieces, then five special tokens after them."""

    kind = "chatglm"

    def __init__(self, processor: spm.SentencePieceProcessor, *, path: Path, fingerprint: str):
        super().__init__(processor, path=path, name="chatglm2-6b", fingerprint=fingerprint)
        self.special_ids_after_pieces = {token: self.piece_count + i for i, token in enumerate(CHATGLM_SPECIAL_TOKENS)}
        self.vocab_size = self.piece_count + len(CHATGLM_SPECIAL_TOKENS)

    def special_ids(self) -> dict[str, int]:
        return {**super().special_ids(), **self.special_ids_after_pieces}


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
        self.fingerprint = fingerprint_files(
            sorted(p for p in folder.iterdir() if p.is_file() and is_hf_tokenizer_file(p.name))
        )

    # split_special_tokens: text spelling a special token ("<|end|>", "</s>") is encoded as text, as
    # SentencePiece encodes it, so no text makes a special id (a chat template's markers among them).
    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False, split_special_tokens=True, verbose=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        batch = self._tok(list(texts), add_special_tokens=False, split_special_tokens=True,
                          return_attention_mask=False, verbose=False)
        return batch["input_ids"]

    def special_ids(self) -> dict[str, int]:
        return dict(zip(self._tok.all_special_tokens, self._tok.all_special_ids))

    def decode(self, ids: Iterable[int]) -> str:
        # No clean-up of spaces: it rewrites text next to punctuation, which breaks exact
        # round trips and lets a later token change text already streamed.
        return self._tok.decode(
            [i for i in map(int, ids) if 0 <= i < self.vocab_size],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
