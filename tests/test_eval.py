"""`babyllama eval` against a hand computation, its choice of windows, and the trainer's validation loss."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_generate import TINY, write_checkpoint

from babyllama.data import MANIFEST_KIND, MANIFEST_VERSION, SftDataset, TokenDataset
from babyllama.evaluate import LossResult, mean_loss, spread_batches

SEQ_LEN = 16
WINDOWS = 5


def write_token_file(path, tokens: np.ndarray, tokenizer: dict, vocab_size: int = TINY.vocab_size):
    """A token file and its manifest, as `babyllama prepare` writes them."""
    tokens.astype(np.uint16).tofile(path)
    manifest = {"kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "dtype": "uint16", "tokens": len(tokens),
                "documents": 1, "eos_id": 2, "vocab_size": vocab_size, "tokenizer": tokenizer}
    path.with_name(path.name + ".json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sp_tokenizer):
    folder = tmp_path_factory.mktemp("eval") / "step_0000001"
    return folder, write_checkpoint(folder, TINY, sp_tokenizer, seed=3)


@pytest.fixture(scope="module")
def tokens_path(tmp_path_factory, sp_tokenizer):
    # Two tokens more than the windows need: a partial window at the end is never scored.
    tokens = np.random.default_rng(11).integers(0, TINY.vocab_size, WINDOWS * SEQ_LEN + 3)
    return write_token_file(tmp_path_factory.mktemp("tokens") / "held_out.bin", tokens, sp_tokenizer.describe())


def babyllama_eval(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", "eval", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def hand_computed_loss(model, tokens: np.ndarray, seq_len: int, windows: list[int]) -> float:
    """Mean -log softmax[target] over the given windows, with the MindSpore model's logits."""
    import mindspore as ms

    model.set_train(False)
    losses = []
    for w in windows:
        window = tokens[w * seq_len: w * seq_len + seq_len + 1].astype(np.int32)
        logits = model(ms.Tensor(window[None, :-1])).asnumpy()[0].astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        losses.extend(-log_probs[np.arange(seq_len), window[1:]])
    return float(np.mean(losses))


