"""`babyllama clean` on a generated corpus with planted duplicates at known rates: how many of
them it finds (recall), how many of what it removes as duplicates were planted (precision),
MB/s and peak memory on all cores against a one-process pass with the same library, whether
both write the same bytes, and a run with a small `--memory-mb` (many passes) for the memory bound.

The corpus: c4-style JSON lines of documents, each a few to a few hundred sentences of the
sample corpus (三国演义) drawn at random, so two base documents share almost nothing. Planted
after them, in among the others: exact copies (`--exact-rate`, with whitespace and full-width
punctuation changed, which normalisation undoes), edited copies (`--near-rate`, 1% of the
characters substituted, inserted or deleted: a Jaccard similarity of about 0.9 on 5-character
shingles), and documents the filters should remove (`--bait-rate`: short, not Chinese, menus,
runs of one character, URLs, digits).

    python bench/clean_bench.py                    # a >= 200 MB corpus under out/bench/clean/
    python bench/clean_bench.py --mb 50 --workers 2
    python bench/clean_bench.py libraries --mb 20  # rensa against datasketch on the same documents

Targets: recall >= 0.95 and precision >= 0.99 on planted duplicates, identical output on all
cores and on one, the all-core run faster than the one-process run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_bench import ROOT, autogroup_note, sample_sentences, timed  # noqa: E402

KINDS = ("base", "exact", "near", "bait")


def edit(text: str, rng: random.Random, fraction: float, alphabet: str) -> str:
    chars = list(text)
    for _ in range(max(1, int(len(chars) * fraction))):
        at = rng.randrange(len(chars))
        choice = rng.random()
        if choice < 0.5:
            chars[at] = rng.choice(alphabet)
        elif choice < 0.75 and len(chars) > 1:
            del chars[at]
        else:
            chars.insert(at, rng.choice(alphabet))
    return "".join(chars)


def exact_copy(text: str, rng: random.Random) -> str:
    """The same text in `clean`'s normal form: whitespace around it, the first part's full-width
    commas as ASCII ones (NFKC maps one to the other)."""
    at = rng.randrange(len(text))
    return "\u3000 " + text[:at].replace("，", ",") + text[at:] + " \n"


def bait(rng: random.Random, sentences: list[str]) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(sentences)[:8]
    if kind == 1:
        return " ".join(rng.choice(["the", "model", "of", "a", "corpus", "is", "cleaned"]) for _ in range(200))
    if kind == 2:
        return "\n".join(["首页 | 新闻 | 体育 | 财经 | 娱乐"] * 30)
    if kind == 3:
        return rng.choice(sentences) + "。" * 300
    if kind == 4:
        return " ".join(f"https://example.com/{rng.randrange(10**6)}/page.html" for _ in range(40))
    return "电话" + " ".join(str(rng.randrange(10**9)) for _ in range(100))


def make_corpus(work: Path, megabytes: int, rates: dict[str, float], seed: int = 20261205) -> tuple[Path, Path]:
    """The corpus and, beside it, each document's kind (base, exact, near, bait), a line each."""
    tag = "-".join(f"{k}{v:g}" for k, v in rates.items())
    path = work / f"corpus-{megabytes}mb-{tag}-{seed}.jsonl"
    kinds_path = path.with_suffix(".kinds")
    if path.exists() and kinds_path.exists():
        return path, kinds_path
    sentences = sample_sentences(work)
    alphabet = "".join(sentences[:2000])
    rng = random.Random(seed)
    base: list[str] = []
    target = megabytes * 10**6
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out, open(kinds_path, "w") as kinds:
        while written < target:
            draw = rng.random()
            if base and draw < rates["exact"]:
                kind, text = "exact", exact_copy(rng.choice(base), rng)
            elif base and draw < rates["exact"] + rates["near"]:
                kind, text = "near", edit(rng.choice(base), rng, 0.01, alphabet)
            elif draw < rates["exact"] + rates["near"] + rates["bait"]:
                kind, text = "bait", bait(rng, sentences)
            else:
                n = min(300, int(rng.lognormvariate(2.6, 0.8)) + 5)
                kind, text = "base", "".join(rng.choice(sentences) for _ in range(n))
                base.append(text)
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            out.write(line)
            kinds.write(kind + "\n")
            written += len(line.encode("utf-8"))
    tmp.replace(path)
    return path, kinds_path


