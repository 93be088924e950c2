"""babyllama prepare: the token file is exactly what the seed's loop writes, whatever the
workers, chunks, interruptions and resumptions on the way."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from babyllama.data import open_token_file
from babyllama.errors import UserError
from babyllama.prepare import OutputPaths, prepare
from babyllama.prepare.progress import BarReport

from hf_tokenizers import save_byte_bpe

ROOT = Path(__file__).resolve().parents[1]


# --- corpora written in each format, and the seed's loop over the same records --------------


@pytest.fixture(scope="module")
def paragraphs(sample_jsonl) -> list[str]:
    chapters = [json.loads(line)["text"] for line in sample_jsonl.read_text(encoding="utf-8").splitlines()]
    return [p.strip() for chapter in chapters for p in chapter.split("\n") if p.strip()]


def seed_bytes(tokenizer, documents: list[list[str]], min_tokens: int = 6, dtype=np.uint16) -> bytes:
    """The seed's data_process.py loop: encode each segment, join, add eos, keep if long enough."""
    doc_ids = []
    for segments in documents:
        text_id = []
        for segment in segments:
            text_id += tokenizer.encode(segment)
        text_id.append(tokenizer.eos_id)
        if len(text_id) >= min_tokens:
            doc_ids += text_id
    return np.array(doc_ids, dtype=dtype).tobytes()


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_format(fmt: str, folder: Path, texts: list[str]) -> tuple[Path, list[list[str]]]:
    """A file in `fmt` made of `texts`, and the segments the seed makes of each record."""
    half = [(t[: len(t) // 2], t[len(t) // 2 :]) for t in texts]
    if fmt == "wiki":
        path = folder / "wiki.json"
        path.write_text(json.dumps([{"completion": t} for t in texts], ensure_ascii=False, indent=1), encoding="utf-8")
        return path, [[t] for t in texts]
    if fmt == "wudao":
        path = folder / "wudao.json"
        path.write_text(json.dumps([{"title": a, "content": b} for a, b in half], ensure_ascii=False), encoding="utf-8")
        return path, [[a + b] for a, b in half]
    if fmt == "baike":
        records = [
            {"title": a[:4], "summary": a, "sections": [{"title": b[:3], "content": b}, {"title": "注", "content": a[:5]}]}
            if len(a) > 1 else {"title": a, "summary": b, "sections": []}
            for a, b in half
        ]
        expected = [[r["title"] + "：" + r["summary"] + "".join(s["title"] + "：" + s["content"] + "。" for s in r["sections"])]
                    for r in records]
        return write_jsonl(folder / "baike.jsonl", records), expected
    if fmt in ("c4", "medical"):
        return write_jsonl(folder / f"{fmt}.jsonl", [{"text": t} for t in texts]), [[t] for t in texts]
    if fmt == "medical-sft":
        records = [{"instruction": a[:6], "input": a[6:], "output": b} for a, b in half]
        return write_jsonl(folder / "sft.jsonl", records), [[a, b] for a, b in half]
    if fmt == "jsonl:content":
        return write_jsonl(folder / "any.jsonl", [{"id": i, "content": t} for i, t in enumerate(texts)]), [[t] for t in texts]
    if fmt == "text":
        path = folder / "plain.txt"
        path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        return path, [[t] for t in texts]
    raise AssertionError(fmt)


def mixed_texts(paragraphs: list[str], n: int) -> list[str]:
    """Paragraphs, every seventh one cut to a few characters so the seed's rule drops some."""
    return [p[:2] if i % 7 == 3 else p for i, p in enumerate(paragraphs[:n])]


FORMATS = ["wiki", "baike", "c4", "wudao", "medical", "medical-sft", "text", "jsonl:content"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_matches_the_seed_loop_serial_and_parallel(fmt, tmp_path, paragraphs, sp_tokenizer_dir, sp_tokenizer):
    corpus, documents = write_format(fmt, tmp_path, mixed_texts(paragraphs, 300))
    expected = seed_bytes(sp_tokenizer, documents)
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.bin"
        manifest = prepare([corpus], fmt, sp_tokenizer_dir, out, workers=workers, chunk_bytes=4000)
        assert out.read_bytes() == expected
        assert manifest["tokens"] * 2 == len(expected)
    assert manifest["skipped"]["too_short"] > 0


def test_auto_format_is_sniffed_per_file(tmp_path, paragraphs, sp_tokenizer_dir, sp_tokenizer):
    texts = mixed_texts(paragraphs, 120)
    (tmp_path / "corpus").mkdir()
    wiki, wiki_docs = write_format("wiki", tmp_path / "corpus", texts[:60])
    baike, baike_docs = write_format("baike", tmp_path / "corpus", texts[60:])
    manifest = prepare([tmp_path / "corpus"], "auto", sp_tokenizer_dir, tmp_path / "t.bin", workers=2, chunk_bytes=3000)
    # expand_inputs sorts a folder's files: baike.jsonl before wiki.json
    assert (tmp_path / "t.bin").read_bytes() == seed_bytes(sp_tokenizer, baike_docs + wiki_docs)
    assert [s["format"] for s in manifest["sources"]] == ["baike", "wiki"]


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tmp_path_factory, paragraphs) -> Path:
    """A Hugging Face tokenizer folder (byte-level BPE on a few paragraphs), saved by transformers."""
    return save_byte_bpe(paragraphs[:300], tmp_path_factory.mktemp("hf") / "bytebpe", vocab_size=600)


def test_a_hugging_face_tokenizer_matches_the_seed_loop_in_worker_processes(tmp_path, paragraphs, hf_tokenizer_dir):
    from babyllama.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(hf_tokenizer_dir)
    assert tokenizer.kind == "huggingface"
    corpus, documents = write_format("medical-sft", tmp_path, mixed_texts(paragraphs, 200))
    expected = seed_bytes(tokenizer, documents)
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.bin"
        manifest = prepare([corpus], "medical-sft", hf_tokenizer_dir, out, workers=workers, chunk_bytes=3000)
        assert out.read_bytes() == expected
        assert manifest["tokens"] * 2 == len(expected) and manifest["skipped"]["too_short"] > 0


# --- the rules of the file: min tokens, dtype, manifest --------------------------------------


def text_of_token_count(tokenizer, paragraphs: list[str], count: int) -> str:
    for paragraph in paragraphs:
        for end in range(1, len(paragraph)):
            if len(tokenizer.encode(paragraph[:end])) == count:
                return paragraph[:end]
    raise AssertionError(f"no text of {count} tokens")


def test_documents_of_five_tokens_or_fewer_are_dropped_and_min_tokens_changes_it(
    tmp_path, paragraphs, sp_tokenizer_dir, sp_tokenizer
):
    # With eos: 1 (empty text), 3, 5, 6, 7 and 40 ids.
    texts = [""] + [text_of_token_count(sp_tokenizer, paragraphs, n) for n in (2, 4, 5, 6, 39)]
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    eos = sp_tokenizer.eos_id

    manifest = prepare([corpus], "c4", sp_tokenizer_dir, tmp_path / "seed.bin", workers=1)
    ids = np.fromfile(tmp_path / "seed.bin", dtype=np.uint16)
    kept = texts[3:]
    assert ids.tolist() == [i for t in kept for i in sp_tokenizer.encode(t) + [eos]]
    assert (manifest["documents"], manifest["skipped"]["too_short"], manifest["min_tokens"]) == (3, 3, 6)

    manifest = prepare([corpus], "c4", sp_tokenizer_dir, tmp_path / "all.bin", workers=1, min_tokens=1)
    assert (manifest["documents"], manifest["skipped"]["too_short"]) == (6, 0)
    assert np.fromfile(tmp_path / "all.bin", dtype=np.uint16).tolist() == [
        i for t in texts for i in sp_tokenizer.encode(t) + [eos]
    ]

    cli = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", "c4", "--out", tmp_path / "m7.bin",
                      "--min-tokens", "7", corpus)
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "m7.bin.json").read_text())["documents"] == 2


@pytest.fixture(scope="module")
def large_vocab_tokenizer(tmp_path_factory, paragraphs) -> Path:
    """A SentencePiece model of 70,000 ids whose real pieces all have ids above 65,535."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(paragraphs[:800]), model_writer=model, model_type="bpe", vocab_size=70000,
        user_defined_symbols=[f"<extra_{i}>" for i in range(66000)], byte_fallback=True,
        character_coverage=1.0, add_dummy_prefix=False, hard_vocab_limit=False, minloglevel=2,
    )
    path = tmp_path_factory.mktemp("large-vocab") / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


def test_a_vocabulary_past_uint16_is_written_as_uint32(tmp_path, paragraphs, large_vocab_tokenizer):
    from babyllama.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(large_vocab_tokenizer)
    assert tokenizer.vocab_size > 65536
    texts = mixed_texts(paragraphs, 80)
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    manifest = prepare([corpus], "c4", large_vocab_tokenizer, tmp_path / "big.bin", workers=2, chunk_bytes=2000)
    data = (tmp_path / "big.bin").read_bytes()
    assert manifest["dtype"] == "uint32"
    assert data == seed_bytes(tokenizer, [[t] for t in texts], dtype=np.uint32)
    assert np.frombuffer(data, dtype=np.uint32).max() > 65535
    assert len(data) == 4 * manifest["tokens"]
    token_file = open_token_file(tmp_path / "big.bin")
    assert (token_file.dtype, token_file.n_tokens, token_file.vocab_size) == (np.uint32, manifest["tokens"], 70000)


def test_manifest_follows_the_agreed_schema(tmp_path, paragraphs, sp_tokenizer_dir, sp_tokenizer):
    corpus = tmp_path / "c.jsonl"
    good = [{"text": t} for t in paragraphs[:30]]
    corpus.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good[:10]) + "{broken\n" + '{"title": 1}\n'
        + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good[10:]),
        encoding="utf-8",
    )
    out = tmp_path / "sanguo.bin"
    returned = prepare([corpus], "c4", sp_tokenizer_dir, out, workers=2, chunk_bytes=1000)
    manifest = json.loads((tmp_path / "sanguo.bin.json").read_text(encoding="utf-8"))
    assert manifest == returned
    assert set(manifest) == {
        "kind", "version", "dtype", "tokens", "documents", "eos_id", "vocab_size", "tokenizer", "skipped",
        "min_tokens", "sources", "created", "babyllama_version",
    }
    assert (manifest["kind"], manifest["version"], manifest["dtype"]) == ("babyllama-token-file", 1, "uint16")
    assert manifest["tokenizer"] == sp_tokenizer.describe()
    assert (manifest["vocab_size"], manifest["eos_id"]) == (2000, sp_tokenizer.eos_id)
    assert manifest["documents"] == 30
    assert manifest["tokens"] == out.stat().st_size // 2
    assert manifest["skipped"]["malformed"] == 2
    assert [e.split(": ")[0] for e in manifest["skipped"]["examples"]] == [f"{corpus}:11", f"{corpus}:12"]
    assert manifest["sources"] == [{"path": str(corpus), "size": corpus.stat().st_size, "format": "c4"}]
    assert manifest["created"].endswith("Z")
    assert out.read_bytes() == seed_bytes(sp_tokenizer, [[r["text"]] for r in good])
    token_file = open_token_file(out)
    assert (token_file.dtype, token_file.n_tokens, token_file.eos_id) == (np.uint16, manifest["tokens"], 2)
    assert token_file.open()[-1] == sp_tokenizer.eos_id


def test_gzip_input_gives_the_same_bytes(tmp_path, paragraphs, sp_tokenizer_dir):
    plain = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in mixed_texts(paragraphs, 200)])
    packed = tmp_path / "c.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    prepare([plain], "c4", sp_tokenizer_dir, tmp_path / "plain.bin", workers=1)
    prepare([packed], "auto", sp_tokenizer_dir, tmp_path / "packed.bin", workers=2, chunk_bytes=2000)
    assert (tmp_path / "packed.bin").read_bytes() == (tmp_path / "plain.bin").read_bytes()


# --- order, interruption, resumption -----------------------------------------------------------


def test_parallel_output_equals_serial_across_files_and_chunk_sizes(tmp_path, paragraphs, sp_tokenizer_dir):
    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = mixed_texts(paragraphs, 900)
    for n, start in enumerate(range(0, 900, 150)):
        write_jsonl(folder / f"part-{n}.jsonl", [{"text": t} for t in texts[start : start + 150]])
    serial = prepare([folder], "c4", sp_tokenizer_dir, tmp_path / "serial.bin", workers=1, chunk_bytes=1 << 30)
    for workers, chunk_bytes in [(2, 1000), (2, 7777), (3, 50_000)]:
        out = tmp_path / f"w{workers}-{chunk_bytes}.bin"
        parallel = prepare([folder], "c4", sp_tokenizer_dir, out, workers=workers, chunk_bytes=chunk_bytes)
        assert out.read_bytes() == (tmp_path / "serial.bin").read_bytes()
        assert {k: parallel[k] for k in ("tokens", "documents", "skipped")} == {
            k: serial[k] for k in ("tokens", "documents", "skipped")
        }


class StopAfter:
    """A progress callback that interrupts the run after `chunks` progress events."""

    def __init__(self, chunks: int):
        self.left = chunks

    def __call__(self, event: dict) -> None:
        if event["event"] == "progress":
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_same_bytes(tmp_path, paragraphs, sp_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in mixed_texts(paragraphs, 600)])
    clean = prepare([corpus], "c4", sp_tokenizer_dir, tmp_path / "clean.bin", workers=2)
    out = tmp_path / "t.bin"
    paths = OutputPaths(out)
    with pytest.raises(KeyboardInterrupt):
        prepare([corpus], "c4", sp_tokenizer_dir, out, workers=2, chunk_bytes=5000, progress=StopAfter(1))
    assert not out.exists() and not paths.manifest.exists()
    journal = json.loads(paths.journal.read_text())
    assert 0 < journal["bytes"] <= paths.partial.stat().st_size

    events = []
    resumed = prepare([corpus], "c4", sp_tokenizer_dir, out, workers=2, chunk_bytes=3000, progress=events.append)
    assert any(e["event"] == "note" and "resuming" in e["message"] for e in events)
    assert [e for e in events if e["event"] == "start"][0]["resumed_bytes"] > 0
    assert out.read_bytes() == (tmp_path / "clean.bin").read_bytes()
    assert {k: resumed[k] for k in ("tokens", "documents", "skipped")} == {
        k: clean[k] for k in ("tokens", "documents", "skipped")
    }
    assert not paths.journal.exists() and not paths.partial.exists()


def test_changed_options_start_over(tmp_path, paragraphs, sp_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in mixed_texts(paragraphs, 400)])
    out = tmp_path / "t.bin"
    with pytest.raises(KeyboardInterrupt):
        prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1, chunk_bytes=3000, progress=StopAfter(1))
    events = []
    prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1, min_tokens=20, progress=events.append)
    assert any(e["event"] == "note" and "another --min-tokens" in e["message"] for e in events)
    prepare([corpus], "c4", sp_tokenizer_dir, tmp_path / "clean.bin", workers=1, min_tokens=20)
    assert out.read_bytes() == (tmp_path / "clean.bin").read_bytes()


def test_a_run_stopped_after_its_manifest_finishes_the_rename_next_time(
    tmp_path, paragraphs, sp_tokenizer_dir, monkeypatch
):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in mixed_texts(paragraphs, 100)])
    prepare([corpus], "c4", sp_tokenizer_dir, tmp_path / "clean.bin", workers=1)
    out = tmp_path / "t.bin"
    paths = OutputPaths(out)
    real_replace = os.replace

    def stop_before_the_bin_appears(src, dst):
        if Path(dst) == out:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stop_before_the_bin_appears)
    with pytest.raises(KeyboardInterrupt):
        prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1)
    monkeypatch.undo()
    assert paths.manifest.exists() and paths.partial.exists() and not out.exists()

    prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1)
    assert out.read_bytes() == (tmp_path / "clean.bin").read_bytes()
    assert not paths.journal.exists() and not paths.partial.exists()


# --- the command: subprocesses, signals, errors --------------------------------------------------


def run_prepare(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "babyllama", "prepare", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, **kwargs,
    )


def start_prepare(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "babyllama", "prepare", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory, sample_jsonl) -> Path:
    """The sample corpus 12 times over (about 21 MB): seconds of work, hundreds of chunks."""
    path = tmp_path_factory.mktemp("long") / "sanguo-x12.jsonl"
    path.write_bytes(sample_jsonl.read_bytes() * 12)
    return path


@pytest.fixture(scope="module")
def long_corpus_clean(tmp_path_factory, long_corpus, sp_tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("clean") / "clean.bin"
    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", "c4", "--out", out, "--progress", "none",
                         long_corpus)
    assert result.returncode == 0, result.stderr
    return out


def wait_for_chunks(journal: Path, chunks: int, process: subprocess.Popen) -> None:
    while process.poll() is None:
        try:
            if json.loads(journal.read_text())["chunks"] >= chunks:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"prepare ended (exit {process.returncode}) before writing {chunks} chunks")


PREPARE_ARGS = ["--format", "c4", "--progress", "jsonl", "--workers", "2", "--chunk-mb", "0.05"]


@pytest.mark.slow
def test_killed_with_sigkill_resumes_to_identical_bytes(tmp_path, long_corpus, long_corpus_clean, sp_tokenizer_dir):
    import psutil

    out = tmp_path / "t.bin"
    paths = OutputPaths(out)
    process = start_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, *PREPARE_ARGS, long_corpus)
    wait_for_chunks(paths.journal, 20, process)
    workers = psutil.Process(process.pid).children()
    process.kill()
    process.communicate()
    assert not out.exists() and not paths.manifest.exists()
    assert psutil.wait_procs(workers, timeout=10)[1] == []  # no orphaned worker left behind

    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, *PREPARE_ARGS, long_corpus)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "note" and "resuming" in events[0]["message"]
    assert events[1]["event"] == "start" and events[1]["resumed_bytes"] > 0
    assert out.read_bytes() == long_corpus_clean.read_bytes()
    assert json.loads(paths.manifest.read_text())["tokens"] == out.stat().st_size // 2


@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_consistent_journal(tmp_path, long_corpus, long_corpus_clean, sp_tokenizer_dir):
    out = tmp_path / "t.bin"
    paths = OutputPaths(out)
    process = start_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, *PREPARE_ARGS, long_corpus)
    wait_for_chunks(paths.journal, 10, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert json.loads(stdout.splitlines()[-1]) == {"event": "error", "message": "interrupted"}
    assert not out.exists() and not paths.manifest.exists()

    journal = json.loads(paths.journal.read_text())
    written = journal["bytes"]
    assert written == 2 * journal["counts"]["tokens"] > 0
    assert paths.partial.read_bytes()[:written] == long_corpus_clean.read_bytes()[:written]

    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, *PREPARE_ARGS, long_corpus)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == long_corpus_clean.read_bytes()


def test_jsonl_progress_events_for_the_app(tmp_path, paragraphs, sp_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in mixed_texts(paragraphs, 400)])
    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", "c4", "--out", tmp_path / "t.bin",
                         "--progress", "jsonl", "--chunk-mb", "0.01", corpus)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds) == {"start", "progress", "done"}
    total = corpus.stat().st_size
    assert events[0]["total_bytes"] == total and events[0]["files"] == 1
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["bytes"] for e in progress] == sorted(e["bytes"] for e in progress)
    assert progress[-1]["bytes"] == total and progress[-1]["eta_s"] == 0
    assert set(progress[-1]) == {"event", "bytes", "total_bytes", "documents", "tokens", "skipped", "mb_per_s",
                                 "eta_s", "elapsed_s"}
    manifest = json.loads((tmp_path / "t.bin.json").read_text())
    assert events[-1]["manifest"] == str(tmp_path / "t.bin.json")
    assert (events[-1]["tokens"], events[-1]["documents"]) == (manifest["tokens"], manifest["documents"])
    assert progress[-1]["skipped"] == {"too_short": manifest["skipped"]["too_short"], "malformed": 0}


def test_the_bar_redraws_one_line():
    stream = io.StringIO()
    report = BarReport(stream)
    event = {"event": "progress", "bytes": 5_000_000, "total_bytes": 20_000_000, "documents": 1234,
             "tokens": 2_500_000, "skipped": {"too_short": 3, "malformed": 2}, "mb_per_s": 12.5, "eta_s": 75.0,
             "elapsed_s": 0.4}
    report(event)
    report(dict(event, bytes=10_000_000))
    report({"event": "done", "out": "data/x.bin", "manifest": "data/x.bin.json", "documents": 1234,
            "tokens": 2_500_000, "skipped": {"too_short": 3, "malformed": 2},
            "examples": ["data/c.jsonl:7: missing field 'text'", "data/c.jsonl:9: bad JSON (Expecting value at column 1)"],
            "cut_short": [], "elapsed_s": 1.6, "mb_per_s": 12.5})
    lines = stream.getvalue().split("\n")
    assert lines[0].count("\r") == 2
    assert "50%" in lines[0] and "1,234 docs" in lines[0] and "2.5M tokens" in lines[0]
    assert "12.5 MB/s" in lines[0] and "ETA 1:15" in lines[0] and "2 bad" in lines[0]
    assert lines[1].startswith("wrote data/x.bin") and "2 malformed" in lines[1]
    assert lines[2:] == ["  data/c.jsonl:7: missing field 'text'",
                         "  data/c.jsonl:9: bad JSON (Expecting value at column 1)", ""]


def test_the_summary_names_the_first_malformed_records_by_file_and_line(tmp_path, paragraphs, sp_tokenizer_dir):
    corpus = tmp_path / "c.jsonl"
    good = [json.dumps({"text": t}, ensure_ascii=False) for t in paragraphs[:40]]
    corpus.write_text("\n".join(good[:10] + ['{"title": 1}'] * 25 + ["{broken"] + good[10:]) + "\n", encoding="utf-8")
    out = tmp_path / "t.bin"
    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", "c4", "--out", out, "--progress", "lines",
                         "--chunk-mb", "0.001", corpus)
    assert result.returncode == 0, result.stderr
    summary = result.stderr.splitlines()[-7:]
    assert summary[0].startswith(f"wrote {out}") and "26 malformed" in summary[0]
    assert summary[1:6] == [f"  {corpus}:{line}: missing field 'text'" for line in range(11, 16)]
    assert summary[6] == f"  and 21 more malformed records; {OutputPaths(out).manifest} names the first 20"
    manifest = json.loads(OutputPaths(out).manifest.read_text())
    assert [s.strip() for s in summary[1:6]] == manifest["skipped"]["examples"][:5]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr


def test_bad_paths_fail_in_one_line_and_leave_nothing(tmp_path, sample_jsonl, sp_tokenizer_dir):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "t.bin"

    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, tmp_path / "missing.jsonl")
    assert_one_line_error(result, "missing.jsonl")

    result = run_prepare("--tokenizer", tmp_path / "no-tokenizer", "--out", out, sample_jsonl)
    assert_one_line_error(result, "no-tokenizer")

    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a sentencepiece model")
    result = run_prepare("--tokenizer", garbage, "--out", out, sample_jsonl)
    assert_one_line_error(result, "garbage.model")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", blocker / "t.bin", sample_jsonl)
    assert_one_line_error(result, "a-file")

    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", "nonsense", "--out", out, sample_jsonl)
    assert_one_line_error(result, "nonsense")

    assert list(out_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "garbage.model", "out"]


def test_an_existing_token_file_is_kept_unless_forced(tmp_path, paragraphs, sp_tokenizer_dir, sp_tokenizer):
    first = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in paragraphs[:20]])
    second = write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in paragraphs[20:50]])
    out = tmp_path / "t.bin"
    prepare([first], "c4", sp_tokenizer_dir, out, workers=1)
    before = out.read_bytes()

    with pytest.raises(UserError, match="--force"):
        prepare([second], "c4", sp_tokenizer_dir, out, workers=1)
    assert out.read_bytes() == before
    assert not OutputPaths(out).partial.exists()

    manifest = prepare([second], "c4", sp_tokenizer_dir, out, workers=1, force=True)
    assert out.read_bytes() == seed_bytes(sp_tokenizer, [[t] for t in paragraphs[20:50]])
    assert manifest["sources"][0]["path"] == str(second)


def test_its_own_outputs_are_refused_as_inputs(tmp_path, paragraphs, sp_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in paragraphs[:20]])
    out = tmp_path / "t.bin"
    prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1)
    with pytest.raises(UserError, match="output of this command"):
        prepare([corpus, OutputPaths(out).manifest], "c4", sp_tokenizer_dir, out, workers=1, force=True)
    assert out.exists() and OutputPaths(out).manifest.exists()


# --- inputs that give nothing, or less than they should ------------------------------------------


def cut_in_the_middle(path: Path) -> Path:
    """A .gz of `path` cut in the middle of its compressed bytes."""
    packed = gzip.compress(path.read_bytes())
    cut = path.with_name(path.name + ".gz")
    cut.write_bytes(packed[: len(packed) // 2])
    return cut


def test_a_cut_gz_gives_its_records_before_the_cut_and_a_warning_naming_where(
    tmp_path, sample_jsonl, sp_tokenizer_dir, sp_tokenizer
):
    chapters = [json.loads(line)["text"] for line in sample_jsonl.read_text(encoding="utf-8").splitlines()[:40]]
    lines = cut_in_the_middle(write_jsonl(tmp_path / "c4.jsonl", [{"text": c} for c in chapters]))
    array = tmp_path / "wiki.json"
    array.write_text(json.dumps([{"completion": c} for c in chapters], ensure_ascii=False), encoding="utf-8")
    array = cut_in_the_middle(array)
    # Records whole in what can still be decompressed: lines, or elements of the one-line array.
    for cut, fmt, separator in [(lines, "c4", b"\n"), (array, "wiki", b'"}, {"completion": "')]:
        kept = chapters[: zlib.decompressobj(wbits=31).decompress(cut.read_bytes()).count(separator)]
        assert 10 < len(kept) < 30
        out = tmp_path / f"{fmt}.bin"
        result = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", fmt, "--out", out, "--progress", "lines", cut)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == seed_bytes(sp_tokenizer, [[c] for c in kept])
        where = f"{cut}:1: element {len(kept) + 1}: " if fmt == "wiki" else f"{cut}:{len(kept) + 1}: "
        warnings = [line for line in result.stderr.splitlines() if line.startswith("babyllama prepare: warning: ")]
        assert len(warnings) == 1 and where + "cannot read further" in warnings[0]
        assert "and the rest of 1 file" in result.stderr.splitlines()[-1]
        skipped = json.loads(OutputPaths(out).manifest.read_text())["skipped"]
        assert len(skipped["cut_short"]) == 1 and skipped["cut_short"][0].startswith(where)
        assert (skipped["malformed"], skipped["examples"]) == (0, [])
    quiet = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", "c4", "--out", tmp_path / "quiet.bin",
                        "--progress", "none", lines)
    assert quiet.returncode == 0 and quiet.stderr.startswith(f"babyllama prepare: warning: {lines}:")
    assert len(quiet.stderr.splitlines()) == 1


@pytest.fixture
def good_output(tmp_path, paragraphs, sp_tokenizer_dir) -> Path:
    """A finished token file in its own folder, for a failing run with --force to leave alone."""
    corpus = write_jsonl(tmp_path / "good.jsonl", [{"text": t} for t in paragraphs[:20]])
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "t.bin"
    prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1)
    return out


def test_inputs_without_a_document_are_an_error_naming_each_and_what_it_held(
    tmp_path, sample_jsonl, sp_tokenizer_dir, good_output
):
    before = {p.name: p.read_bytes() for p in good_output.parent.iterdir()}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    early_cut = tmp_path / "early.jsonl.gz"
    early_cut.write_bytes(gzip.compress(sample_jsonl.read_bytes())[:300])
    cases = [
        (["--format", "c4", early_cut], [f"{early_cut}: line 1: cannot read further (EOFError"]),
        (["--format", "auto", empty], [f"{empty}: empty"]),
        (["--format", "wiki", sample_jsonl],
         [(f"{sample_jsonl}: line 1: element 1: expected a JSON array ('['), found '{{' "
           f"(wiki reads a JSON array of {{\"completion\"}}); try --format c4")]),
        (["--format", "jsonl:body", sample_jsonl, empty],
         [(f"{sample_jsonl}: 120 malformed records, the first on line 1: missing field 'body' "
           f"(jsonl:body reads JSON lines of {{\"body\"}}); try --format c4"), f"{empty}: empty"]),
        (["--format", "c4", "--min-tokens", "1000000", sample_jsonl],
         [f"{sample_jsonl}: 120 documents, all shorter than --min-tokens 1000000"]),
    ]
    for args, found in cases:
        result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", good_output, "--force", *args)
        assert_one_line_error(result, "no documents in the inputs, so nothing was written: ", *found)
        assert {p.name: p.read_bytes() for p in good_output.parent.iterdir()} == before

    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", good_output, "--force", "--progress", "jsonl",
                         "--format", "wiki", sample_jsonl)
    assert_one_line_error(result, "try --format c4")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events if e["event"] not in ("start", "progress")] == ["error"]
    assert events[-1]["message"] in result.stderr


def test_auto_leaves_out_files_it_does_not_recognise_and_lists_them_in_one_line(
    tmp_path, paragraphs, sp_tokenizer_dir, sp_tokenizer
):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "readme.md").write_text("# 三国\n\n第一回。\n", encoding="utf-8")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10")
    out = tmp_path / "out" / "t.bin"
    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, folder)
    assert_one_line_error(
        result, "no documents in the inputs, so nothing was written: ",
        f"{folder / 'image.png'}: not UTF-8 text: byte 0x89 at byte 1 (corpora are UTF-8 text or JSON; convert it, "
        f"or leave it out); {folder / 'readme.md'}: plain text not named *.txt (--format auto reads plain text from "
        f".txt files only; to read it as a corpus, pass --format text)",
    )
    assert not out.parent.exists()

    write_jsonl(folder / "c4.jsonl", [{"text": t} for t in paragraphs[:30]])
    (folder / "novel.txt").write_text("\n\n".join(paragraphs[30:40]) + "\n", encoding="utf-8")
    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--out", out, "--progress", "lines", folder)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "leaves out" in line]
    assert notes == [(
        f"babyllama prepare: --format auto leaves out 2 files it does not recognise: "
        f"{folder / 'image.png'} (not UTF-8 text: byte 0x89 at byte 1), "
        f"{folder / 'readme.md'} (plain text not named *.txt); name a --format to read them"
    )]
    assert out.read_bytes() == seed_bytes(sp_tokenizer, [[t] for t in paragraphs[:40]])
    manifest = json.loads(OutputPaths(out).manifest.read_text())
    assert [(s["path"], s["format"]) for s in manifest["sources"]] == [
        (str(folder / "c4.jsonl"), "c4"), (str(folder / "novel.txt"), "text")]


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A tmpfs of 1 MB of our own to fill up; mounting one needs root. Always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("filling a disk needs a tmpfs of our own, and mounting one needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def leave_free(disk: Path, free: int) -> None:
    """Fill `disk` but for `free` bytes."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    stat = os.statvfs(disk)
    filler.write_bytes(bytes(stat.f_bavail * stat.f_frsize - free))


def used_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir())


def test_a_full_disk_fails_in_one_line_at_any_free_space_and_resumes_once_freed(
    tmp_path, paragraphs, sp_tokenizer_dir, small_disk
):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in paragraphs[:250]])
    clean = tmp_path / "clean.bin"
    prepare([corpus], "c4", sp_tokenizer_dir, clean, workers=1)
    expected = clean.read_bytes()
    assert 40_000 < len(expected) < 200_000
    out = small_disk / "out" / "t.bin"
    paths = OutputPaths(out)
    failed_after_a_chunk = 0
    # Every page of free space from none to more than the output needs, so that each write
    # (partial file, journal, manifest) is the one that finds the disk full at some size.
    for free in range(0, len(expected) + 4 * 4096, 4096):
        shutil.rmtree(out.parent, ignore_errors=True)
        leave_free(small_disk, free)
        try:
            prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1, chunk_bytes=4000)
        except UserError as e:
            assert re.fullmatch(rf"cannot write {re.escape(str(out))}(\.json|\.partial|\.partial\.json): No space left "
                                r"on device; free some space there and run the same command again", str(e)), str(e)
        else:
            assert out.read_bytes() == expected
            continue
        assert not out.exists()
        journal = json.loads(paths.journal.read_text()) if paths.journal.exists() else None
        # What is kept is whole chunks, and no byte more; a failure before the first one keeps nothing.
        if journal is None:
            assert sorted(p.name for p in out.parent.iterdir()) == []
        else:
            failed_after_a_chunk += 1
            assert paths.partial.stat().st_size == journal["bytes"] == 2 * journal["counts"]["tokens"]
            assert paths.partial.read_bytes() == expected[: journal["bytes"]]
        used = used_bytes(out.parent)
        with pytest.raises(UserError, match="No space left on device"):
            prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1, chunk_bytes=4000)
        assert used_bytes(out.parent) == used  # nothing piles up on a retry
        (small_disk / "filler").unlink()
        events = []
        prepare([corpus], "c4", sp_tokenizer_dir, out, workers=1, chunk_bytes=4000, progress=events.append)
        assert out.read_bytes() == expected
        assert sorted(p.name for p in out.parent.iterdir()) == ["t.bin", "t.bin.json"]
        assert any("resuming" in e.get("message", "") for e in events) == (journal is not None)
    assert failed_after_a_chunk > 5

    # The command: one line on stderr, one error event on stdout, exit 2.
    shutil.rmtree(out.parent)
    leave_free(small_disk, len(expected) // 2)
    result = run_prepare("--tokenizer", sp_tokenizer_dir, "--format", "c4", "--out", out, "--progress", "jsonl",
                         "--chunk-mb", "0.004", corpus)
    assert_one_line_error(result, f"cannot write {paths.partial}", "free some space there")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "error" and [e["event"] for e in events].count("error") == 1
