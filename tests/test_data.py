"""Token files -> batches: real .bin files written with numpy, read back through babyllama.data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from babyllama.data import (
    BatchSampler,
    FeistelPermutation,
    TokenDataset,
    check_token_ids,
    open_token_file,
    read_manifest,
)
from babyllama.errors import UserError

SEQ = 8


def tokenizer_entry(name="sanguo", kind="sentencepiece", vocab_size=2000, eos_id=2, sha="sha256:" + "ab" * 32):
    return {"name": name, "kind": kind, "path": f"out/{name}", "vocab_size": vocab_size, "eos_id": eos_id,
            "bos_id": 1, "sha256": sha}


def write_tokens(path: Path, ids, dtype="uint16", manifest: bool | dict = True, **overrides) -> Path:
    """A token file, with the manifest `babyllama prepare` would write unless `manifest` is False.

    `manifest` may be the tokenizer entry to record; `overrides` replace manifest fields.
    """
    tokens = np.asarray(ids, dtype=dtype)
    tokens.tofile(path)
    if manifest is not False:
        entry = manifest if isinstance(manifest, dict) else tokenizer_entry()
        body = {
            "kind": "babyllama-token-file", "version": 1, "dtype": dtype, "tokens": int(tokens.size),
            "documents": 1, "eos_id": entry["eos_id"], "vocab_size": entry["vocab_size"], "tokenizer": entry,
            "skipped": {"too_short": 0, "malformed": 0, "examples": []}, "min_tokens": 6,
            "sources": [], "created": "2026-01-01T00:00:00Z", "babyllama_version": "0.1.0",
        }
        body.update(overrides)
        path.with_name(path.name + ".json").write_text(json.dumps(body), encoding="utf-8")
    return path


def counting_file(path: Path, n: int, start: int = 0, dtype="uint16", **kwargs) -> Path:
    """Token t at position p is start + p, so a window names where it came from (ids kept under 2000)."""
    return write_tokens(path, (start + np.arange(n)) % 2000 if dtype == "uint16" else start + np.arange(n),
                        dtype, **kwargs)


def window_starts(rows: np.ndarray) -> set[int]:
    return set(rows[:, 0].tolist())


# --- token files -----------------------------------------------------------------------------------------------


def test_a_file_without_manifest_is_read_as_the_seed_corpus(tmp_path):
    path = write_tokens(tmp_path / "seed.bin", [5, 6, 2, 7, 8, 9, 2], manifest=False)
    token_file = open_token_file(path)
    assert (token_file.dtype, token_file.n_tokens) == (np.dtype("uint16"), 7)
    assert (token_file.vocab_size, token_file.eos_id) == (64794, 2)
    assert token_file.tokenizer is None and token_file.manifest is None
    assert read_manifest(path) is None
    assert token_file.open().tolist() == [5, 6, 2, 7, 8, 9, 2]


def test_a_manifest_decides_dtype_vocabulary_and_tokenizer(tmp_path):
    entry = tokenizer_entry(name="big", vocab_size=100_000, eos_id=7)
    path = write_tokens(tmp_path / "big.bin", [70_000, 99_999, 7], dtype="uint32", manifest=entry)
    token_file = open_token_file(path)
    assert (token_file.dtype, token_file.n_tokens, token_file.vocab_size, token_file.eos_id) == (
        np.dtype("uint32"), 3, 100_000, 7)
    assert token_file.tokenizer == entry
    assert read_manifest(path)["tokens"] == 3
    assert token_file.open().tolist() == [70_000, 99_999, 7]


def test_a_size_that_is_not_whole_tokens_is_refused(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(b"\x01\x00\x02")
    with pytest.raises(UserError, match=r"odd\.bin.*3 bytes is not a whole number of 2-byte tokens.*prepare"):
        open_token_file(path)
    wide = counting_file(tmp_path / "wide.bin", 10, dtype="uint32")
    with open(wide, "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(UserError, match=r"wide\.bin.*4-byte tokens"):
        open_token_file(wide)


def test_a_manifest_that_disagrees_with_the_file_size_is_refused(tmp_path):
    path = counting_file(tmp_path / "cut.bin", 100, tokens=120)
    with pytest.raises(UserError, match=r"cut\.bin: holds 100 tokens but its manifest cut\.bin\.json says 120"):
        open_token_file(path)


def test_empty_missing_and_unfinished_files_are_refused(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.bin: the token file is empty"):
        open_token_file(tmp_path / "empty.bin")
    with pytest.raises(UserError, match=r"nothing\.bin: no such token file.*babyllama prepare"):
        open_token_file(tmp_path / "nothing.bin")
    (tmp_path / "half.bin.partial").write_bytes(b"\x01\x00")
    with pytest.raises(UserError, match=r"half\.bin: not finished: half\.bin\.partial"):
        open_token_file(tmp_path / "half.bin")
    with pytest.raises(UserError, match=r"half\.bin\.partial: unfinished output"):
        open_token_file(tmp_path / "half.bin.partial")
    counting_file(tmp_path / "ok.bin", 10)
    with pytest.raises(UserError, match=r"ok\.bin\.json: this is a manifest; pass the token file itself \(ok\.bin\)"):
        open_token_file(tmp_path / "ok.bin.json")


@pytest.mark.parametrize(
    "manifest_text, message",
    [
        ("{not json", r"bad\.bin\.json:1: the manifest is not valid JSON"),
        ('{"kind": "something-else"}', r"bad\.bin\.json: not a babyllama token-file manifest"),
        (None, r"bad\.bin\.json: dtype 'int8' is not one of uint16, uint32"),
    ],
)
def test_an_unreadable_manifest_is_refused_by_name(tmp_path, manifest_text, message):
    path = counting_file(tmp_path / "bad.bin", 10)
    if manifest_text is None:
        manifest = json.loads((tmp_path / "bad.bin.json").read_text())
        manifest["dtype"] = "int8"
        manifest_text = json.dumps(manifest)
    (tmp_path / "bad.bin.json").write_text(manifest_text)
    with pytest.raises(UserError, match=message + r".*prepare"):
        open_token_file(path)


def test_a_manifest_from_a_newer_babyllama_asks_for_an_upgrade(tmp_path):
    path = counting_file(tmp_path / "new.bin", 10, version=2)
    with pytest.raises(UserError, match=r"new\.bin\.json: manifest version 2 .*upgrade babyllama"):
        open_token_file(path)


# --- windows and the validation slice ----------------------------------------------------------------------


def test_windows_of_seq_plus_one_tokens_start_every_seq_tokens(tmp_path):
    path = counting_file(tmp_path / "a.bin", 10 * SEQ + 1)
    dataset = TokenDataset(path, SEQ, val_fraction=0)
    assert (dataset.train_windows, dataset.val_windows) == (10, 0)
    rows = dataset.train_rows(np.arange(10))
    assert rows.dtype == np.int32 and rows.shape == (10, SEQ + 1)
    assert rows[:, 0].tolist() == [k * SEQ for k in range(10)]
    assert np.array_equal(rows, rows[:, :1] + np.arange(SEQ + 1))
    one_short = counting_file(tmp_path / "b.bin", 10 * SEQ)
    assert TokenDataset(one_short, SEQ, val_fraction=0).train_windows == 9


def test_the_validation_slice_is_the_end_of_each_file(tmp_path):
    path = counting_file(tmp_path / "a.bin", 100 * SEQ + 1)
    dataset = TokenDataset(path, SEQ, val_fraction=0.05)
    assert (dataset.train_windows, dataset.val_windows) == (95, 5)
    assert window_starts(dataset.val_rows(np.arange(5))) == {k * SEQ for k in range(95, 100)}
    assert window_starts(dataset.train_rows(np.arange(95))) == {k * SEQ for k in range(95)}


@pytest.mark.parametrize("windows, fraction, expected_val", [(1, 0.5, 0), (2, 0.005, 1), (3, 0.9, 2), (1000, 0.005, 5)])
def test_tiny_files_keep_at_least_one_training_window(tmp_path, windows, fraction, expected_val):
    dataset = TokenDataset(counting_file(tmp_path / "t.bin", windows * SEQ + 1), SEQ, val_fraction=fraction)
    assert (dataset.train_windows, dataset.val_windows) == (windows - expected_val, expected_val)


def test_many_small_shards_hold_out_the_requested_share_not_one_window_each(tmp_path):
    paths = [counting_file(tmp_path / f"shard{i:03d}.bin", 10 * SEQ + 1) for i in range(100)]
    dataset = TokenDataset(paths, SEQ, val_fraction=0.05)
    assert (dataset.train_windows, dataset.val_windows) == (950, 50)
    per_file = [f["val_windows"] for f in dataset.describe()["files"]]
    assert set(per_file) == {0, 1} and sum(per_file) == 50


def test_windows_never_cross_file_boundaries(tmp_path):
    entry = tokenizer_entry(vocab_size=10**6)
    a = counting_file(tmp_path / "a.bin", 5 * SEQ + 4, start=0, dtype="uint32", manifest=entry)
    b = counting_file(tmp_path / "b.bin", 7 * SEQ + 1, start=1000, dtype="uint32", manifest=entry)
    dataset = TokenDataset([a, b], SEQ, val_fraction=0)
    assert dataset.train_windows == 5 + 7
    rows = dataset.train_rows(np.arange(12))
    assert rows[:, 0].tolist() == [k * SEQ for k in range(5)] + [1000 + k * SEQ for k in range(7)]
    assert np.array_equal(rows, rows[:, :1] + np.arange(SEQ + 1))


def test_a_folder_stands_for_its_token_files_and_a_file_given_twice_is_refused(tmp_path):
    counting_file(tmp_path / "b.bin", 3 * SEQ + 1, start=500)
    counting_file(tmp_path / "a.bin", 2 * SEQ + 1)
    (tmp_path / "b.bin.partial").write_bytes(b"\x00\x00")
    dataset = TokenDataset(tmp_path, SEQ, val_fraction=0)
    assert [f.path.name for f in dataset.files] == ["a.bin", "b.bin"]
    with pytest.raises(UserError, match=r"a\.bin: given twice"):
        TokenDataset([tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "a.bin"], SEQ)


def test_files_too_short_for_one_window_are_refused(tmp_path):
    path = counting_file(tmp_path / "short.bin", SEQ)
    with pytest.raises(UserError, match=r"short\.bin: 8 tokens, too few for one window of seq_len \+ 1 = 9"):
        TokenDataset(path, SEQ)


# --- tokenizer and vocabulary checks -------------------------------------------------------------------------


def test_files_from_different_tokenizers_are_refused_naming_both(tmp_path):
    a = counting_file(tmp_path / "a.bin", 100, manifest=tokenizer_entry(name="one", sha="sha256:" + "11" * 32))
    b = counting_file(tmp_path / "b.bin", 100, manifest=tokenizer_entry(name="two", sha="sha256:" + "22" * 32))
    with pytest.raises(UserError, match=r"b\.bin: made with tokenizer two .* but .*a\.bin was made with one"):
        TokenDataset([a, b], SEQ)
    seed = write_tokens(tmp_path / "seed.bin", np.arange(100), manifest=False)
    with pytest.raises(UserError, match=r"seed\.bin: made with tokenizer ChatGLM2.*a\.bin was made with one"):
        TokenDataset([a, seed], SEQ)


def test_a_chatglm_file_of_ours_mixes_with_the_seed_corpus(tmp_path):
    seed = write_tokens(tmp_path / "seed.bin", np.arange(100), manifest=False)
    chatglm = tokenizer_entry(name="chatglm2-6b", kind="chatglm", vocab_size=64794, eos_id=2)
    ours = write_tokens(tmp_path / "ours.bin", np.arange(100), manifest=chatglm)
    dataset = TokenDataset([seed, ours], SEQ)
    assert (dataset.vocab_size, dataset.eos_id, dataset.tokenizer) == (64794, 2, chatglm)


def test_a_model_vocabulary_smaller_than_the_files_is_refused(tmp_path):
    path = counting_file(tmp_path / "corpus.bin", 100)
    too_small = r"corpus\.bin: its tokenizer sanguo .*2,000 ids but the model's vocabulary has 1,000"
    with pytest.raises(UserError, match=too_small):
        TokenDataset(path, SEQ, vocab_size=1000)
    seed = write_tokens(tmp_path / "seed.bin", np.arange(100), manifest=False)
    with pytest.raises(UserError, match=r"seed\.bin: .*64,794 ids"):
        TokenDataset(seed, SEQ, vocab_size=32000)
    assert TokenDataset(path, SEQ, vocab_size=4096).vocab_size == 2000


def test_a_batch_holding_an_id_outside_the_vocabulary_names_file_position_and_id(tmp_path):
    tokens = np.full(20 * SEQ + 1, 3)
    tokens[13 * SEQ + 5] = 65_000
    path = write_tokens(tmp_path / "foreign.bin", tokens, manifest=False)
    dataset = TokenDataset(path, SEQ, val_fraction=0)
    assert dataset.train_rows(np.arange(12)).max() == 3
    outside = r"foreign\.bin: token id 65,000 at position 109 is outside the vocabulary \(ids 0 to 64,793\)"
    with pytest.raises(UserError, match=outside):
        dataset.train_rows(np.arange(20))
    sampler = BatchSampler(dataset, batch_size=20, seed=0)
    with pytest.raises(UserError, match=r"foreign\.bin: token id 65,000 at position 109"):
        sampler.batch(0)


def test_a_uint32_id_beyond_int32_is_caught_not_wrapped(tmp_path):
    tokens = np.full(4 * SEQ + 1, 3, dtype=np.uint32)
    tokens[2] = 3_000_000_000
    path = write_tokens(tmp_path / "huge.bin", tokens, dtype="uint32", manifest=tokenizer_entry(vocab_size=100_000))
    with pytest.raises(UserError, match=r"huge\.bin: token id 3,000,000,000 at position 2"):
        TokenDataset(path, SEQ, val_fraction=0).train_rows([0])


def test_check_token_ids_scans_every_token_in_chunks(tmp_path):
    clean = counting_file(tmp_path / "clean.bin", 5000)
    seen = []
    assert check_token_ids(clean, chunk_tokens=1024, progress=lambda done, total: seen.append((done, total))) == 1999
    assert seen == [(1024, 5000), (2048, 5000), (3072, 5000), (4096, 5000), (5000, 5000)]
    outside = r"clean\.bin: token id 1,500 at position 1,500 is outside the vocabulary \(ids 0 to 1,499\)"
    with pytest.raises(UserError, match=outside):
        check_token_ids(open_token_file(clean), vocab_size=1500, chunk_tokens=1024)
    tokens = np.zeros(3000)
    tokens[2999] = 2000
    dirty = write_tokens(tmp_path / "dirty.bin", tokens)
    with pytest.raises(UserError, match=r"dirty\.bin: token id 2,000 at position 2,999"):
        check_token_ids(dirty, chunk_tokens=1000)


# --- the keyed permutation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 16, 31, 64, 97, 1000, 1024, 4099, 65_537])
def test_the_feistel_permutation_is_a_bijection(n):
    permuted = FeistelPermutation(n, seed=1234, epoch=3)(np.arange(n))
    assert np.array_equal(np.sort(permuted), np.arange(n))


def test_the_permutation_depends_on_seed_and_epoch_and_looks_shuffled():
    n = 10_000
    base = FeistelPermutation(n, seed=1, epoch=0)(np.arange(n))
    assert not np.array_equal(base, FeistelPermutation(n, seed=2, epoch=0)(np.arange(n)))
    assert not np.array_equal(base, FeistelPermutation(n, seed=1, epoch=1)(np.arange(n)))
    assert np.array_equal(base, FeistelPermutation(n, seed=1, epoch=0)(np.arange(n)))
    assert abs(np.corrcoef(np.arange(n), base)[0, 1]) < 0.05
    assert abs(np.corrcoef(base[:-1], base[1:])[0, 1]) < 0.05
    assert np.count_nonzero(base == np.arange(n)) < 10


# --- batches -----------------------------------------------------------------------------------------------


@pytest.fixture
def two_shards(tmp_path) -> list[Path]:
    entry = tokenizer_entry(vocab_size=10**6)
    return [
        counting_file(tmp_path / "a.bin", 40 * SEQ + 1, start=0, dtype="uint32", manifest=entry),
        counting_file(tmp_path / "b.bin", 23 * SEQ + 3, start=100_000, dtype="uint32", manifest=entry),
    ]


def test_a_batch_is_int32_inputs_and_targets_shifted_by_one(two_shards):
    dataset = TokenDataset(two_shards, SEQ, val_fraction=0.1)
    x, y = BatchSampler(dataset, batch_size=4, seed=7).batch(3)
    assert x.dtype == y.dtype == np.int32 and x.shape == y.shape == (4, SEQ)
    assert x.flags.c_contiguous and y.flags.c_contiguous
    assert np.array_equal(y[:, :-1], x[:, 1:])
    assert np.array_equal(y[:, -1], x[:, -1] + 1)
    assert all(start % SEQ == 0 for start in x[:, 0] % 100_000)


def test_a_fresh_sampler_gives_the_same_batches_so_a_resumed_run_continues_exactly(two_shards):
    first_run = BatchSampler(TokenDataset(two_shards, SEQ), batch_size=3, seed=11, accum=2)
    before = [first_run.batch(step, micro) for step in range(20) for micro in range(2)]
    resumed = BatchSampler(TokenDataset(two_shards, SEQ), batch_size=3, seed=11, accum=2)
    after = [resumed.batch(step, micro) for step in range(12, 20) for micro in range(2)]
    for (x0, y0), (x1, y1) in zip(before[24:], after):
        assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    unpickled = pickle.loads(pickle.dumps(first_run))
    assert np.array_equal(unpickled.batch(5, 1)[0], before[11][0])


def test_a_pickled_dataset_reopens_its_files_instead_of_carrying_them(tmp_path):
    path = write_tokens(tmp_path / "big.bin", np.arange(200_000) % 2000)
    dataset = TokenDataset(path, SEQ)
    x, _ = BatchSampler(dataset, 4, seed=1).batch(2)
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 20_000 < path.stat().st_size
    assert np.array_equal(BatchSampler(copy, 4, seed=1).batch(2)[0], x)


def test_different_seeds_give_different_batches(two_shards):
    dataset = TokenDataset(two_shards, SEQ)
    a = [BatchSampler(dataset, 4, seed=1).batch(s)[0] for s in range(3)]
    b = [BatchSampler(dataset, 4, seed=2).batch(s)[0] for s in range(3)]
    assert not all(np.array_equal(p, q) for p, q in zip(a, b))


def test_an_epoch_visits_every_training_window_once_then_reshuffles(two_shards):
    dataset = TokenDataset(two_shards, SEQ, val_fraction=0.1)
    n = dataset.train_windows
    sampler = BatchSampler(dataset, batch_size=5, seed=3)
    visited = np.concatenate([sampler.train_indices(step) for step in range(2 * n // 5 + 1)])
    first_epoch, second_epoch = visited[:n], visited[n : 2 * n]
    assert np.array_equal(np.sort(first_epoch), np.arange(n))
    assert np.array_equal(np.sort(second_epoch), np.arange(n))
    assert not np.array_equal(first_epoch, second_epoch)


def test_ranks_are_disjoint_and_together_make_the_global_batch(two_shards):
    dataset = TokenDataset(two_shards, SEQ)
    world, batch, accum = 3, 2, 2
    samplers = [BatchSampler(dataset, batch, seed=5, rank=r, world_size=world, accum=accum) for r in range(world)]
    one_process = BatchSampler(dataset, batch * world * accum, seed=5)
    assert samplers[0].tokens_per_step == one_process.tokens_per_step == world * batch * accum * SEQ
    for step in (0, 4, 9):
        shares = [s.train_indices(step, m).tolist() for s in samplers for m in range(accum)]
        flat = [i for share in shares for i in share]
        assert len(flat) == len(set(flat)) == world * batch * accum
        assert sorted(flat) == sorted(one_process.train_indices(step).tolist())
    assert not np.array_equal(samplers[0].batch(1)[0], samplers[1].batch(1)[0])


def test_validation_windows_never_appear_in_training(two_shards):
    dataset = TokenDataset(two_shards, SEQ, val_fraction=0.2)
    sampler = BatchSampler(dataset, batch_size=4, seed=0)
    trained = {int(row[0]) for step in range(40) for row in sampler.batch(step)[0]}
    held_out = {int(row[0]) for x, _ in dataset.val_batches(4) for row in x}
    assert len(trained) == dataset.train_windows
    assert len(held_out) == dataset.val_windows > 0
    assert trained.isdisjoint(held_out)


def test_validation_batches_are_fixed_full_and_spread_over_every_file(two_shards):
    dataset = TokenDataset(two_shards, SEQ, val_fraction=0.2)
    first = list(dataset.val_batches(batch_size=4, n_batches=2))
    again = list(dataset.val_batches(batch_size=4, n_batches=2))
    assert len(first) == 2 and all(x.shape == (4, SEQ) for x, _ in first)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    starts = np.concatenate([x[:, 0] for x, _ in first])
    assert (starts < 100_000).any() and (starts >= 100_000).any()
    everything = list(dataset.val_batches(batch_size=4))
    assert len(everything) == -(-dataset.val_windows // 4)
    with pytest.raises(UserError, match=r"a\.bin: no validation windows"):
        TokenDataset(two_shards, SEQ, val_fraction=0).val_batches(4)


# --- a real token file -------------------------------------------------------------------------------------


def test_a_token_file_prepared_from_the_sample_corpus(tmp_path, sample_jsonl, sp_tokenizer_dir, sp_tokenizer):
    from babyllama.prepare import prepare

    out = tmp_path / "sanguo.bin"
    manifest = prepare([sample_jsonl], "c4", sp_tokenizer_dir, out, workers=1)
    dataset = TokenDataset(out, seq_len=64, vocab_size=sp_tokenizer.vocab_size)
    assert dataset.files[0].manifest == manifest == read_manifest(out)
    assert (dataset.vocab_size, dataset.eos_id) == (sp_tokenizer.vocab_size, sp_tokenizer.eos_id)
    assert dataset.tokenizer["sha256"] == sp_tokenizer.fingerprint
    assert dataset.train_windows + dataset.val_windows == (manifest["tokens"] - 1) // 64
    assert check_token_ids(out) < sp_tokenizer.vocab_size

    x, y = BatchSampler(dataset, batch_size=4, seed=0).batch(0)
    assert np.array_equal(x[:, 1:], y[:, :-1])
    text = sp_tokenizer.decode(x[0].tolist())
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 20
    all_tokens = open_token_file(out).open()
    assert np.count_nonzero(all_tokens == sp_tokenizer.eos_id) == manifest["documents"]
    with pytest.raises(UserError, match=r"sanguo\.bin: its tokenizer"):
        TokenDataset(out, seq_len=64, vocab_size=sp_tokenizer.vocab_size - 1)