def removed_flags(corpus: Path, output: Path) -> list[bool]:
    """Which input documents are not in the output: the output is an ordered subsequence of the
    input, so a walk over both tells them (an exact copy's original comes first and is matched first)."""
    flags = []
    with open(corpus, encoding="utf-8") as given, open(output, encoding="utf-8") as kept:
        next_kept = kept.readline()
        for line in given:
            text = json.loads(line)["text"]
            if next_kept and json.loads(next_kept)["text"] == text:
                flags.append(False)
                next_kept = kept.readline()
            else:
                flags.append(True)
    return flags


def accuracy(corpus: Path, kinds_path: Path, output: Path) -> dict:
    kinds = kinds_path.read_text().split()
    removed = removed_flags(corpus, output)
    count = {kind: sum(1 for k in kinds if k == kind) for kind in KINDS}
    gone = {kind: sum(1 for k, r in zip(kinds, removed) if k == kind and r) for kind in KINDS}
    planted = count["exact"] + count["near"]
    found = gone["exact"] + gone["near"]
    return {
        "documents": len(kinds), "count": count, "removed": gone,
        "recall": found / planted if planted else 1.0,
        "recall_exact": gone["exact"] / max(count["exact"], 1),
        "recall_near": gone["near"] / max(count["near"], 1),
        # Everything removed that is not bait should be a planted duplicate.
        "precision": found / (found + gone["base"]) if found + gone["base"] else 1.0,
        "bait_removed": gone["bait"] / max(count["bait"], 1),
    }


def clean_command(corpus: Path, out: Path, workers: int | None, memory_mb: float | None = None) -> list[str]:
    command = [sys.executable, "-m", "babyllama", "clean", "--format", "c4", "--out", str(out), "--progress", "none",
               "--force", "--restart", str(corpus)]
    if workers is not None:
        command += ["--workers", str(workers)]
    if memory_mb is not None:
        command += ["--memory-mb", str(memory_mb)]
    return command


