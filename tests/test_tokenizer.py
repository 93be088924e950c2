"""Tokenizers: the three kinds behind one interface, training, streaming decode, the CLI.

Everything runs on real SentencePiece models. ChatGLM2's own tokenizer.model cannot be
shipped, so a "ChatGLM2-shaped" model stands in for it: our trained model padded to exactly
64,789 pieces with ChatGLM2's normaliser settings. Set BABYLLAMA_CHATGLM_TOKENIZER to the real
file to also check that one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from babyllama.errors import UserError
from babyllama.tokenizer import (
    BABYLLAMA_CONFIG_FILE,
    CHATGLM_PIECES,
    CHATGLM_SPECIAL_TOKENS,
    load_tokenizer,
    train_sentencepiece,
    training_lines,
)

from hf_tokenizers import save_byte_bpe

ROOT = Path(__file__).resolve().parents[1]
REPLACEMENT = "\ufffd"

VARIED_TEXTS = [
    "",
    " ",
    "   ",
    "\n",
    "话说天下大势，分久必合，合久必分。",
    "玄德曰：「吾乃中山靖王之后。」\n\n孔明笑曰：",
    "Hello, world!",
    "  two leading spaces, two trailing  ",
    "tabs\tand\r\nwindows line ends",
    "数字 1234567890 和 3.14159",
    "emoji 😀👍🏽 and a flag 🇨🇳",
    "rare CJK 𠀀𠀁𪚥 and 龘",
    "</s> and <unk> and <s> written in the text",
    "[gMASK]sop eop [MASK]",
    "全角：ＡＢＣ，１２３　全角空格",
    "def f(x):\n    return x ** 2\n",
    "Ελληνικά русский العربية 한국어 日本語のテキスト",
    "\x00\x01 control characters",
]


@pytest.fixture(scope="module")
def sample_texts(sample_jsonl) -> list[str]:
    from babyllama.corpora import read_documents

    return ["".join(doc.segments) for doc in read_documents([sample_jsonl], "c4")]


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tmp_path_factory, sample_texts) -> Path:
    """A Hugging Face tokenizer folder made here: byte-level BPE trained on the sample, saved by transformers."""
    # A few chapters are plenty; Chinese has no spaces, so every paragraph is one long word to merge in.
    return save_byte_bpe(sample_texts[:15], tmp_path_factory.mktemp("hf") / "sanguo-bytebpe", vocab_size=1500)


@pytest.fixture(scope="module")
def hf_tokenizer(hf_tokenizer_dir):
    return load_tokenizer(hf_tokenizer_dir)


@pytest.fixture(params=["sentencepiece", "chatglm", "huggingface"])
def any_tokenizer(request):
    fixture = {"sentencepiece": "sp_tokenizer", "chatglm": "chatglm_shaped", "huggingface": "hf_tokenizer"}
    return request.getfixturevalue(fixture[request.param])


def random_slices(texts: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    slices = []
    for _ in range(count):
        text = rng.choice(texts)
        start = rng.randrange(len(text))
        slices.append(text[start : start + rng.randint(1, 300)])
    return slices


def stream(tokenizer, ids: list[int], seed: int = 0, max_push: int = 1) -> list[str]:
    """What an incremental decoder gives out for `ids` pushed in random-sized groups, then flushed."""
    rng = random.Random(seed)
    decoder = tokenizer.incremental_decoder()
    pieces = []
    at = 0
    while at < len(ids):
        size = rng.randint(1, max_push)
        group = ids[at : at + size]
        pieces.append(decoder.push(group[0] if size == 1 else group))
        at += size
    pieces.append(decoder.flush())
    return pieces


# --- the trained SentencePiece tokenizer -------------------------------------------------------


def test_trained_tokenizer_has_chatglm_style_ids(sp_tokenizer, sp_tokenizer_dir):
    assert sp_tokenizer.kind == "sentencepiece"
    assert sp_tokenizer.name == sp_tokenizer_dir.name
    assert sp_tokenizer.vocab_size == 2000
    assert (sp_tokenizer.eos_id, sp_tokenizer.bos_id) == (2, 1)
    config = json.loads((sp_tokenizer_dir / BABYLLAMA_CONFIG_FILE).read_text())
    assert config["kind"] == "sentencepiece"
    assert config["sha256"] == sp_tokenizer.fingerprint


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_trained_tokenizer_round_trips_text_exactly(sp_tokenizer, text):
    ids = sp_tokenizer.encode(text)
    assert sp_tokenizer.decode(ids) == text
    assert 0 not in ids, "byte fallback means no character is unknown"
    assert not {1, 2} & set(ids), "encode adds no special tokens, even for '</s>' in the text"


def test_round_trip_holds_on_the_whole_sample(sp_tokenizer, sample_texts):
    encoded = sp_tokenizer.encode_batch(sample_texts)
    assert all(sp_tokenizer.decode(ids) == text for ids, text in zip(encoded, sample_texts))


def test_rare_character_is_spelled_in_its_utf8_bytes(sp_tokenizer):
    ids = sp_tokenizer.encode("𠀀")
    byte_piece_ids = range(3, 3 + 256)
    assert len(ids) == len("𠀀".encode()) == 4
    assert all(i in byte_piece_ids for i in ids)


def test_small_vocabulary_leaves_rare_sample_characters_to_bytes(sp_tokenizer, sample_texts):
    # 三国演义 has ~4,000 distinct characters, more than a 2,000 vocabulary holds.
    distinct = set("".join(sample_texts))
    spelled_in_bytes = [c for c in distinct if len(sp_tokenizer.encode(c)) > 1 and len(c.encode()) > 1]
    assert len(distinct) > 2000
    assert spelled_in_bytes
    assert all(sp_tokenizer.decode(sp_tokenizer.encode(c)) == c for c in spelled_in_bytes)


def test_training_lines_drop_blank_lines_and_cut_long_ones():
    text = "第一回\n\n  \n" + "甲" * 25 + "\n末"
    assert list(training_lines(text, max_chars=10)) == ["第一回", "甲" * 10, "甲" * 10, "甲" * 5, "末"]


# --- behaviour shared by all kinds ---------------------------------------------------------------


def test_encode_batch_equals_encoding_one_by_one(any_tokenizer, sample_texts):
    texts = VARIED_TEXTS + random_slices(sample_texts, 200, seed=1)
    assert any_tokenizer.encode_batch(texts) == [any_tokenizer.encode(t) for t in texts]
    assert any_tokenizer.encode_batch([]) == []


def test_encode_arrays_equals_encoding_one_by_one(any_tokenizer, sample_texts):
    texts = VARIED_TEXTS + random_slices(sample_texts, 200, seed=2)
    arrays = any_tokenizer.encode_arrays(texts)
    assert all(a.dtype == np.int32 for a in arrays)
    assert [a.tolist() for a in arrays] == [any_tokenizer.encode(t) for t in texts]


def test_decode_skips_ids_outside_the_vocabulary(any_tokenizer):
    ids = any_tokenizer.encode("话说天下大势")
    outside = [any_tokenizer.vocab_size, any_tokenizer.vocab_size + 1000, -1]
    assert any_tokenizer.decode(outside[:1] + ids + outside) == any_tokenizer.decode(ids) == "话说天下大势"


def test_decode_gives_no_text_for_end_of_text(any_tokenizer):
    ids = any_tokenizer.encode("分久必合")
    eos = any_tokenizer.eos_id
    assert any_tokenizer.decode([eos] + ids + [eos]) == any_tokenizer.decode(ids) == "分久必合"


def test_describe_names_the_tokenizer_for_manifests(any_tokenizer):
    described = any_tokenizer.describe()
    assert described == {
        "name": any_tokenizer.name,
        "kind": any_tokenizer.kind,
        "path": str(any_tokenizer.path),
        "vocab_size": any_tokenizer.vocab_size,
        "eos_id": any_tokenizer.eos_id,
        "bos_id": any_tokenizer.bos_id,
        "sha256": any_tokenizer.fingerprint,
    }
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", described["sha256"])
    json.dumps(described)


def test_loading_the_path_again_gives_the_same_tokenizer(any_tokenizer):
    again = load_tokenizer(any_tokenizer.path)
    assert again.describe() == any_tokenizer.describe()
    assert again.encode("三顾茅庐 hello") == any_tokenizer.encode("三顾茅庐 hello")


def test_fingerprint_follows_the_files_not_the_path(any_tokenizer, tmp_path):
    copy = tmp_path / "elsewhere"
    if any_tokenizer.path.is_dir():
        shutil.copytree(any_tokenizer.path, copy)
    else:
        copy.mkdir()
        shutil.copy(any_tokenizer.path, copy / any_tokenizer.path.name)
        copy = copy / any_tokenizer.path.name
    moved = load_tokenizer(copy)
    assert moved.path != any_tokenizer.path
    assert moved.fingerprint == any_tokenizer.fingerprint


def test_different_tokenizers_have_different_fingerprints(sp_tokenizer, chatglm_shaped, hf_tokenizer):
    assert len({sp_tokenizer.fingerprint, chatglm_shaped.fingerprint, hf_tokenizer.fingerprint}) == 3


# --- streaming ---------------------------------------------------------------------------------


def test_streaming_never_splits_a_character_that_is_spelled_in_bytes(any_tokenizer):
    text = "𠀀𠀁𪚥曰：龘龘，😀 ok 𠀀"
    ids = any_tokenizer.encode(text)
    assert len(ids) > len(text), "the text must be spelled partly in byte pieces for this test to mean anything"
    pieces = stream(any_tokenizer, ids)
    assert not any(REPLACEMENT in piece for piece in pieces)
    assert "".join(pieces) == any_tokenizer.decode(ids) == text


def test_streaming_random_sample_slices_joins_to_decode(any_tokenizer, sample_texts):
    texts = random_slices(sample_texts, 150, seed=2) + VARIED_TEXTS
    for seed, text in enumerate(texts):
        ids = any_tokenizer.encode(text)
        pieces = stream(any_tokenizer, ids, seed=seed, max_push=3)
        assert "".join(pieces) == any_tokenizer.decode(ids), text
        assert not any(REPLACEMENT in piece for piece in pieces), text


def test_streaming_gives_text_as_soon_as_it_is_complete(sp_tokenizer):
    ids = sp_tokenizer.encode("曰𠀀")
    decoder = sp_tokenizer.incremental_decoder()
    first = ids[: len(sp_tokenizer.encode("曰"))]
    assert decoder.push(first) == "曰"
    byte_ids = ids[len(first) :]
    assert [decoder.push(i) for i in byte_ids] == ["", "", "", "𠀀"]
    assert decoder.flush() == ""


def test_streaming_takes_numpy_ids(sp_tokenizer):
    import numpy as np

    ids = np.array(sp_tokenizer.encode("赤壁之战𠀀"), dtype=np.uint16)
    decoder = sp_tokenizer.incremental_decoder()
    assert decoder.push(ids[:2]) + "".join(decoder.push(i) for i in ids[2:]) + decoder.flush() == "赤壁之战𠀀"
    assert sp_tokenizer.decode(ids) == "赤壁之战𠀀"


def test_flush_gives_an_unfinished_character_and_starts_over(sp_tokenizer):
    decoder = sp_tokenizer.incremental_decoder()
    unfinished = sp_tokenizer.encode("𠀀")[:2]
    assert decoder.push(unfinished) == ""
    assert decoder.flush() == sp_tokenizer.decode(unfinished) != ""
    assert decoder.push(sp_tokenizer.encode("新")) == "新"


def test_streaming_with_a_leading_space_symbol_matches_decode(chatglm_shaped):
    # ChatGLM2 puts a dummy space in front and decode drops it from the first piece only.
    ids = chatglm_shaped.encode("玄德 曰  hello") + chatglm_shaped.encode(" 孔明")
    specials = list(chatglm_shaped.special_ids_after_pieces.values())
    mixed = specials[:2] + ids[:3] + [chatglm_shaped.eos_id] + ids[3:] + specials[2:]
    for sequence in (ids, mixed):
        pieces = stream(chatglm_shaped, sequence)
        assert "".join(pieces) == chatglm_shaped.decode(sequence)
    assert chatglm_shaped.decode(ids).startswith("玄德 曰  hello")


def test_streaming_keeps_the_dummy_space_after_tokens_that_are_no_text(chatglm_shaped):
    # Each encode call puts a space symbol in front; after the first text it is a real space.
    eos, gmask = chatglm_shaped.eos_id, chatglm_shaped.special_ids_after_pieces["[gMASK]"]
    encode = chatglm_shaped.encode
    ids = encode("玄德") + [eos] + encode("孔明") + [gmask] + encode("曰")
    assert chatglm_shaped.decode(ids) == "玄德 孔明 曰"
    assert "".join(stream(chatglm_shaped, ids)) == "玄德 孔明 曰"


# --- ChatGLM2 ----------------------------------------------------------------------------------


def test_chatglm_shaped_file_is_recognised_by_its_piece_count(chatglm_shaped, chatglm_shaped_dir):
    assert chatglm_shaped.kind == "chatglm"
    assert chatglm_shaped.name == "chatglm2-6b"
    assert chatglm_shaped.vocab_size == 64_794
    assert chatglm_shaped.eos_id == 2
    assert chatglm_shaped.special_ids_after_pieces == {
        "[MASK]": 64_789,
        "[gMASK]": 64_790,
        "[sMASK]": 64_791,
        "sop": 64_792,
        "eop": 64_793,
    }
    assert tuple(chatglm_shaped.special_ids_after_pieces) == CHATGLM_SPECIAL_TOKENS
    assert load_tokenizer(chatglm_shaped_dir).kind == "chatglm"


def test_chatglm_special_tokens_decode_to_no_text(chatglm_shaped):
    ids = chatglm_shaped.encode("天下大势")
    specials = list(chatglm_shaped.special_ids_after_pieces.values())
    assert chatglm_shaped.decode(specials + ids + specials) == "天下大势"
    assert all(i < CHATGLM_PIECES for i in chatglm_shaped.encode("[gMASK]sop eop"))


def test_chatglm_folder_is_recognised_by_its_tokenizer_config(tmp_path, sp_tokenizer_dir):
    folder = tmp_path / "chatglm_tokenizer"
    folder.mkdir()
    shutil.copy(sp_tokenizer_dir / "tokenizer.model", folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ChatGLMTokenizer"}))
    tokenizer = load_tokenizer(folder)
    assert tokenizer.kind == "chatglm"
    assert tokenizer.vocab_size == 2000 + len(CHATGLM_SPECIAL_TOKENS)


def test_chatglm_encode_is_plain_sentencepiece_encoding(chatglm_shaped, chatglm_shaped_dir, sample_texts):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(chatglm_shaped_dir / "tokenizer.model"))
    for text in VARIED_TEXTS + random_slices(sample_texts, 50, seed=3):
        reference = [processor.PieceToId(piece) for piece in processor.EncodeAsPieces(text)]
        assert chatglm_shaped.encode(text) == reference, text


REAL_CHATGLM = os.environ.get("BABYLLAMA_CHATGLM_TOKENIZER")


@pytest.mark.skipif(not REAL_CHATGLM, reason="set BABYLLAMA_CHATGLM_TOKENIZER to ChatGLM2-6B's tokenizer.model")
def test_real_chatglm2_tokenizer():
    import sentencepiece

    tokenizer = load_tokenizer(REAL_CHATGLM)
    assert (tokenizer.kind, tokenizer.vocab_size, tokenizer.eos_id) == ("chatglm", 64_794, 2)
    assert tokenizer.encode("你好") == [36474, 54591]
    model_file = Path(REAL_CHATGLM) / "tokenizer.model" if Path(REAL_CHATGLM).is_dir() else REAL_CHATGLM
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    for text in VARIED_TEXTS:
        assert tokenizer.encode(text) == [processor.PieceToId(p) for p in processor.EncodeAsPieces(text)], text
        assert "".join(stream(tokenizer, tokenizer.encode(text))) == tokenizer.decode(tokenizer.encode(text))


# --- Hugging Face ------------------------------------------------------------------------------


def test_hugging_face_folder_matches_its_own_tokenizer(hf_tokenizer, hf_tokenizer_dir, sample_texts):
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(hf_tokenizer_dir / "tokenizer.json"))
    assert hf_tokenizer.kind == "huggingface"
    assert hf_tokenizer.name == "sanguo-bytebpe"
    assert hf_tokenizer.eos_id == backend.token_to_id("<|endoftext|>")
    assert hf_tokenizer.vocab_size == backend.get_vocab_size()
    for text in VARIED_TEXTS + random_slices(sample_texts, 50, seed=4):
        assert hf_tokenizer.encode(text) == backend.encode(text, add_special_tokens=False).ids
        assert hf_tokenizer.decode(hf_tokenizer.encode(text)) == text


def test_hugging_face_tokenizer_without_end_of_text_is_refused(tmp_path, hf_tokenizer_dir):
    folder = tmp_path / "no-eos"
    shutil.copytree(hf_tokenizer_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("eos_token")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"no-eos.*end-of-text"):
        load_tokenizer(folder)


def test_broken_hugging_face_folder_is_a_user_error(tmp_path, hf_tokenizer_dir):
    folder = tmp_path / "broken"
    shutil.copytree(hf_tokenizer_dir, folder)
    (folder / "tokenizer.json").write_text("{ not json")
    with pytest.raises(UserError, match=r"broken: the Hugging Face tokenizer failed to load"):
        load_tokenizer(folder)


# --- bad paths ---------------------------------------------------------------------------------


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"nowhere: no such file or folder"):
        load_tokenizer(tmp_path / "nowhere")


@pytest.mark.parametrize("content", [b"", b"just some text\n", b'{"tokenizer_class": "x"}'])
def test_file_that_is_not_a_sentencepiece_model_is_a_user_error(tmp_path, content):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"tokenizer.model: not a SentencePiece model"):
        load_tokenizer(path)


def test_folder_without_a_tokenizer_is_a_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"no tokenizer here"):
        load_tokenizer(tmp_path)


def test_own_config_with_unknown_kind_is_a_user_error(tmp_path, sp_tokenizer_dir):
    folder = tmp_path / "odd"
    shutil.copytree(sp_tokenizer_dir, folder)
    (folder / BABYLLAMA_CONFIG_FILE).write_text(json.dumps({"kind": "wordpiece"}))
    with pytest.raises(UserError, match=r"unknown tokenizer kind 'wordpiece'"):
        load_tokenizer(folder)


# --- training ----------------------------------------------------------------------------------


def test_training_refuses_a_non_empty_folder_unless_forced(tmp_path, sample_texts):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match=r"tok: folder exists and is not empty.*--force"):
        train_sentencepiece(sample_texts[:20], out, vocab_size=1000)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    train_sentencepiece(sample_texts[:20], out, vocab_size=1000, force=True)
    assert sorted(p.name for p in out.iterdir()) == [BABYLLAMA_CONFIG_FILE, "tokenizer.model"]
    assert load_tokenizer(out).vocab_size == 1000
    assert [p.name for p in tmp_path.iterdir()] == ["tok"], "no temporary folder is left behind"


def test_training_samples_at_most_max_lines(tmp_path, sample_texts):
    out = train_sentencepiece(sample_texts, tmp_path / "tok", vocab_size=500, max_lines=300)
    training = json.loads((out / BABYLLAMA_CONFIG_FILE).read_text())["training"]
    assert training["lines_trained_on"] == 300
    assert training["lines_read"] > 300
    assert training["documents"] == len(sample_texts)
    tokenizer = load_tokenizer(out)
    assert tokenizer.decode(tokenizer.encode(sample_texts[-1])) == sample_texts[-1]


def test_training_a_failed_run_leaves_nothing_behind(tmp_path):
    with pytest.raises(UserError, match=r"could not train a vocabulary of 5,000"):
        train_sentencepiece(["短短的一句话。"], tmp_path / "tok", vocab_size=5000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "texts, vocab_size, message",
    [(["天下大势"], 100, r"vocabulary size 100 is too small"), (["", "\n\n"], 1000, r"no text")],
)
def test_training_bad_requests_are_user_errors(tmp_path, texts, vocab_size, message):
    with pytest.raises(UserError, match=message):
        train_sentencepiece(texts, tmp_path / "tok", vocab_size=vocab_size)


# --- command line ------------------------------------------------------------------------------


def babyllama(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "babyllama", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_trains_inspects_and_encodes(tmp_path, sample_jsonl):
    out = tmp_path / "out" / "tokenizers" / "sanguo"
    trained = babyllama(
        "tokenizer", "train", "--out", str(out), "--vocab-size", "1000", str(sample_jsonl), cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr
    assert "vocabulary 1,000, eos 2" in trained.stdout
    assert "read 120 documents" in trained.stderr
    tokenizer = load_tokenizer(out)

    info = babyllama("tokenizer", "info", str(out), "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout) == tokenizer.describe()
    plain = babyllama("tokenizer", "info", str(out), cwd=tmp_path)
    assert f"fingerprint: {tokenizer.fingerprint}" in plain.stdout

    encoded = babyllama("tokenizer", "encode", str(out), "曹操 𠀀", cwd=tmp_path)
    assert encoded.returncode == 0, encoded.stderr
    assert [int(i) for i in encoded.stdout.split()] == tokenizer.encode("曹操 𠀀")

    again = babyllama("tokenizer", "train", "--out", str(out), str(sample_jsonl), cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0
    assert "folder exists and is not empty" in again.stderr


def test_cli_reports_a_bad_tokenizer_path_in_one_line(tmp_path):
    result = babyllama("tokenizer", "info", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("babyllama tokenizer: error: ")
    assert "missing: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr
