"""`babyllama clean`: each quality filter on written examples, exact and near duplicates (across
files, an edited copy found and an unrelated document not), the same output whatever the
workers, chunks and memory, resuming after SIGKILL in a real subprocess, the report's counts,
bad input, and the output read back by prepare."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from babyllama.clean import RULES, CleanPaths, CleanSettings, clean
from babyllama.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def chapters(sample_jsonl) -> list[str]:
    return read_texts(sample_jsonl)


def edited(text: str, seed: int, edits: int) -> str:
    """`text` with `edits` characters substituted, deleted or inserted at random places."""
    rng = random.Random(seed)
    chars = list(text)
    for _ in range(edits):
        at = rng.randrange(len(chars))
        choice = rng.random()
        if choice < 0.5:
            chars[at] = rng.choice("天下大势分久必合")
        elif choice < 0.75:
            del chars[at]
        else:
            chars.insert(at, rng.choice("曹操刘备孙权"))
    return "".join(chars)


def manifest_of(out: Path) -> dict:
    return json.loads(CleanPaths(out).manifest.read_text(encoding="utf-8"))


# --- the quality filters, each on written examples ---------------------------------------------------

PROSE = "却说张飞拍马赶到关下，关上矢石如雨，不得进而回。次日，张飞又去关下搦战，刘璋只是不出。"
REMOVED = {
    "too_short": "天下大势",
    "too_long": PROSE * 40,
    "low_cjk": "The empire, long divided, must unite; long united, must divide. Thus it has ever been.",
    "repeated_lines": "\n".join(["首页 新闻中心 产品展示 联系我们"] * 6 + [PROSE]),
    "repeated_ngrams": PROSE + "欢迎光临本店欢迎光临本店欢迎光临本店欢迎光临本店欢迎光临本店欢迎光临本店",
    "repeated_chars": "好消息！" + "哈" * 40 + "啊" * 40,
    "urls": "详见网址 http://example.com/a/very/long/path/to/the/page/of/the/news/article/2026/index.html",
    "digits": "联系电话请拨打以下号码谢谢合作欢迎来电咨询 13800138000 13900139000 13700137000",
    "punctuation": "注意……——！！？？【】《》「」『』~~~###@@@$$$%%%^^^&&&***",
}


def test_each_filter_removes_its_example_and_keeps_prose(tmp_path):
    settings = CleanSettings(max_chars=1000)
    kept = [PROSE, "话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚、汉分争，又并入于汉。"]
    corpus = write_jsonl(tmp_path / "in.jsonl", list(REMOVED.values()) + kept)
    out = tmp_path / "out.jsonl"
    manifest = clean([corpus], "c4", out, settings, workers=1)

    assert read_texts(out) == kept
    for line, rule in enumerate(REMOVED, start=1):
        assert manifest["removed"][rule] == 1, rule
        (example,) = manifest["examples"][rule]
        assert example["where"] == f"{corpus}:{line}"
        assert example["measured"]  # what was measured against which limit
    assert manifest["removed"]["exact_duplicate"] == manifest["removed"]["near_duplicate"] == 0


def test_a_url_in_prose_counts_only_its_own_characters(tmp_path, chapters):
    # Whitespace-free text (and NFKC's ASCII commas) once let a URL run on through the prose after it.
    clauses = "".join(chapters[1][:300].split()).replace("。", "，") + "。"
    texts = ["参考资料：\n1. https://zh.wikipedia.org/wiki/%E4%B8%AD%E5%9B%BD\n" + clauses,
             "详见https://example.com/news/2026/index.html，" + clauses]
    corpus = write_jsonl(tmp_path / "in.jsonl", texts + [REMOVED["urls"]])
    manifest = clean([corpus], "c4", tmp_path / "out.jsonl", workers=1)
    assert read_texts(tmp_path / "out.jsonl") == texts
    assert manifest["removed"]["urls"] == 1


def test_dates_and_figures_in_chinese_prose_are_kept(tmp_path):
    # A Chinese character says as much as an English word, so years and figures are a large share
    # of the characters of good text: these measure 0.38 and 0.31 digits.
    texts = ["1949年10月1日，中华人民共和国成立。1950年6月25日朝鲜战争爆发，1953年7月27日签订停战协定。"
             "1954年9月20日通过第一部宪法。",
             "2023年，全市实现地区生产总值12345.67亿元，同比增长5.2%；其中第一产业增加值234.5亿元，增长3.1%；"
             "第二产业增加值4567.8亿元，增长4.6%；第三产业增加值7543.3亿元，增长5.9%。"]
    corpus = write_jsonl(tmp_path / "in.jsonl", texts + [REMOVED["digits"]])
    manifest = clean([corpus], "c4", tmp_path / "out.jsonl", workers=1)
    assert read_texts(tmp_path / "out.jsonl") == texts
    assert manifest["removed"]["digits"] == 1


def test_chinese_with_english_terms_is_kept_and_english_is_not(tmp_path):
    # 0.24 of its characters are CJK when every Latin letter counts as one.
    texts = ["GPT-4是OpenAI发布的大型语言模型（Large Language Model, LLM），支持多模态输入（multimodal input），"
             "在MMLU、HumanEval等benchmark上表现优异。"]
    corpus = write_jsonl(tmp_path / "in.jsonl", texts + [REMOVED["low_cjk"]])
    manifest = clean([corpus], "c4", tmp_path / "out.jsonl", workers=1)
    assert read_texts(tmp_path / "out.jsonl") == texts
    assert manifest["removed"]["low_cjk"] == 1


def test_dialogue_with_chinese_ellipses_is_kept(tmp_path):
    # NFKC makes "……" six ASCII dots: 0.48 punctuation and 0.33 repeated characters, were it applied.
    texts = ["“你……你怎么来了？”她愣住了。\n“我……我只是路过……”他低下头，声音越来越小。\n"
             "“路过？”她冷笑一声，“从北京路过到上海？”\n“嗯……”\n两人沉默了很久……窗外的雨一直下着……"]
    corpus = write_jsonl(tmp_path / "in.jsonl", texts + [REMOVED["punctuation"], REMOVED["repeated_chars"]])
    manifest = clean([corpus], "c4", tmp_path / "out.jsonl", workers=1)
    assert read_texts(tmp_path / "out.jsonl") == texts
    assert manifest["removed"]["punctuation"] == manifest["removed"]["repeated_chars"] == 1


def test_repeated_ngrams_from_shingle_hashes_measure_what_direct_hashes_do(chapters):
    from babyllama.clean.quality import code_points, gram_hashes, normal_form, repeated_ngram_share

    for text in chapters[:20] + [REMOVED["repeated_ngrams"], REMOVED["repeated_lines"]]:
        points = code_points(normal_form(text)[1].replace(" ", ""))
        direct = repeated_ngram_share(points, 10)
        assert repeated_ngram_share(points, 10, (5, gram_hashes(points, 5))) == direct
    assert direct > 0.3


@pytest.mark.parametrize("rule, setting", [
    ("too_short", {"min_chars": 0}),
    ("low_cjk", {"min_cjk": 0.0}),
    ("repeated_lines", {"max_repeated_lines": 1.0, "max_repeated_ngrams": 1.0}),
    ("repeated_chars", {"max_repeated_chars": 1.0, "max_repeated_ngrams": 1.0}),
    ("digits", {"max_digits": 1.0}),
])
def test_a_filter_set_off_keeps_what_it_removed(tmp_path, rule, setting):
    corpus = write_jsonl(tmp_path / "in.jsonl", [REMOVED[rule]])
    out = tmp_path / "out.jsonl"
    with pytest.raises(UserError):
        clean([corpus], "c4", tmp_path / "removed.jsonl", CleanSettings(), workers=1)
    settings = CleanSettings(**setting)
    manifest = clean([corpus], "c4", out, settings, workers=1)
    assert read_texts(out) == [REMOVED[rule]] and sum(manifest["removed"].values()) == 0


def test_the_sample_corpus_keeps_every_chapter(tmp_path, sample_jsonl, chapters):
    manifest = clean([sample_jsonl], "c4", tmp_path / "sanguo.clean.jsonl", workers=1)
    assert manifest["documents_out"] == len(chapters) == 120
    assert read_texts(tmp_path / "sanguo.clean.jsonl") == chapters


# --- duplicates ----------------------------------------------------------------------------------


def test_exact_duplicates_across_files_keep_the_first_by_input_order(tmp_path, chapters):
    first = write_jsonl(tmp_path / "a" / "1.jsonl", [chapters[0], chapters[1]])
    # The same texts to NFKC and whitespace: ASCII commas for full-width ones, other spacing.
    copy = "\u3000" + chapters[1].replace("，", ",") + "  \n"
    second = write_jsonl(tmp_path / "b" / "2.jsonl", [chapters[2], copy, chapters[0]])
    out = tmp_path / "out.jsonl"
    manifest = clean([tmp_path / "a", second], "c4", out, workers=1)

    assert read_texts(out) == [chapters[0], chapters[1], chapters[2]]
    assert manifest["removed"]["exact_duplicate"] == 2
    examples = {e["where"]: e for e in manifest["examples"]["exact_duplicate"]}
    assert examples[f"{second}:2"]["kept"]["where"] == f"{first}:2"
    assert examples[f"{second}:3"]["kept"]["where"] == f"{first}:1"
    assert manifest["duplicate_clusters"]["sizes"] == {"2": 2}


def test_an_edited_copy_is_a_near_duplicate_and_an_unrelated_chapter_is_not(tmp_path, chapters):
    copy = edited(chapters[5], seed=1, edits=len(chapters[5]) // 100)  # 1% of the characters
    far = edited(chapters[6], seed=2, edits=len(chapters[6]) // 4)  # a quarter: another text
    corpus = write_jsonl(tmp_path / "in.jsonl", [chapters[5], chapters[6], copy, chapters[7], far])
    out = tmp_path / "out.jsonl"
    manifest = clean([corpus], "c4", out, workers=1)

    assert read_texts(out) == [chapters[5], chapters[6], chapters[7], far]
    assert manifest["removed"]["near_duplicate"] == 1 and manifest["removed"]["exact_duplicate"] == 0
    (example,) = manifest["examples"]["near_duplicate"]
    assert example["where"] == f"{corpus}:3" and example["kept"]["where"] == f"{corpus}:1"
    assert 0.8 <= example["similarity"] < 1.0

    # A stricter threshold than the copy's similarity keeps it.
    strict = clean([corpus], "c4", tmp_path / "strict.jsonl", CleanSettings(threshold=0.99), workers=1)
    assert strict["removed"]["near_duplicate"] == 0 and strict["documents_out"] == 5


@pytest.fixture(scope="module")
def dup_corpus(tmp_path_factory, chapters) -> Path:
    """Every chapter, then five edited copies of each and an exact copy of every tenth (about 11 MB)."""
    texts = list(chapters)
    for round_ in range(1, 6):
        texts += [edited(c, seed=round_ * 1000 + i, edits=len(c) // 200) for i, c in enumerate(chapters)]
    texts += chapters[::10]
    return write_jsonl(tmp_path_factory.mktemp("dups") / "dups.jsonl", texts)


@pytest.fixture(scope="module")
def dup_corpus_clean(tmp_path_factory, dup_corpus) -> Path:
    out = tmp_path_factory.mktemp("dups-clean") / "dups.clean.jsonl"
    clean([dup_corpus], "c4", out, workers=1)
    return out


def test_the_report_counts_add_up(dup_corpus, dup_corpus_clean, chapters):
    manifest = manifest_of(dup_corpus_clean)
    removed = manifest["removed"]
    assert set(removed) == set(RULES)
    assert manifest["documents_in"] == 120 * 6 + 12
    assert manifest["documents_out"] + sum(removed.values()) == manifest["documents_in"]
    assert manifest["documents_out"] == len(read_texts(dup_corpus_clean))
    assert read_texts(dup_corpus_clean) == chapters
    assert removed["exact_duplicate"] == 12 and removed["near_duplicate"] == 600
    sizes = {int(size): n for size, n in manifest["duplicate_clusters"]["sizes"].items()}
    assert sum((size - 1) * n for size, n in sizes.items()) == removed["exact_duplicate"] + removed["near_duplicate"]
    assert sum(sizes.values()) == manifest["duplicate_clusters"]["clusters"] == 120
    assert manifest["duplicate_clusters"]["largest"][0]["size"] == 7


def test_the_same_output_whatever_the_workers_chunks_and_memory(tmp_path, dup_corpus, dup_corpus_clean):
    expected = manifest_of(dup_corpus_clean)
    for workers, chunk_bytes, memory_bytes in [(2, 100_000, 1 << 30), (3, 333_333, 5_000)]:
        out = tmp_path / f"w{workers}.jsonl"
        manifest = clean([dup_corpus], "c4", out, workers=workers, chunk_bytes=chunk_bytes, memory_bytes=memory_bytes)
        assert out.read_bytes() == dup_corpus_clean.read_bytes()
        assert {**manifest, "created": None} == {**expected, "created": None}


# --- the command: subprocesses, kills, errors ------------------------------------------------------


def run_clean(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", "clean", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, **kwargs)


def wait_for(journal: Path, ready, process: subprocess.Popen) -> None:
    while process.poll() is None:
        try:
            if ready(json.loads(journal.read_text())):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"clean ended (exit {process.returncode}) before the moment to kill it")


CLEAN_ARGS = ["--format", "c4", "--progress", "jsonl", "--workers", "2", "--chunk-mb", "0.02"]


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["scan", "write"])
def test_killed_with_sigkill_resumes_to_the_same_output(tmp_path, dup_corpus, dup_corpus_clean, phase):
    import psutil

    out = tmp_path / "t.jsonl"
    paths = CleanPaths(out)
    process = subprocess.Popen([sys.executable, "-m", "babyllama", "clean", "--out", str(out), *CLEAN_ARGS,
                                str(dup_corpus)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    if phase == "scan":
        wait_for(paths.journal, lambda j: j["chunks"] >= 20, process)
    else:
        wait_for(paths.journal, lambda j: j["phase"] == "write" and j["write"]["documents"] > 0, process)
    workers = psutil.Process(process.pid).children()
    process.kill()
    process.communicate()
    assert not out.exists() and not paths.manifest.exists()
    assert psutil.wait_procs(workers, timeout=10)[1] == []

    result = run_clean("--out", out, *CLEAN_ARGS, dup_corpus)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "note" and f"resuming in the {phase} phase" in events[0]["message"]
    start = events[1]
    assert start["event"] == "start" and 0 < start["resumed_bytes"] <= start["total_bytes"]
    assert (start["resumed_bytes"] == start["total_bytes"]) == (phase == "write")
    assert out.read_bytes() == dup_corpus_clean.read_bytes()
    assert {**manifest_of(out), "created": None} == {**manifest_of(dup_corpus_clean), "created": None}
    assert not paths.work.exists() and not paths.partial.exists()


@pytest.mark.slow
def test_a_second_clean_of_the_same_out_is_refused_while_the_first_runs(tmp_path, dup_corpus, dup_corpus_clean):
    out = tmp_path / "t.jsonl"
    paths = CleanPaths(out)
    process = subprocess.Popen([sys.executable, "-m", "babyllama", "clean", "--out", str(out), *CLEAN_ARGS,
                                str(dup_corpus)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    wait_for(paths.journal, lambda j: j["chunks"] >= 5, process)
    # Other settings: before the lock this one dropped the first run's work folder under it.
    with pytest.raises(UserError, match="another clean is writing"):
        clean([dup_corpus], "c4", out, CleanSettings(threshold=0.9), workers=1)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert out.read_bytes() == dup_corpus_clean.read_bytes()
    assert not paths.lock.exists() and not paths.work.exists()


def test_jsonl_progress_and_explain(tmp_path, chapters):
    corpus = write_jsonl(tmp_path / "in.jsonl", [chapters[0], REMOVED["low_cjk"], chapters[0], REMOVED["digits"]])
    out = tmp_path / "out.jsonl"
    result = run_clean("--format", "c4", "--out", out, "--progress", "jsonl", corpus)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    phases = [e["phase"] for e in events if e["event"] == "progress"]
    assert {"scan", "dedup", "write"} <= set(phases)
    assert events[-1]["documents_out"] == 1 and events[-1]["removed"]["exact_duplicate"] == 1

    explained = run_clean("--format", "c4", "--out", out, "--explain", "3", corpus)
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout
    assert "low_cjk: 1 removed" in text and f"{corpus}:2: CJK share 0.00 < 0.3" in text
    assert "digits: 1 removed" in text and "exact_duplicate: 1 removed" in text and f"{corpus}:1" in text
    # Other inputs are another cleaning: it is not explained from this output's report.
    other = write_jsonl(tmp_path / "other.jsonl", [chapters[1]])
    assert_one_line_error(run_clean("--format", "c4", "--out", out, "--explain", "3", corpus, other), "other inputs", "--force")


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr


def test_explain_on_an_output_made_with_other_settings_names_them(tmp_path, chapters):
    corpus = write_jsonl(tmp_path / "in.jsonl", chapters[:3] + [REMOVED["digits"]])
    out = tmp_path / "out.jsonl"
    assert run_clean("--format", "c4", "--out", out, "--progress", "none", corpus).returncode == 0
    result = run_clean("--format", "c4", "--out", out, "--progress", "none", "--threshold", "0.9",
                       "--explain", "3", corpus)
    assert_one_line_error(result, "--threshold 0.8 (now 0.9)", "--force")


def test_bad_input_is_one_line_or_named_by_file_and_line(tmp_path, chapters):
    out = tmp_path / "out.jsonl"
    assert_one_line_error(run_clean("--format", "c4", "--out", out, tmp_path / "missing.jsonl"), "missing.jsonl")
    assert_one_line_error(run_clean("--format", "c4", "--out", tmp_path / "out.txt", tmp_path), ".jsonl")
    sft = write_jsonl(tmp_path / "sft" / "qa.jsonl", [])
    sft.write_text('{"instruction": "q", "input": "", "output": "a"}\n', encoding="utf-8")
    assert_one_line_error(run_clean("--format", "sft-alpaca", "--out", out, sft), str(sft), "conversations")
    assert_one_line_error(run_clean("--format", "c4", "--out", out, "--min-cjk", "1.5", sft), "--min-cjk")
    assert not out.exists()

    corpus = write_jsonl(tmp_path / "in.jsonl", [chapters[0]])
    with open(corpus, "a", encoding="utf-8") as f:
        f.write('{"text": "cut\n' + json.dumps({"text": chapters[1]}, ensure_ascii=False) + "\n")
    result = run_clean("--format", "c4", "--out", out, "--progress", "none", corpus)
    assert result.returncode == 0, result.stderr
    manifest = manifest_of(out)
    assert manifest["malformed"] == 1 and manifest["malformed_examples"][0].startswith(f"{corpus}:2: ")
    assert read_texts(out) == [chapters[0], chapters[1]]

    again = run_clean("--format", "c4", "--out", out, corpus)
    assert_one_line_error(again, "already exists", "--force")
    nothing = write_jsonl(tmp_path / "empty" / "none.jsonl", [])
    assert_one_line_error(run_clean("--format", "c4", "--out", tmp_path / "n.jsonl", nothing), "no documents")


def test_prepare_reads_the_output_back(tmp_path, dup_corpus_clean, sp_tokenizer_dir, chapters):
    from babyllama.prepare import prepare

    manifest = prepare([dup_corpus_clean.parent], "c4", sp_tokenizer_dir, tmp_path / "t.bin", workers=1)
    assert manifest["documents"] == len(chapters) and manifest["skipped"]["malformed"] == 0
