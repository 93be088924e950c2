"""`babyllama prepare` against the seed's way of tokenizing, on the same corpus, in one run.

The seed (data_process.py) reads a corpus one line at a time in one process, encodes each
document, appends its ids and eos to one Python list and writes np.array(ids) at the end.
This bench generates a c4-style JSON-lines corpus of realistic Chinese (sentences of the
sample corpus, 三国演义, recombined into documents of varied length), trains or reuses a
SentencePiece tokenizer (vocabulary 8,000), then times both ways as subprocesses and prints
seconds, MB/s and peak memory of each, the speed ratio and whether the bytes are identical.

    python bench/prepare_bench.py                 # >= 100 MB corpus under out/bench/prepare/
    python bench/prepare_bench.py --mb 200 --workers 2

With BABYLLAMA_CHATGLM_TOKENIZER=path/to/tokenizer.model it also runs both with that
tokenizer (the seed's ChatGLM2 one).

Targets on a 2-core machine: ratio >= 1.8, identical bytes, peak memory < 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def sample_sentences(work: Path) -> list[str]:
    from babyllama.corpora import read_documents
    from babyllama.sample import fetch_sample

    sample = fetch_sample(work / "sample")
    text = "".join("".join(doc.segments) for doc in read_documents([sample], "c4"))
    sentences = [s.strip() for s in re.findall(r"[^。！？\n]+[。！？]?[”」]?", text)]
    return [s for s in sentences if s]


def make_corpus(work: Path, megabytes: int, seed: int = 20231128) -> Path:
    """Documents of 1 to ~400 sentences (a few of only a word or two, which the seed drops)."""
    path = work / f"corpus-{megabytes}mb-{seed}.jsonl"
    if path.exists():
        return path
    sentences = sample_sentences(work)
    rng = random.Random(seed)
    target = megabytes * 10**6
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "w", encoding="utf-8") as f:
        while written < target:
            if rng.random() < 0.03:
                text = rng.choice(sentences)[: rng.randint(1, 3)]
            else:
                n = min(400, int(rng.lognormvariate(2.5, 1.0)) + 1)
                start = rng.randrange(len(sentences))
                # Runs of consecutive sentences read like prose; a few jumps mix the chapters.
                text = "".join(
                    sentences[(start + i) % len(sentences)] if rng.random() > 0.1 else rng.choice(sentences)
                    for i in range(n)
                )
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
    tmp.replace(path)
    return path


def make_tokenizer(work: Path) -> Path:
    from babyllama.corpora import read_documents
    from babyllama.sample import fetch_sample
    from babyllama.tokenizer import train_sentencepiece

    out = work / "tokenizer-8000"
    if not (out / "tokenizer.model").exists():
        sample = fetch_sample(work / "sample")
        texts = ("".join(doc.segments) for doc in read_documents([sample], "c4"))
        train_sentencepiece(texts, out, vocab_size=8000)
    return out


def seed_style(tokenizer_path: str, corpus: str, out: str) -> None:
    """The seed's loop: one process, one document at a time, one list of ids, one write at the end."""
    import numpy as np

    from babyllama.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    doc_ids = []
    with open(corpus, "r", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            text_id = tokenizer.encode(text)
            text_id.append(tokenizer.eos_id)
            if len(text_id) > 5:
                doc_ids += text_id
    arr = np.array(doc_ids, dtype=dtype)
    with open(out, "wb") as f:
        f.write(arr.tobytes())


def timed(command: list[str]) -> dict:
    """Wall time, CPU time and peak memory of a command with all its child processes
    (memory: resident sizes summed over the process tree, sampled every 20 ms)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = psutil.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    peak_tree = peak_single = 0
    while process.poll() is None:
        try:
            family = [process] + process.children(recursive=True)
            rss = []
            for p in family:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak_tree = max(peak_tree, sum(rss))
            peak_single = max(peak_single, max(rss, default=0))
        except psutil.Error:
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"seconds": seconds, "cpu": cpu, "peak_tree": peak_tree, "peak_single": peak_single}


def autogroup_note() -> str:
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return ""
    return " (autogroup is on: the kernel shares CPU between sessions)" if enabled else " (autogroup is off)"


def compare(label: str, tokenizer: Path, corpus: Path, work: Path, workers: int | None, rounds: int) -> bool:
    size = corpus.stat().st_size
    baseline_out = work / f"{label}-seed-style.bin"
    ours_out = work / f"{label}-babyllama.bin"
    baseline_command = [sys.executable, __file__, "seed-style", str(tokenizer), str(corpus), str(baseline_out)]
    ours_command = [
        sys.executable, "-m", "babyllama", "prepare", "--tokenizer", str(tokenizer), "--format", "c4",
        "--out", str(ours_out), "--progress", "none", "--force", "--restart", str(corpus),
    ]
    if workers is not None:
        ours_command += ["--workers", str(workers)]
    print(f"\n== {label}: {size / 1e6:,.1f} MB corpus, tokenizer {tokenizer}, {len(os.sched_getaffinity(0))} cores")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the machine "
          "slows the parallel run more than the serial one)")
    print(f"{'':22}{'seconds':>9}{'MB/s':>9}{'CPU s':>8}{'peak RSS (all procs)':>22}{'largest proc':>15}")
    # In turns, so that load from elsewhere on the machine falls on both alike; the best of
    # each is compared.
    results: dict[str, list[dict]] = {"seed-style loop": [], "babyllama prepare": []}
    for _ in range(rounds):
        for name, command in [("seed-style loop", baseline_command), ("babyllama prepare", ours_command)]:
            result = timed(command)
            results[name].append(result)
            print(
                f"{name:22}{result['seconds']:9.2f}{size / 1e6 / result['seconds']:9.1f}{result['cpu']:8.1f}"
                f"{result['peak_tree'] / 2**20:19,.0f} MB{result['peak_single'] / 2**20:12,.0f} MB"
            )
    baseline = min(results["seed-style loop"], key=lambda r: r["seconds"])
    ours = min(results["babyllama prepare"], key=lambda r: r["seconds"])
    peak = max(r["peak_tree"] for r in results["babyllama prepare"])
    identical = baseline_out.read_bytes() == ours_out.read_bytes()
    ratio = baseline["seconds"] / ours["seconds"]
    print(f"best of {rounds}: seed-style {baseline['seconds']:.2f} s, babyllama {ours['seconds']:.2f} s")
    print(f"speed ratio: {ratio:.2f}x   identical bytes: {identical}   peak memory of ours: "
          f"{peak / 2**20:,.0f} MB   output: {ours_out.stat().st_size / 1e6:,.1f} MB")
    # Bounds that load on the machine cannot distort much. With every core to itself, CPU time
    # spread perfectly over the cores, with no start-up and no waiting. With the cores busy
    # elsewhere, the CPU time ratio: Linux's autogroup shares the machine between sessions, not
    # threads, so a run whose session gets at most one core's worth gains nothing from threads.
    cpu_bound = len(os.sched_getaffinity(0)) * baseline["cpu"] / ours["cpu"]
    print(f"CPU time: babyllama used {ours['cpu'] / baseline['cpu']:.2f}x the seed loop's, so it can be "
          f"{baseline['cpu'] / ours['cpu']:.2f}x faster on a busy machine{autogroup_note()} and at most "
          f"{cpu_bound:.2f}x with every core to itself")
    met = ratio >= 1.8 and identical and peak < GiB
    print(f"target (>= 1.8x, identical, < 1 GiB): {'met' if met else 'NOT met'}; "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    baseline_out.unlink()
    return met


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "seed-style":
        seed_style(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=110, help="corpus size in MB (default: 110)")
    parser.add_argument("--workers", type=int, default=None, help="passed to babyllama prepare")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, in turns; the best counts (default: 3)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "prepare")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    corpus = make_corpus(args.work, args.mb)
    met = compare("sentencepiece-8000", make_tokenizer(args.work), corpus, args.work, args.workers, args.rounds)
    chatglm = os.environ.get("BABYLLAMA_CHATGLM_TOKENIZER")
    if chatglm:
        met = compare("chatglm2", Path(chatglm), corpus, args.work, args.workers, args.rounds) and met
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
