"""babyllama.measures: bits per byte and the unigram baseline against hand computations on real
token files (the real SentencePiece tokenizer of the suite), FLOPs per token, the device's peak."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from babyllama.config import ModelConfig, param_count
from babyllama.data import MANIFEST_KIND, MANIFEST_VERSION, TokenDataset
from babyllama.measures import (
    BASELINES_FILE,
    PEAK_ENV,
    Peak,
    RunMeasures,
    TextBytes,
    UnigramCount,
    bits_per_byte,
    device_peak,
    flops_per_token,
    matmul_parameters,
    openblas_thread_functions,
    stored_unigram_loss,
    table_peak,
    unigram_loss,
    windows_bytes,
)

# Rare characters and emoji the 2,000-piece tokenizer spells in byte pieces, spaces it spells with
# its leading-space marker, and ASCII.
KNOWN_TEXTS = ("滚滚长江东逝水，浪花淘尽英雄。 Hello world 🦙🐉 龘靐齉", "是非成败转头空 🀄 abc  def\n青山依旧在")
SEQ_LEN = 7


def write_tokens(path: Path, tokens, tokenizer) -> Path:
    np.asarray(tokens, dtype=np.uint16).tofile(path)
    manifest = {"kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "dtype": "uint16", "tokens": len(tokens),
                "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.describe()}
    path.with_name(path.name + ".json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def known_token_file(tmp_path: Path, tokenizer) -> tuple[Path, list[str]]:
    """eos, then each text's ids and an eos, the last text padded with "!" until the windows of
    SEQ_LEN tile every token after the first: then the windows' targets are exactly the texts."""
    texts = list(KNOWN_TEXTS)
    while True:
        tokens = [tokenizer.eos_id]
        for text in texts:
            tokens += tokenizer.encode(text) + [tokenizer.eos_id]
        if (len(tokens) - 1) % SEQ_LEN == 0:
            return write_tokens(tmp_path / "known.bin", tokens, tokenizer), texts
        texts[-1] += "!"


@pytest.fixture(scope="module")
def prefix_tokenizer(tmp_path_factory, sample_jsonl):
    """A real SentencePiece model that, like ChatGLM2's, puts a leading-space marker before a text
    (add_dummy_prefix) and drops it again from the first piece it decodes."""
    import io

    import sentencepiece as spm

    from babyllama.corpora import read_documents
    from babyllama.tokenizer.kinds import SentencePieceTokenizer

    lines = [line for doc in read_documents([sample_jsonl], "c4") for line in "".join(doc.segments).splitlines()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines + ["Hello world, a b c"] * 50), model_writer=model,
                                   vocab_size=3000, model_type="bpe", byte_fallback=True, add_dummy_prefix=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   character_coverage=0.98, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return SentencePieceTokenizer(processor, path=tmp_path_factory.mktemp("prefix"), name="prefix",
                                  fingerprint="sha256:" + "1" * 64)


@pytest.mark.parametrize("which", ["sp_tokenizer", "prefix_tokenizer"])
def test_bits_per_byte_equals_a_hand_computation_on_a_known_text(tmp_path, request, which):
    sp_tokenizer = request.getfixturevalue(which)
    path, texts = known_token_file(tmp_path, sp_tokenizer)
    assert all(sp_tokenizer.decode(sp_tokenizer.encode(text)) == text for text in texts)
    dataset = TokenDataset(path, seq_len=SEQ_LEN, val_fraction=0.0)
    tokens = dataset.file_tokens(0)
    windows = np.arange(dataset.train_windows)
    # Windows begin and end inside characters spelled in byte pieces.
    alone = [sp_tokenizer.decode(tokens[w * SEQ_LEN + 1: (w + 1) * SEQ_LEN + 1]) for w in windows]
    assert any("\ufffd" in text for text in alone)
    assert sum(len(text.encode("utf-8")) for text in alone) != sum(len(text.encode("utf-8")) for text in texts)

    text_bytes = TextBytes(sp_tokenizer, sp_tokenizer.eos_id)
    by_window = [windows_bytes(text_bytes, dataset, [w]) for w in windows]
    hand_bytes = sum(len(text.encode("utf-8")) for text in texts)
    assert sum(by_window) == windows_bytes(text_bytes, dataset, windows) == hand_bytes
    scored = dataset.train_windows * SEQ_LEN
    loss = 2.5
    assert bits_per_byte(loss, hand_bytes / scored) == pytest.approx(loss * scored / (hand_bytes * math.log(2)))
    # A window listed twice (as the validation batches may list one) counts twice.
    assert windows_bytes(text_bytes, dataset, [0, 0]) == 2 * by_window[0]
    assert bits_per_byte(float("nan"), hand_bytes / scored) is None and bits_per_byte(1.0, 0.0) is None