def run_clean(args) -> int:
    rates = {"exact": args.exact_rate, "near": args.near_rate, "bait": args.bait_rate}
    corpus, kinds = make_corpus(args.work, args.mb, rates)
    size = corpus.stat().st_size
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or cores
    print(f"== {size / 1e6:,.1f} MB corpus {corpus.name}, {cores} cores; planted rates {rates}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine is shared: "
          "other work on it slows the parallel run more than the one-process run)")
    print(f"{'':28}{'seconds':>9}{'MB/s':>8}{'CPU s':>8}{'peak RSS (all procs)':>22}{'largest proc':>15}")
    runs = {
        f"clean, {workers} workers": (clean_command(corpus, args.work / "parallel.jsonl", workers), "parallel.jsonl"),
        "clean, one process": (clean_command(corpus, args.work / "serial.jsonl", 1), "serial.jsonl"),
        f"clean, {workers} w, --memory-mb {args.small_memory_mb:g}": (
            clean_command(corpus, args.work / "small-memory.jsonl", workers, args.small_memory_mb), "small-memory.jsonl"),
    }
    results = {}
    for name, (command, _) in runs.items():
        result = results[name] = timed(command)
        print(f"{name:28}{result['seconds']:9.2f}{size / 1e6 / result['seconds']:8.1f}{result['cpu']:8.1f}"
              f"{result['peak_tree'] / 2**20:19,.0f} MB{result['peak_single'] / 2**20:12,.0f} MB")
    outputs = [(args.work / out).read_bytes() for _, out in runs.values()]
    identical = all(o == outputs[0] for o in outputs)
    names = list(runs)
    ratio = results[names[1]]["seconds"] / results[names[0]]["seconds"]
    cpu_bound = cores * results[names[1]]["cpu"] / results[names[0]]["cpu"]
    manifest = json.loads((args.work / "parallel.jsonl.json").read_text(encoding="utf-8"))
    found = accuracy(corpus, kinds, args.work / "parallel.jsonl")
    print(f"speed ratio (all cores / one process): {ratio:.2f}x; at most {cpu_bound:.2f}x with every core to "
          f"itself{autogroup_note()}")
    print(f"identical output (all cores, one process, small memory): {identical}")
    print(f"documents: {found['documents']:,} ({found['count']}); removed by kind: {found['removed']}")
    print(f"duplicates: recall {found['recall']:.4f} (exact {found['recall_exact']:.4f}, near "
          f"{found['recall_near']:.4f}), precision {found['precision']:.4f}; bait removed {found['bait_removed']:.3f}")
    print(f"manifest: removed {manifest['removed']}; clusters {manifest['duplicate_clusters']['sizes']}")
    met = found["recall"] >= 0.95 and found["precision"] >= 0.99 and identical and ratio > 1.0
    print(f"target (recall >= 0.95, precision >= 0.99, identical, faster on all cores): {'met' if met else 'NOT met'}; "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for _, out in runs.values():
        (args.work / out).unlink()
        (args.work / (out + ".json")).unlink()
    return 0 if met else 1


def run_libraries(args) -> int:
    """Both libraries' signatures of the same shingles (babyllama's 64-bit shingle hashes: rensa
    takes them as they are, datasketch as 8-byte strings through its default hash, its usual
    way), then the same bands and check, so only the library differs: seconds and recall."""
    from importlib.metadata import version

    import datasketch
    import numpy as np
    import rensa

    from babyllama.clean.quality import code_points, normal_form
    from babyllama.clean.settings import CleanSettings
    from babyllama.clean.signatures import band_keys, shingle_hashes

    rates = {"exact": 0.0, "near": 0.1, "bait": 0.0}
    corpus, kinds_path = make_corpus(args.work, args.mb, rates)
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    kinds = kinds_path.read_text().split()
    settings = CleanSettings()
    bands, rows = settings.bands
    hashes = [shingle_hashes(code_points(normal_form(text)[1].replace(" ", "")), settings.shingle_chars)
              for text in texts]
    megabytes = corpus.stat().st_size / 1e6
    print(f"== {megabytes:,.1f} MB, {len(texts):,} documents ({kinds.count('near'):,} edited copies); "
          f"{settings.num_perm} permutations, {bands} bands of {rows} rows, threshold {settings.threshold}")
    signatures = {}
    started = time.perf_counter()
    offsets = np.cumsum([0] + [len(h) for h in hashes], dtype=np.uint64)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(np.concatenate(hashes), offsets,
                                                                 settings.num_perm, settings.seed)
    signatures["rensa"] = (np.asarray(matrix.to_rows(), dtype=np.uint32), time.perf_counter() - started)
    started = time.perf_counter()
    rows_d = []
    for h in hashes:
        minhash = datasketch.MinHash(num_perm=settings.num_perm, seed=settings.seed)
        minhash.update_batch([value.to_bytes(8, "little") for value in h.tolist()])
        rows_d.append(minhash.hashvalues.astype(np.uint32))
    signatures["datasketch"] = (np.array(rows_d), time.perf_counter() - started)
    for name, (sig, seconds) in signatures.items():
        keys = band_keys(sig, bands, rows)
        first = {}
        found = false = 0
        for index in range(len(texts)):
            match = None
            for band in range(bands):
                other = first.setdefault((band, int(keys[index, band])), index)
                if other != index and (sig[index] == sig[other]).mean() >= settings.threshold:
                    match = other
                    break
            if match is not None:
                found += kinds[index] == "near"
                false += kinds[index] != "near"
        print(f"{name:11}{version(name):>7} signatures {seconds:7.2f} s ({megabytes / seconds:7.1f} MB/s); edited copies found "
              f"{found / max(kinds.count('near'), 1):.4f}, other documents matched {false}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=["clean", "libraries"], default="clean")
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB (default: 200)")
    parser.add_argument("--workers", type=int, default=None, help="workers of the parallel run (default: every core)")
    parser.add_argument("--exact-rate", type=float, default=0.05)
    parser.add_argument("--near-rate", type=float, default=0.05)
    parser.add_argument("--bait-rate", type=float, default=0.02)
    parser.add_argument("--small-memory-mb", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "clean")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    return run_libraries(args) if args.mode == "libraries" else run_clean(args)


if __name__ == "__main__":
    raise SystemExit(main())
