"""Fixtures shared by the whole suite: the real sample corpus and a real tokenizer trained on it.

Both are made once per test session; everything that needs a tokenizer uses this one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_jsonl(tmp_path_factory) -> Path:
    """三国演义 as JSON lines (one chapter a line), fetched the way `babyllama sample` does."""
    from babyllama.sample import fetch_sample

    return fetch_sample(tmp_path_factory.mktemp("data") / "sample")


@pytest.fixture(scope="session")
def sp_tokenizer_dir(tmp_path_factory, sample_jsonl) -> Path:
    """A small SentencePiece BPE tokenizer (vocabulary 2,000) trained on the sample corpus."""
    from babyllama.corpora import read_documents
    from babyllama.tokenizer import train_sentencepiece

    out = tmp_path_factory.mktemp("tokenizers") / "sanguo"
    texts = ("".join(doc.segments) for doc in read_documents([sample_jsonl], "c4"))
    train_sentencepiece(texts, out, vocab_size=2000)
    return out


@pytest.fixture(scope="session")
def sp_tokenizer(sp_tokenizer_dir):
    from babyllama.tokenizer import load_tokenizer

    return load_tokenizer(sp_tokenizer_dir)


@pytest.fixture(scope="session")
def chatglm_shaped_dir(tmp_path_factory, sp_tokenizer_dir) -> Path:
    """A real SentencePiece file with ChatGLM2's shape: 64,789 pieces, eos 2, a dummy space in front."""
    from sentencepiece import sentencepiece_model_pb2

    from babyllama.tokenizer import CHATGLM_PIECES

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((sp_tokenizer_dir / "tokenizer.model").read_bytes())
    for i in range(CHATGLM_PIECES - len(model.pieces)):
        piece = model.pieces.add()
        piece.piece = f"<unused{i}>"
        piece.score = 0.0
        piece.type = sentencepiece_model_pb2.ModelProto.SentencePiece.UNUSED
    model.normalizer_spec.add_dummy_prefix = True
    folder = tmp_path_factory.mktemp("chatglm") / "chatglm2-shaped"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())
    return folder


@pytest.fixture(scope="session")
def chatglm_shaped(chatglm_shaped_dir):
    from babyllama.tokenizer import load_tokenizer

    return load_tokenizer(chatglm_shaped_dir / "tokenizer.model")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size): a new tmpfs of `size` ("512k") at tmp_path / name, unmounted after the test.
    Mounting needs root: the test is skipped without it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = []

    def mount(name: str, size: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmpfs):
    """A 512 KB tmpfs, too small for a tiny model's weights."""
    return tmpfs("disk", "512k")
