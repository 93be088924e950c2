"""Tokenizers: one interface over three kinds (ChatGLM2's, Hugging Face folders, SentencePiece
models trained here), chosen by what a path holds. The names below are the package's
interface. See docs/ARCHITECTURE.md."""

from babyllama.tokenizer.folder import (
    BABYLLAMA_CONFIG_FILE,
    HF_CONFIG_FILE,
    HF_TOKENIZER_FILE,
    HF_TOKENIZER_FILE_PATTERNS,
    SENTENCEPIECE_FILE,
)
from babyllama.tokenizer.interface import Tokenizer
from babyllama.tokenizer.kinds import CHATGLM_PIECES, CHATGLM_SPECIAL_TOKENS, SentencePieceTokenizer
from babyllama.tokenizer.loading import load_tokenizer, tokenizer_location
from babyllama.tokenizer.training import CHAT_TOKENS, SPACE_SYMBOL, train_sentencepiece, training_lines

__all__ = [
    "BABYLLAMA_CONFIG_FILE",
    "CHATGLM_PIECES",
    "CHAT_TOKENS",
    "CHATGLM_SPECIAL_TOKENS",
    "HF_CONFIG_FILE",
    "HF_TOKENIZER_FILE",
    "HF_TOKENIZER_FILE_PATTERNS",
    "SENTENCEPIECE_FILE",
    "SPACE_SYMBOL",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "tokenizer_location",
    "train_sentencepiece",
    "training_lines",
]
