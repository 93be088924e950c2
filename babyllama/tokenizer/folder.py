"""The files of a tokenizer folder: their names, reading them, and the fingerprint of a
Hugging Face tokenizer. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from pathlib import Path

from babyllama.errors import UserError

SENTENCEPIECE_FILE = "tokenizer.model"
BABYLLAMA_CONFIG_FILE = "babyllama_tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
HF_TOKENIZER_FILE = "tokenizer.json"

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


def read_file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def is_hf_tokenizer_file(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in HF_TOKENIZER_FILE_PATTERNS)


def fingerprint_files(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        data = read_file_bytes(file)
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
    return "sha256:" + digest.hexdigest()