def test_any_cut_of_a_real_corpus_adds_up_to_the_bytes_of_its_documents(tmp_path, sample_jsonl, sp_tokenizer):
    from babyllama.corpora import read_documents

    documents = ["".join(doc.segments) for doc, _ in zip(read_documents([sample_jsonl], "c4"), range(6))]
    tokens = np.array([sp_tokenizer.eos_id] + [t for text in documents
                                               for t in sp_tokenizer.encode(text) + [sp_tokenizer.eos_id]])
    text_bytes = TextBytes(sp_tokenizer, sp_tokenizer.eos_id)
    hand_bytes = sum(len(text.encode("utf-8")) for text in documents)
    for size in (1, 3, 64):
        runs = [(start, min(start + size, len(tokens))) for start in range(1, len(tokens), size)]
        assert sum(text_bytes.between(tokens, start, end) for start, end in runs) == hand_bytes, size
    split = sum("\ufffd" in sp_tokenizer.decode(tokens[start:start + 3]) for start in range(1, len(tokens), 3))
    assert split > 100  # the corpus's rare characters are byte pieces, cut between runs


def test_unigram_baseline_equals_a_hand_computation(tmp_path, sp_tokenizer):
    tokens = np.random.default_rng(3).integers(3, 40, 41)
    dataset = TokenDataset(write_tokens(tmp_path / "t.bin", tokens, sp_tokenizer), seq_len=4, val_fraction=0.25)
    assert (dataset.train_windows, dataset.val_windows) == (8, 2)

    def entropy(ids) -> float:
        counts = np.array(list(Counter(ids.tolist()).values()), dtype=np.float64)
        return float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())

    # The targets of the 8 training windows: tokens 1 to 32; the held-out ones are not counted.
    exact = unigram_loss(dataset)
    assert (exact.counted, exact.total, exact.exact) == (32, 32, True)
    assert exact.loss == pytest.approx(entropy(tokens[1:33]), abs=1e-12)
    # Over a budget, blocks spread evenly: 2 blocks of 4 of the 8 are tokens 1-4 and 17-20.
    sampled = unigram_loss(dataset, max_tokens=8, block=4)
    assert (sampled.counted, sampled.total, sampled.exact) == (8, 32, False)
    assert sampled.loss == pytest.approx(entropy(np.concatenate([tokens[1:5], tokens[17:21]])), abs=1e-12)


def test_the_unigram_count_is_kept_in_the_run_until_the_data_changes(tmp_path, sp_tokenizer):
    path = write_tokens(tmp_path / "t.bin", np.arange(3, 43), sp_tokenizer)
    dataset = TokenDataset(path, seq_len=4, val_fraction=0.0)
    first, kept = stored_unigram_loss(tmp_path, dataset)
    assert not kept and first.loss == pytest.approx(math.log(36))
    stored = json.loads((tmp_path / BASELINES_FILE).read_text())
    (tmp_path / BASELINES_FILE).write_text(json.dumps({**stored, "unigram_loss": 1.5}))
    again, kept = stored_unigram_loss(tmp_path, dataset)
    assert kept and again.loss == 1.5
    write_tokens(path, np.full(40, 5), sp_tokenizer)
    recounted, kept = stored_unigram_loss(tmp_path, TokenDataset(path, seq_len=4, val_fraction=0.0))
    assert not kept and recounted.loss == 0.0


