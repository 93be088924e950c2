"""Fixtures shared by the whole suite: the real sample corpus and a real tokenizer trained on it.

Both are made once per test session; everything that needs a tokenizer uses this one.
"""

from __future__ import annotations

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