def test_eval_loss_equals_a_hand_computation_over_every_window(checkpoint, tokens_path):
    folder, model = checkpoint
    done = babyllama_eval("--ckpt", folder, "--data", tokens_path, "--seq-len", SEQ_LEN, "--tokens", 0, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    tokens = np.fromfile(tokens_path, np.uint16)
    expected = hand_computed_loss(model, tokens, SEQ_LEN, list(range(WINDOWS)))
    assert (report["tokens"], report["windows"]) == (WINDOWS * SEQ_LEN, WINDOWS)
    assert report["loss"] == pytest.approx(expected, rel=1e-5)
    assert report["perplexity"] == pytest.approx(np.exp(expected), rel=1e-5)


def test_a_token_budget_scores_windows_spread_evenly_over_the_file(checkpoint, tokens_path):
    folder, model = checkpoint
    done = babyllama_eval("--ckpt", folder, "--data", tokens_path, "--seq-len", SEQ_LEN, "--tokens", 40, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # 40 tokens round up to 3 windows of 16, picked at 0, 5/3 and 10/3 of the 5: windows 0, 1, 3.
    expected = hand_computed_loss(model, np.fromfile(tokens_path, np.uint16), SEQ_LEN, [0, 1, 3])
    assert (report["tokens"], report["windows"]) == (48, 3)
    assert report["loss"] == pytest.approx(expected, rel=1e-5)


def test_text_output_names_loss_perplexity_and_tokens_scored(checkpoint, tokens_path):
    done = babyllama_eval("--ckpt", checkpoint[0], "--data", tokens_path, "--seq-len", SEQ_LEN)
    assert done.returncode == 0, done.stderr
    assert "loss " in done.stdout and "perplexity " in done.stdout
    assert f"over {WINDOWS * SEQ_LEN} tokens in {WINDOWS} windows" in done.stdout
    assert "bits per byte " in done.stdout and " bytes of text)" in done.stdout


def test_eval_reports_bits_per_byte_of_the_text_its_windows_score(checkpoint, tokens_path, sp_tokenizer):
    from babyllama.measures import TextBytes, windows_bytes

    done = babyllama_eval("--ckpt", checkpoint[0], "--data", tokens_path, "--seq-len", SEQ_LEN, "--tokens", 40,
                          "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    dataset = TokenDataset(tokens_path, seq_len=SEQ_LEN, val_fraction=0.0)
    assert report["bytes"] == windows_bytes(TextBytes(sp_tokenizer, 2), dataset, [0, 1, 3]) > 0
    assert report["bpb"] == pytest.approx(report["loss"] * report["tokens"] / (report["bytes"] * np.log(2)))


def test_spread_batches_cover_the_picked_windows_in_order(tokens_path):
    dataset = TokenDataset(tokens_path, seq_len=SEQ_LEN, val_fraction=0.0)
    tokens = np.fromfile(tokens_path, np.uint16)
    batches = list(spread_batches(dataset, batch_size=2, n_windows=4))
    assert [x.shape for x, _ in batches] == [(2, SEQ_LEN), (2, SEQ_LEN)]
    firsts = [int(row[0]) for x, _ in batches for row in x]
    assert firsts == [int(tokens[w * SEQ_LEN]) for w in (0, 1, 2, 3)]
    x, y = batches[1]
    np.testing.assert_array_equal(y[1], tokens[3 * SEQ_LEN + 1: 4 * SEQ_LEN + 1])


def test_mean_loss_weights_each_batch_by_its_tokens():
    batches = [(np.zeros((3, 4)), np.zeros((3, 4))), (np.zeros((1, 4)), np.zeros((1, 4)))]
    losses = iter([1.0, 5.0])
    result = mean_loss(lambda x, y: next(losses), batches)
    assert result == LossResult(loss=(1.0 * 12 + 5.0 * 4) / 16, tokens=16, windows=4)


def test_a_window_longer_than_the_context_is_a_one_line_user_error(checkpoint, tokens_path):
    done = babyllama_eval("--ckpt", checkpoint[0], "--data", tokens_path, "--seq-len", TINY.max_seq_len + 1)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"babyllama eval: error: --seq-len {TINY.max_seq_len + 1} is longer than the "
                                   f"model's context ({TINY.max_seq_len})")


def test_tokens_from_another_tokenizer_are_refused_naming_the_file(checkpoint, tmp_path, sp_tokenizer):
    other = {**sp_tokenizer.describe(), "name": "other", "sha256": "sha256:" + "0" * 64}
    path = write_token_file(tmp_path / "other.bin", np.arange(100) % 50, other)
    done = babyllama_eval("--ckpt", checkpoint[0], "--data", path, "--seq-len", SEQ_LEN)
    assert done.returncode == 2
    assert str(path) in done.stderr and "prepared with the model's tokenizer" in done.stderr


@pytest.mark.slow
def test_eval_on_the_validation_split_gives_the_trainers_validation_loss(tmp_path, sample_jsonl, sp_tokenizer_dir):
    """A real run: `eval --split val` on its checkpoint reproduces the val_loss the trainer logged for that step."""
    data = tmp_path / "sanguo.bin"
    run = tmp_path / "run"
    commands = [
        ["prepare", "--tokenizer", sp_tokenizer_dir, "--out", data, "--progress", "none", sample_jsonl],
        ["train", "--run", run, "--data", data, "--preset", "tiny", "--dim", 64, "--n_layers", 2, "--n_heads", 4,
         "--n_kv_heads", 2, "--max_seq_len", 32, "--batch_size", 4, "--eval_iters", 3, "--max_steps", 3,
         "--eval_interval", 3, "--learning_rate", 0.01, "--decay_lr", "false", "--sample_tokens", 0],
    ]
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "babyllama", *map(str, command)], capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {row["step"]: row["val_loss"] for row in rows if row["kind"] == "eval"}
    logged_bpb = {row["step"]: row["val_bpb"] for row in rows if row["kind"] == "eval"}
    done = babyllama_eval("--ckpt", run, "--data", data, "--split", "val", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["checkpoint"].endswith("step_0000003")
    assert (report["tokens"], report["windows"]) == (3 * 4 * 32, 3 * 4)
    assert report["loss"] == pytest.approx(logged[3], rel=1e-5)
    assert report["bpb"] == pytest.approx(logged_bpb[3], rel=1e-5)
    # Training moved the loss, so matching step 3's is not matching the initial model's.
    assert logged[3] < logged[0] - 0.05


@pytest.mark.slow
def test_eval_on_the_validation_split_of_a_fine_tuning_run_gives_its_validation_loss(tmp_path, sample_jsonl,
                                                                                     sp_tokenizer_dir, sft_tokens):
    """A real fine-tuning run: `eval --split val` on its checkpoint and SFT file reproduces the val_loss
    (over answer tokens) the trainer logged for that step."""
    from babyllama.measures import scored_targets

    data = tmp_path / "sanguo.bin"
    parent, run = tmp_path / "base", tmp_path / "chat"
    shape = ["--dim", 64, "--n_layers", 2, "--n_heads", 4, "--n_kv_heads", 2, "--max_seq_len", 32]
    commands = [
        ["prepare", "--tokenizer", sp_tokenizer_dir, "--out", data, "--progress", "none", sample_jsonl],
        ["train", "--run", parent, "--data", data, "--preset", "tiny", *shape, "--batch_size", 4, "--max_steps", 2,
         "--decay_lr", "false", "--eval_interval", 1000, "--sample_tokens", 0],
        ["train", "--run", run, "--init-from", parent, "--data", sft_tokens, "--batch_size", 2, "--eval_iters", 2,
         "--max_steps", 3, "--eval_interval", 3, "--val_fraction", 0.5, "--learning_rate", 0.01,
         "--decay_lr", "false", "--sample_tokens", 0],
    ]
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "babyllama", *map(str, command)], capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {row["step"]: row["val_loss"] for row in rows if row["kind"] == "eval"}
    logged_bpb = {row["step"]: row["val_bpb"] for row in rows if row["kind"] == "eval"}
    done = babyllama_eval("--ckpt", run, "--data", sft_tokens, "--split", "val", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["checkpoint"].endswith("step_0000003") and report["sft"] is True
    # Two batches of two windows, each batch weighed by its answer tokens.
    assert report["windows"] == 2 * 2 and 0 < report["tokens"] < 2 * 2 * 32
    held_out = SftDataset(sft_tokens, seq_len=32, val_fraction=0.5)
    assert report["tokens"] == scored_targets(held_out, held_out.val_indices(2, 2), validation=True)
    assert report["loss"] == pytest.approx(logged[3], rel=1e-5)
    assert report["bpb"] == pytest.approx(logged_bpb[3], rel=1e-5)
    assert logged[3] != pytest.approx(logged[0], rel=1e-3), "training moved the loss"


# ---------------------------------------------------------------------------------------
# --progress jsonl and --batches, on a checkpoint written with numpy


def jsonl_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    from numpy_checkpoints import SMALL, write_numpy_checkpoint

    folder = write_numpy_checkpoint(tmp_path_factory.mktemp("small") / "step_0000005", SMALL)
    tokens = np.random.default_rng(5).integers(0, SMALL.vocab_size, 40 * SMALL.max_seq_len + 1)
    data = write_token_file(folder.parent / "small.bin", tokens, {}, vocab_size=SMALL.vocab_size)
    return folder, data, SMALL


def test_progress_jsonl_counts_windows_up_to_the_total_then_reports_the_loss(small_checkpoint):
    folder, data, cfg = small_checkpoint
    done = babyllama_eval("--ckpt", folder, "--data", data, "--batches", 3, "--batch-size", 4, "--progress", "jsonl")
    assert done.returncode == 0, done.stderr
    events = jsonl_events(done.stdout)
    assert [e["event"] for e in events[:2]] == ["start", "progress"] and events[-1]["event"] == "done"
    assert events[0]["total_windows"] == 12
    windows = [e["windows"] for e in events if e["event"] == "progress"]
    assert windows == sorted(windows) and windows[-1] == 12
    report = events[-1]
    assert (report["windows"], report["tokens"]) == (12, 12 * cfg.max_seq_len)
    # Neither the token file nor the checkpoint names a tokenizer: no text to count bytes of.
    assert report["bpb"] is None and report["bytes"] is None
    assert report["perplexity"] == pytest.approx(np.exp(report["loss"]))


def test_batches_of_the_validation_split_are_the_trainers_batches(small_checkpoint):
    folder, data, _ = small_checkpoint
    done = babyllama_eval("--ckpt", folder, "--data", data, "--split", "val", "--batches", 1, "--batch-size", 1,
                          "--progress", "jsonl")
    assert done.returncode == 0, done.stderr
    events = jsonl_events(done.stdout)
    assert events[0]["total_windows"] == 1 and events[-1]["windows"] == 1


def test_progress_jsonl_ends_in_an_error_event_and_the_one_line_error(small_checkpoint, tmp_path):
    folder, _, _ = small_checkpoint
    done = babyllama_eval("--ckpt", folder, "--data", tmp_path / "gone.bin", "--progress", "jsonl")
    assert done.returncode == 2
    (event,) = jsonl_events(done.stdout)
    assert event["event"] == "error" and str(tmp_path / "gone.bin") in event["message"]
    assert done.stderr.strip() == f"babyllama eval: error: {event['message']}"


def test_batches_and_tokens_cannot_both_be_given(small_checkpoint):
    folder, data, _ = small_checkpoint
    done = babyllama_eval("--ckpt", folder, "--data", data, "--batches", 2, "--tokens", 100)
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


# ---------------------------------------------------------------------------------------
# SFT token files: answer tokens only


SFT_PAIRS = [("刘备的两个结义兄弟是谁？", "关羽和张飞。"), ("诸葛亮字什么？", "字孔明，号卧龙。"),
             ("赤壁之战谁胜了？", "孙刘联军大胜曹操。")]


@pytest.fixture(scope="module")
def sft_tokens(tmp_path_factory, sp_tokenizer_dir):
    """The pairs a few times over, prepared as an SFT token file by `babyllama prepare`."""
    from babyllama.prepare import prepare

    folder = tmp_path_factory.mktemp("sft")
    source = folder / "pairs.jsonl"
    source.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": q},
                                                            {"role": "assistant", "content": a}]},
                                         ensure_ascii=False) + "\n" for q, a in SFT_PAIRS * 4), encoding="utf-8")
    prepare([source], "sft-conversations", sp_tokenizer_dir, folder / "pairs.bin", workers=1)
    return folder / "pairs.bin"