def test_flops_per_token_counts_every_matmul_weight_and_the_attention():
    cfg = ModelConfig(vocab_size=2000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
    assert cfg.hidden_dim == 192
    kv = 2 * 16
    by_hand = 2 * (64 * 64 + 64 * kv + 64 * kv + 64 * 64 + 3 * 64 * 192) + 2000 * 64
    assert matmul_parameters(cfg) == by_hand
    # Every parameter but the norms, with the tied embedding counted as the output layer.
    assert matmul_parameters(cfg) == param_count(cfg) - (2 * cfg.n_layers + 1) * cfg.dim
    assert flops_per_token(cfg) == 6 * by_hand + 12 * 2 * 64 * 32


@pytest.mark.parametrize("name, dtype, expected", [
    ("NVIDIA A100-SXM4-80GB", "bfloat16", ("A100", 312.0)),
    ("NVIDIA A10", "bfloat16", ("A10", 125.0)),
    ("NVIDIA H100 80GB HBM3", "bfloat16", ("H100 SXM", 989.5)),
    ("NVIDIA H100 PCIe", "float16", ("H100 PCIe", 756.5)),
    ("Tesla V100-SXM2-32GB", "float16", ("V100 SXM2", 125.0)),
    ("Tesla V100-SXM2-32GB", "bfloat16", None),
    ("NVIDIA GeForce RTX 4090", "bfloat16", ("GeForce RTX 4090", 165.2)),
    ("NVIDIA GeForce RTX 3090 Ti", "bfloat16", None),
    ("NVIDIA L40S", "bfloat16", ("L40S", 362.05)),
    ("NVIDIA A100-SXM4-80GB", "float32", None),
    ("910B3", "bfloat16", None),
])
def test_the_peak_table_knows_devices_by_their_smi_names(name, dtype, expected):
    assert table_peak(name, dtype) == expected


def test_the_peak_of_a_run_comes_from_the_table_the_environment_or_a_measured_matmul(monkeypatch):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    gpus = device_peak("GPU", "bfloat16", 2, 1, ["NVIDIA A100-SXM4-80GB"])
    assert gpus == Peak(2 * 312e12, "table: A100 bfloat16 dense 312 TFLOP/s x 2")
    unknown = device_peak("Ascend", "bfloat16", 1, 1, ["910B3"])
    assert unknown.flops is None and PEAK_ENV in unknown.source
    monkeypatch.setenv(PEAK_ENV, "280")
    assert device_peak("Ascend", "bfloat16", 8, 1, ["910B3"]) == Peak(8 * 280e12, f"{PEAK_ENV}=280 x 8")
    monkeypatch.delenv(PEAK_ENV)

    blas = openblas_thread_functions()
    before = blas[0]() if blas else None
    cpu = device_peak("CPU", "float32", 1, 1)
    assert cpu.flops > 1e8 and cpu.source == "measured: float32 matmul on 1 threads"
    assert (blas[0]() if blas else None) == before


def test_train_rows_get_bits_per_byte_flops_and_mfu_from_the_run_measures():
    measures = RunMeasures(uniform_loss=math.log(2000), unigram=UnigramCount(6.0, 10, 10, 0.0), bytes_per_token=3.0,
                           val_bytes_per_token=2.5, flops_per_token=1_000_000, peak=Peak(4e9, "measured"))
    fields = measures.train_fields(4.0, 1000.0)
    assert fields == {"bpb": pytest.approx(4.0 / (3.0 * math.log(2))), "flops_per_s": 1e9, "mfu": 0.25}
    assert measures.train_fields(4.0, None) == {"bpb": fields["bpb"], "flops_per_s": None, "mfu": None}
    assert measures.val_bpb(5.0) == pytest.approx(5.0 / (2.5 * math.log(2)))
    unknown_peak = RunMeasures(**{**vars(measures), "peak": Peak(None, "unknown")})
    assert unknown_peak.train_fields(4.0, 1000.0)["mfu"] is None
    assert set(measures.row(7)) == {"kind", "step", "uniform_loss", "unigram_loss", "bytes_per_token",
                                    "val_bytes_per_token", "flops_per_token", "peak_flops", "peak_source"}


def test_a_run_faster_than_its_measured_cpu_peak_measures_the_peak_again_and_keeps_the_higher():
    # A peak measured at start while other programs held the cores: far below what the run then reached.
    slowed = RunMeasures(uniform_loss=math.log(2000), unigram=UnigramCount(6.0, 10, 10, 0.0), bytes_per_token=3.0,
                         val_bytes_per_token=2.5, flops_per_token=1_000_000,
                         peak=Peak(1e6, "measured: float32 matmul on 1 threads"), peak_threads=1)
    again = slowed.peak_remeasured(achieved_flops=2e6)
    assert again.peak.flops > 1e8 and again.peak.source == (
        "measured: float32 matmul on 1 threads, again after the run went faster than the 1e-06 TFLOP/s measured "
        "at its start")
    assert again.row(5)["peak_flops"] == again.peak.flops
    assert slowed.peak_remeasured(achieved_flops=5e5) is None, "slower than the peak: nothing to measure"
    from_table = RunMeasures(**{**vars(slowed), "peak": Peak(1e6, "table: A100"), "peak_threads": None})
    assert from_table.peak_remeasured(achieved_flops=2e6) is None, "a datasheet's peak is not measured again"
