"""`load_tokenizer`: the tokenizer a path holds, its kind told from the files there (ChatGLM2's
model by its piece count). See docs/ARCHITECTURE.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import sentencepiece as spm

from babyllama.errors import UserError
from babyllama.tokenizer.folder import (
    BABYLLAMA_CONFIG_FILE,
    HF_CONFIG_FILE,
    HF_TOKENIZER_FILE,
    SENTENCEPIECE_FILE,
    read_file_bytes,
)
from babyllama.tokenizer.interface import Tokenizer
from babyllama.tokenizer.kinds import CHATGLM_PIECES, ChatGLMTokenizer, HuggingFaceTokenizer, SentencePieceTokenizer


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
    data = read_file_bytes(model_file)
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
        data = json.loads(read_file_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object; fix or remove the file")
    return data