def hand_computed_answer_loss(model, tokens: np.ndarray, mask: np.ndarray, seq_len: int) -> tuple[float, int, int]:
    """Mean -log softmax[target] over the targets whose mask is 1, in every window holding one
    (MindSpore's logits); the number of such targets and of windows."""
    import mindspore as ms

    model.set_train(False)
    losses = []
    windows = 0
    for w in range((len(tokens) - 1) // seq_len):
        window = tokens[w * seq_len: w * seq_len + seq_len + 1].astype(np.int32)
        trained = mask[w * seq_len + 1: w * seq_len + seq_len + 1] == 1
        if not trained.any():
            continue
        windows += 1
        logits = model(ms.Tensor(window[None, :-1])).asnumpy()[0].astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        losses.extend(-log_probs[np.arange(seq_len), window[1:]][trained])
    return float(np.mean(losses)), len(losses), windows


def test_eval_of_an_sft_file_scores_the_answer_tokens_alone(checkpoint, sft_tokens, sp_tokenizer):
    from babyllama.measures import TextBytes, windows_bytes

    folder, model = checkpoint
    done = babyllama_eval("--ckpt", folder, "--data", sft_tokens, "--seq-len", SEQ_LEN, "--tokens", 0, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    tokens, mask = np.fromfile(sft_tokens, np.uint16), np.fromfile(str(sft_tokens) + ".mask", np.uint8)
    expected, answer_tokens, windows = hand_computed_answer_loss(model, tokens, mask, SEQ_LEN)
    assert 0 < answer_tokens < windows * SEQ_LEN
    assert report["sft"] is True and (report["tokens"], report["windows"]) == (answer_tokens, windows)
    assert report["loss"] == pytest.approx(expected, rel=1e-5)
    assert report["perplexity"] == pytest.approx(np.exp(expected), rel=1e-5)
    # Bits per byte over the text of the scored answer tokens (measures' count, as the trainer's val_bpb).
    dataset = SftDataset(sft_tokens, seq_len=SEQ_LEN, val_fraction=0.0)
    every = np.arange(dataset.train_windows)
    assert report["bytes"] == windows_bytes(TextBytes(sp_tokenizer, dataset.eos_id), dataset, every) > 0
    assert report["bpb"] == pytest.approx(report["loss"] * report["tokens"] / (report["bytes"] * np.log(2)))


def test_the_text_report_of_an_sft_file_says_it_counts_answer_tokens(checkpoint, sft_tokens):
    done = babyllama_eval("--ckpt", checkpoint[0], "--data", sft_tokens, "--seq-len", SEQ_LEN, "--tokens", 0)
    assert done.returncode == 0, done.stderr
    report = json.loads(babyllama_eval("--ckpt", checkpoint[0], "--data", sft_tokens, "--seq-len", SEQ_LEN,
                                       "--tokens", 0, "--json").stdout)
    assert f"over {report['tokens']:,} answer tokens (questions not scored)" \
        in done.stdout
    assert "bytes of answer text)" in done.stdout


def test_an_sft_file_in_another_chat_template_is_refused(tmp_path, sft_tokens, sp_tokenizer):
    from numpy_checkpoints import write_numpy_checkpoint

    from babyllama.chat_template import template_for

    ours = template_for(sp_tokenizer).describe()
    other = {**ours, "special_ids": {piece: i + 1 for piece, i in ours["special_ids"].items()}}
    folder = write_numpy_checkpoint(tmp_path / "step_0000001", TINY, sp_tokenizer.describe())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "chat_template": other}))
    done = babyllama_eval("--ckpt", folder, "--data", sft_tokens, "--seq-len", SEQ_LEN)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"babyllama eval: error: {sft_tokens}: conversations in the chat "
                                                "template 'babyllama-chat-v1'")
    assert line.endswith("evaluate on conversations prepared with the model's tokenizer")
    # Recording the file's template, the same checkpoint evaluates it.
    (folder / "config.json").write_text(json.dumps({**config, "chat_template": ours}))
    done = babyllama_eval("--ckpt", folder, "--data", sft_tokens, "--seq-len", SEQ_LEN, "--batches", 1)
    assert done.returncode == 0, done.stderr



def test_a_checkpoint_whose_recorded_chat_template_is_not_an_object_is_refused_in_one_line(tmp_path, sft_tokens,
                                                                                         sp_tokenizer):
    from numpy_checkpoints import write_numpy_checkpoint

    folder = write_numpy_checkpoint(tmp_path / "step_0000001", TINY, sp_tokenizer.describe())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "chat_template": "babyllama-chat-v1"}))
    done = babyllama_eval("--ckpt", folder, "--data", sft_tokens, "--seq-len", SEQ_LEN)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"babyllama eval: error: {folder / 'config.json'}: \"chat_template\" is not an object "
                           "(it is 'babyllama-chat-v1'); remove it to use the tokenizer's own template\n")
