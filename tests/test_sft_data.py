"""SFT data: conversation corpora (sft-alpaca, sft-conversations) through `babyllama prepare` into
token files with a loss mask, and back out as masked batches; masks checked against ones written
out by hand, on the session's real tokenizers."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from babyllama.chat_template import template_for
from babyllama.corpora import iter_records, sniff_format
from babyllama.data import (
    IGNORE_ID,
    BatchSampler,
    SftDataset,
    TokenDataset,
    is_sft_data,
    open_token_file,
    trained_windows,
)
from babyllama.errors import UserError
from babyllama.prepare import OutputPaths, prepare
from babyllama.tokenizer import CHAT_TOKENS

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, records) -> Path:
    lines = (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


ALPACA = [
    {"instruction": "桃园结义的是谁？", "input": "", "output": "刘备、关羽、张飞。"},
    {"instruction": "把这句话译成白话", "input": "分久必合，合久必分。", "output": "分开久了一定会合，合久了一定会分。",
     "system": "你是说书人。", "history": [["谁年纪最大？", "刘备。"]]},
]
CONVERSATIONS = [
    {"conversations": [{"role": "user", "content": "桃园结义的是谁？"}, {"role": "assistant", "content": "刘备、关羽、张飞。"}]},
    {"conversations": [{"role": "system", "content": "你是说书人。"}, {"role": "user", "content": "谁年纪最大？"},
                       {"role": "assistant", "content": "刘备。"}, {"role": "user", "content": "最小呢？"},
                       {"role": "assistant", "content": "张飞。"}]},
    {"system": "你是说书人。",
     "conversations": [{"from": "human", "value": "谁年纪最大？"}, {"from": "gpt", "value": "刘备。"}]},
    {"messages": [{"role": "user", "content": "最小呢？"}, {"role": "assistant", "content": "张飞。"}]},
]
# The same conversations as messages: what each record above means.
ALPACA_MESSAGES = [
    [("user", "桃园结义的是谁？"), ("assistant", "刘备、关羽、张飞。")],
    [("system", "你是说书人。"), ("user", "谁年纪最大？"), ("assistant", "刘备。"),
     ("user", "把这句话译成白话\n分久必合，合久必分。"), ("assistant", "分开久了一定会合，合久了一定会分。")],
]
CONVERSATION_MESSAGES = [
    [("user", "桃园结义的是谁？"), ("assistant", "刘备、关羽、张飞。")],
    [("system", "你是说书人。"), ("user", "谁年纪最大？"), ("assistant", "刘备。"), ("user", "最小呢？"),
     ("assistant", "张飞。")],
    [("system", "你是说书人。"), ("user", "谁年纪最大？"), ("assistant", "刘备。")],
    [("user", "最小呢？"), ("assistant", "张飞。")],
]


def ours_by_hand(tokenizer, turns) -> tuple[list[int], list[int]]:
    """Our template written out: <|role|> content <|end|> a turn, the answers and their <|end|>
    trained, then eos (not trained)."""
    specials = tokenizer.special_ids()
    marker = dict(zip(("system", "user", "assistant"), (specials[t] for t in CHAT_TOKENS)))
    end = specials[CHAT_TOKENS[-1]]
    ids: list[int] = []
    mask: list[int] = []
    for role, content in turns:
        encoded = tokenizer.encode(content)
        ids += [marker[role], *encoded, end]
        mask += [0] + [int(role == "assistant")] * (len(encoded) + 1)
    return ids + [tokenizer.eos_id], mask + [0]


def read_token_file(out: Path) -> tuple[list[int], list[int]]:
    token_file = open_token_file(out, sft=True)
    return token_file.open().tolist(), token_file.open_mask().tolist()


# --- reading the formats -------------------------------------------------------------------------


def test_each_format_reads_roles_and_contents(tmp_path):
    for fmt, records, expected in [("sft-alpaca", ALPACA, ALPACA_MESSAGES),
                                   ("sft-conversations", CONVERSATIONS, CONVERSATION_MESSAGES)]:
        path = write_jsonl(tmp_path / f"{fmt}.jsonl", records)
        documents = list(iter_records(path, fmt))
        assert [list(zip(d.roles, d.segments)) for d in documents] == expected
        assert [d.line for d in documents] == list(range(1, len(records) + 1))


def test_a_conversations_file_is_sniffed_and_an_instruction_set_stays_pretraining_text(tmp_path):
    assert sniff_format(write_jsonl(tmp_path / "c.jsonl", CONVERSATIONS)) == "sft-conversations"
    assert sniff_format(write_jsonl(tmp_path / "m.jsonl", CONVERSATIONS[3:])) == "sft-conversations"
    assert sniff_format(write_jsonl(tmp_path / "a.jsonl", ALPACA)) == "medical-sft"


@pytest.mark.parametrize("fmt, record, reason", [
    ("sft-alpaca", {"input": "x", "output": "y"}, "missing field 'instruction'"),
    ("sft-alpaca", {"instruction": "x", "output": 3}, "field 'output' is int, expected a string"),
    ("sft-alpaca", {"instruction": "x", "output": "y", "system": ["s"]}, "field 'system' is a list"),
    ("sft-alpaca", {"instruction": "x", "output": "y", "history": [["q"]]}, "history[0]: expected a [question, answer]"),
    ("sft-conversations", {"turns": []}, "missing field 'conversations' (or 'messages')"),
    ("sft-conversations", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0]: role 'bot' is not"),
    ("sft-conversations", {"conversations": [{"role": "bot", "content": "x"}]}, "conversations[0]: role 'bot' is not"),
    ("sft-conversations", {"conversations": [{"from": "chatgpt", "value": "x"}]}, "'from' 'chatgpt' is not one of"),
    ("sft-conversations", {"conversations": [{"from": "human", "content": "x"}]}, "missing field 'value'"),
    ("sft-conversations", {"conversations": ["hi"]}, "conversations[0]: expected a JSON object, found a string"),
])
def test_a_malformed_record_is_named_with_the_reason(tmp_path, fmt, record, reason):
    path = write_jsonl(tmp_path / "x.jsonl", [record])
    (bad,) = list(iter_records(path, fmt))
    assert str(bad).startswith(f"{path}:1: ") and reason in bad.reason


# --- prepare: ids and masks --------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_writes_the_ids_and_the_mask_written_out_by_hand(tmp_path, sp_tokenizer_dir, sp_tokenizer, workers):
    for fmt, records, expected in [("sft-alpaca", ALPACA, ALPACA_MESSAGES),
                                   ("sft-conversations", CONVERSATIONS, CONVERSATION_MESSAGES)]:
        corpus = write_jsonl(tmp_path / f"{fmt}.jsonl", records)
        out = tmp_path / f"{fmt}-{workers}.bin"
        prepare([corpus], fmt, sp_tokenizer_dir, out, workers=workers)
        by_hand = [ours_by_hand(sp_tokenizer, turns) for turns in expected]
        assert read_token_file(out) == (sum((i for i, _ in by_hand), []), sum((m for _, m in by_hand), []))


def test_chatglm2s_format_trains_the_last_answer_only(tmp_path, chatglm_shaped_dir, chatglm_shaped):
    corpus = write_jsonl(tmp_path / "c.jsonl", CONVERSATIONS[:2])
    out = tmp_path / "glm.bin"
    manifest = prepare([corpus], "sft-conversations", chatglm_shaped_dir / "tokenizer.model", out, workers=1)
    specials = chatglm_shaped.special_ids()
    prefix = [specials["[gMASK]"], specials["sop"]]
    asked = [prefix + chatglm_shaped.encode("[Round 1]\n\n问：桃园结义的是谁？\n\n答："),
             prefix + chatglm_shaped.encode("你是说书人。\n\n[Round 1]\n\n问：谁年纪最大？\n\n答：刘备。\n\n"
                                            "[Round 2]\n\n问：最小呢？\n\n答：")]
    answers = [chatglm_shaped.encode(a) + [chatglm_shaped.eos_id] for a in ("刘备、关羽、张飞。", "张飞。")]
    ids = [*asked[0], *answers[0], *asked[1], *answers[1]]
    mask = [0] * len(asked[0]) + [1] * len(answers[0]) + [0] * len(asked[1]) + [1] * len(answers[1])
    assert read_token_file(out) == (ids, mask)
    assert manifest["chat_template"] == {"name": "chatglm2"} and manifest["dtype"] == "uint16"


def test_the_manifest_says_sft_with_its_mask_template_and_counts(tmp_path, sp_tokenizer_dir, sp_tokenizer):
    corpus = write_jsonl(tmp_path / "c.jsonl", CONVERSATIONS)
    out = tmp_path / "chat.bin"
    manifest = prepare([corpus], "auto", sp_tokenizer_dir, out, workers=1)
    on_disk = json.loads(OutputPaths(out).manifest.read_text(encoding="utf-8"))
    assert on_disk == manifest
    ids, mask = read_token_file(out)
    assert manifest["kind"] == "sft" and manifest["version"] == 1
    assert manifest["mask"] == "chat.bin.mask" and OutputPaths(out).mask.stat().st_size == len(ids)
    assert manifest["chat_template"] == template_for(sp_tokenizer).describe()
    assert manifest["conversations"] == manifest["documents"] == len(CONVERSATIONS)
    assert manifest["tokens"] == len(ids) and manifest["trained_tokens"] == sum(mask) > 0
    assert manifest["sources"] == [{"path": str(corpus), "size": corpus.stat().st_size, "format": "sft-conversations"}]
    assert manifest["tokenizer"] == sp_tokenizer.describe() and manifest["eos_id"] == sp_tokenizer.eos_id


def test_malformed_records_and_conversations_the_template_refuses_are_skipped_counted_and_named(
    tmp_path, sp_tokenizer_dir
):
    corpus = write_jsonl(tmp_path / "c.jsonl", [
        CONVERSATIONS[0],
        "{broken",
        {"conversations": [{"role": "user", "content": "只问不答"}]},
        {"conversations": [{"role": "assistant", "content": "先答"}, {"role": "user", "content": "后问"}]},
        {"conversations": []},
        CONVERSATIONS[1],
    ])
    out = tmp_path / "chat.bin"
    result = subprocess.run(
        [sys.executable, "-m", "babyllama", "prepare", "--tokenizer", str(sp_tokenizer_dir), "--format",
         "sft-conversations", "--out", str(out), "--progress", "lines", str(corpus)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads(OutputPaths(out).manifest.read_text(encoding="utf-8"))
    assert manifest["conversations"] == 2 and manifest["skipped"]["malformed"] == 4
    assert manifest["skipped"]["examples"] == [
        f"{corpus}:2: bad JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{corpus}:3: the conversation must end with an assistant turn",
        f"{corpus}:4: turn 1 is assistant where user was expected (a system turn may come first, then user "
        "and assistant take turns)",
        f"{corpus}:5: the conversation has no turns",
    ]
    summary = result.stderr.strip().splitlines()
    assert summary[-5].startswith(f"wrote {out}") and "2 conversations" in summary[-5]
    assert f"{manifest['trained_tokens']:,} are trained on" in summary[-5] and "4 malformed" in summary[-5]
    assert [line.strip() for line in summary[-4:]] == manifest["skipped"]["examples"]


# --- refusals ------------------------------------------------------------------------------------


def run_prepare(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", "prepare", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, out: Path, *words: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr
    assert list(out.parent.glob(out.name + "*")) == []


def test_a_tokenizer_without_a_chat_template_is_refused_before_anything_is_written(tmp_path, sp_tokenizer_dir):
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((sp_tokenizer_dir / "tokenizer.model").read_bytes())
    for piece in model.pieces:
        if piece.piece in CHAT_TOKENS:
            piece.piece = f"<older{piece.piece}>"  # as a tokenizer trained before the chat tokens
    older = tmp_path / "older.model"
    older.write_bytes(model.SerializeToString())
    corpus = write_jsonl(tmp_path / "c.jsonl", CONVERSATIONS)
    out = tmp_path / "out" / "chat.bin"
    assert_refused(run_prepare("--tokenizer", older, "--out", out, corpus), out, "has no chat tokens",
                   "babyllama tokenizer train")
    assert not out.parent.exists()


def test_conversations_and_pretraining_text_in_one_prepare_are_refused(tmp_path, sp_tokenizer_dir):
    conversations = write_jsonl(tmp_path / "a-chat.jsonl", CONVERSATIONS)
    text = write_jsonl(tmp_path / "b-text.jsonl", [{"text": "话说天下大势，分久必合，合久必分。"}])
    out = tmp_path / "out" / "mixed.bin"
    assert_refused(run_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, tmp_path), out,
                   f"mix conversations for fine-tuning ({conversations}: sft-conversations)",
                   f"pretraining text ({text}: c4)")
    assert not out.parent.exists()


def test_inputs_whose_every_conversation_is_refused_say_why_and_write_nothing(tmp_path, sp_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"conversations": [{"role": "user", "content": "只问不答"}]}] * 2)
    out = tmp_path / "out" / "chat.bin"
    assert_refused(run_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, corpus), out,
                   f"nothing was written: {corpus}: 2 malformed records, the first on line 1: the conversation must "
                   "end with an assistant turn")


@pytest.fixture(scope="module")
def sft_and_pretraining_files(tmp_path_factory, sp_tokenizer_dir) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("kinds")
    sft = folder / "chat.bin"
    prepare([write_jsonl(folder / "c.jsonl", CONVERSATIONS * 20)], "sft-conversations", sp_tokenizer_dir, sft, workers=1)
    text = folder / "text.bin"
    prepare([write_jsonl(folder / "t.jsonl", [{"text": "话说天下大势，分久必合，合久必分。" * 20}] * 5)], "c4",
            sp_tokenizer_dir, text, workers=1)
    return sft, text


def test_pretraining_readers_refuse_an_sft_file_saying_how_to_fine_tune(sft_and_pretraining_files):
    sft, _ = sft_and_pretraining_files
    says = (f"{sft}: an SFT token file (conversations with a loss mask), not pretraining text: fine-tune on it "
            f"with `babyllama train --init-from RUN --data {sft}`")
    for read in (open_token_file, lambda p: TokenDataset(p, seq_len=8), lambda p: TokenDataset(p.parent, seq_len=8)):
        with pytest.raises(UserError) as refused:
            read(sft)
        assert str(refused.value) == says


def test_the_sft_reader_refuses_pretraining_files_and_a_mask_passed_as_data(sft_and_pretraining_files, tmp_path):
    sft, text = sft_and_pretraining_files
    seed = tmp_path / "seed.bin"  # no manifest: the seed's pretraining corpus
    np.arange(100, dtype=np.uint16).tofile(seed)
    for path in (text, seed):
        with pytest.raises(UserError, match=f"{path}: a pretraining token file .* make an SFT token file with "
                                            "`babyllama prepare --format sft-alpaca`"):
            SftDataset(path, seq_len=8)
    mask = OutputPaths(sft).mask
    for sft_flag in (False, True):
        with pytest.raises(UserError, match=r"the loss mask of an SFT token file; pass the token file itself \(chat.bin\)"):
            open_token_file(mask, sft=sft_flag)
    assert is_sft_data(sft) and is_sft_data(sft.parent / "chat.bin") and not is_sft_data(text)
    assert not is_sft_data(seed) and not is_sft_data(mask)


def test_a_missing_or_mismatched_mask_is_refused(sft_and_pretraining_files, tmp_path):
    sft, _ = sft_and_pretraining_files
    copy = tmp_path / "chat.bin"
    copy.write_bytes(sft.read_bytes())
    OutputPaths(copy).manifest.write_bytes(OutputPaths(sft).manifest.read_bytes())
    with pytest.raises(UserError, match="its loss mask chat.bin.mask is missing; re-run `babyllama prepare`"):
        open_token_file(copy, sft=True)
    OutputPaths(copy).mask.write_bytes(OutputPaths(sft).mask.read_bytes()[:-1])
    with pytest.raises(UserError, match="the token file holds .* tokens \\(a byte each\\)"):
        open_token_file(copy, sft=True)


# --- resuming --------------------------------------------------------------------------------------


class StopAfter:
    """A progress callback that interrupts the run after `chunks` progress events."""

    def __init__(self, chunks: int):
        self.left = chunks

    def __call__(self, event: dict) -> None:
        if event["event"] == "progress":
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


@pytest.fixture(scope="module")
def long_conversations(tmp_path_factory, sample_jsonl) -> Path:
    """Conversations about every paragraph of the sample: a long user turn, a short answer."""
    chapters = [json.loads(line)["text"] for line in sample_jsonl.read_text(encoding="utf-8").splitlines()[:10]]
    paragraphs = [p.strip() for chapter in chapters for p in chapter.split("\n") if p.strip()]
    records = [{"conversations": [{"role": "user", "content": f"这一段说了什么？{p}"},
                                  {"role": "assistant", "content": p[:12]}]} for p in paragraphs]
    return write_jsonl(tmp_path_factory.mktemp("long") / "long.jsonl", records)


def test_an_interrupted_prepare_resumes_to_the_same_ids_and_mask(tmp_path, long_conversations, sp_tokenizer_dir):
    clean = tmp_path / "clean.bin"
    prepare([long_conversations], "sft-conversations", sp_tokenizer_dir, clean, workers=1)
    out = tmp_path / "t.bin"
    paths = OutputPaths(out)
    with pytest.raises(KeyboardInterrupt):
        prepare([long_conversations], "sft-conversations", sp_tokenizer_dir, out, workers=2, chunk_bytes=5000,
                progress=StopAfter(2))
    journal = json.loads(paths.journal.read_text())
    assert not out.exists() and not paths.mask.exists()
    assert paths.mask_partial.stat().st_size == journal["counts"]["tokens"] > 0
    # As if killed between writing a chunk and recording it: bytes past the journal, in both files.
    for partial in (paths.partial, paths.mask_partial):
        with open(partial, "ab") as f:
            f.write(b"\x07" * 64)
    events = []
    resumed = prepare([long_conversations], "sft-conversations", sp_tokenizer_dir, out, workers=2, chunk_bytes=3000,
                      progress=events.append)
    assert any(e["event"] == "note" and "resuming" in e["message"] for e in events)
    assert out.read_bytes() == clean.read_bytes()
    assert paths.mask.read_bytes() == OutputPaths(clean).mask.read_bytes()
    clean_manifest = json.loads(OutputPaths(clean).manifest.read_text())
    for key in ("tokens", "conversations", "trained_tokens", "skipped"):
        assert resumed[key] == clean_manifest[key]
    assert not paths.partial.exists() and not paths.mask_partial.exists() and not paths.journal.exists()


def test_a_journal_whose_mask_is_gone_starts_over(tmp_path, long_conversations, sp_tokenizer_dir):
    out = tmp_path / "t.bin"
    paths = OutputPaths(out)
    with pytest.raises(KeyboardInterrupt):
        prepare([long_conversations], "sft-conversations", sp_tokenizer_dir, out, workers=1, chunk_bytes=5000,
                progress=StopAfter(1))
    paths.mask_partial.unlink()
    events = []
    prepare([long_conversations], "sft-conversations", sp_tokenizer_dir, out, workers=1, progress=events.append)
    assert any(e["event"] == "note" and e["message"] == f"starting over: {paths.mask_partial} is missing or shorter "
               "than its journal says" for e in events)
    assert OutputPaths(out).mask.stat().st_size == out.stat().st_size // 2


# --- batches -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory, long_conversations, sp_tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("sft") / "long.bin"
    prepare([long_conversations], "sft-conversations", sp_tokenizer_dir, out, workers=1)
    return out


SEQ = 16


def test_targets_are_ignored_where_the_mask_is_zero_and_every_window_trains_something(sft_file):
    dataset = SftDataset(sft_file, seq_len=SEQ, val_fraction=0.05)
    ids = np.fromfile(sft_file, dtype=np.uint16).astype(np.int64)
    mask = np.fromfile(OutputPaths(sft_file).mask, dtype=np.uint8)
    every = max(0, (len(ids) - 1) // SEQ)
    with_answers = [w for w in range(every) if mask[w * SEQ + 1 : (w + 1) * SEQ + 1].any()]
    assert 0 < len(with_answers) < every / 2  # long questions: most windows hold no answer
    seen = []
    for validation, count, batch in ((False, dataset.train_windows, dataset.train_batch),
                                     (True, dataset.val_windows, dataset.val_batch)):
        indices = np.arange(count)
        _, starts = dataset.window_starts(indices, validation)
        x, y = batch(indices)
        assert x.dtype == y.dtype == np.int32 and x.shape == y.shape == (count, SEQ)
        for row, start in enumerate(starts.tolist()):
            assert x[row].tolist() == ids[start : start + SEQ].tolist()
            trained = mask[start + 1 : start + SEQ + 1] == 1
            assert y[row].tolist() == np.where(trained, ids[start + 1 : start + SEQ + 1], IGNORE_ID).tolist()
            assert trained.any()
        seen += (starts // SEQ).tolist()
    assert sorted(seen) == with_answers and len(set(seen)) == len(seen)
    assert dataset.val_windows == round(len(with_answers) * 0.05)
    assert trained_windows(mask, SEQ).tolist() == with_answers == trained_windows(mask, SEQ, chunk_tokens=50).tolist()


def test_sft_batches_follow_the_sampler_by_seed_and_step_and_reopen_after_pickling(sft_file):
    dataset = SftDataset(sft_file, seq_len=SEQ)
    first = BatchSampler(dataset, batch_size=4, seed=7, accum=2)
    again = BatchSampler(pickle.loads(pickle.dumps(dataset)), batch_size=4, seed=7, accum=2)
    for step in (0, 3, 50):
        for micro in (0, 1):
            x, y = first.batch(step, micro)
            assert np.array_equal(x, again.batch(step, micro)[0]) and np.array_equal(y, again.batch(step, micro)[1])
            assert (y != IGNORE_ID).any(axis=1).all() and (x >= 0).all()
    assert not np.array_equal(first.batch(0)[1], BatchSampler(dataset, batch_size=4, seed=8).batch(0)[1])
    described = dataset.describe()
    assert described["kind"] == "sft" and described["train_windows"] == dataset.train_windows
    assert described["trained_tokens"] == int(np.fromfile(OutputPaths(sft_file).mask, dtype=np.uint8).sum())


def test_one_row_validation_batches_keep_their_inputs(sft_file):
    # A single row's inputs and targets are one contiguous buffer: masking the targets must not touch the inputs.
    dataset = SftDataset(sft_file, seq_len=SEQ, val_fraction=0.05)
    ids = np.fromfile(sft_file, dtype=np.uint16)
    for (x, y), start in zip(dataset.val_batches(1), dataset.window_starts(dataset.val_indices(1), True)[1]):
        assert x[0].tolist() == ids[start : start + SEQ].tolist()
        assert (y == IGNORE_ID).any()


def test_a_pretraining_dataset_never_holds_ignore_ids(sft_and_pretraining_files):
    _, text = sft_and_pretraining_files
    dataset = TokenDataset(text, seq_len=8, val_fraction=0.1)
    assert not dataset.sft and SftDataset.sft
    x, y = BatchSampler(dataset, batch_size=4, seed=0).batch(0)
    assert (x >= 0).all() and (y >= 0).all()


def test_files_without_a_trained_window_are_refused(tmp_path, sp_tokenizer_dir):
    question = "话说天下大势，分久必合，合久必分。" * 6
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"conversations": [{"role": "user", "content": question},
                                                                   {"role": "assistant", "content": "是。"}]}])
    out = tmp_path / "one.bin"
    prepare([corpus], "sft-conversations", sp_tokenizer_dir, out, workers=1)
    tokens = open_token_file(out, sft=True).n_tokens
    half = (tokens - 1) // 2 + 1  # one window, its targets the first half: the question only
    with pytest.raises(UserError, match=f"no window of seq_len \\+ 1 = {half + 1} tokens holds a trained token"):
        SftDataset(out, seq_len=half, val_fraction=0)
    assert SftDataset(out, seq_len=tokens - 1, val_fraction=0).train_windows == 1
