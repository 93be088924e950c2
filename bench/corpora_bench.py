"""How fast the corpus readers parse, against the plain way of reading the same files.

Generates ~100 MB of C4-style JSON lines and a ~100 MB wikipedia-style JSON array (Chinese
text), then reads each through babyllama.corpora.iter_records and through the baseline:
`for line in f: json.loads(line)` for JSON lines, `json.load(f)` for the array (what the seed
does; it holds the whole file in memory). Prints MB/s (per CPU second) of both and
ratio = ours / baseline.

    python bench/corpora_bench.py [--mb 100] [--dir /tmp/corpora-bench]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import tempfile
import time
from pathlib import Path

from babyllama.corpora import iter_records

HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)]
PUNCTUATION = list("，，，。。、；：“”！？")


def random_document(rng: random.Random) -> str:
    paragraphs = []
    for _ in range(rng.randint(1, 6)):
        words = rng.choices(HANZI, k=rng.randint(40, 500))
        for k in range(0, len(words), rng.randint(8, 30)):
            words[k] = rng.choice(PUNCTUATION)
        paragraphs.append("".join(words) + "。")
    return "\n".join(paragraphs)


def write_corpora(folder: Path, megabytes: int) -> tuple[Path, Path, Path]:
    lines, array = folder / "c4.json", folder / "wiki.json"
    packed = folder / "c4.json.gz"
    if lines.exists() and array.exists() and packed.exists() and lines.stat().st_size >= megabytes * 1e6:
        return lines, array, packed
    rng = random.Random(0)
    documents, size = [], 0
    while size < megabytes * 1e6:
        documents.append(random_document(rng))
        size += len(documents[-1].encode()) + 90
    with open(lines, "w", encoding="utf-8") as f:
        for text in documents:
            record = {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": "https://example.com/page"}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(array, "w", encoding="utf-8") as f:
        json.dump([{"completion": t, "source": "wikipedia.zh2307"} for t in documents], f, ensure_ascii=False, indent=4)
    with open(lines, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
        dst.write(src.read())
    return lines, array, packed


def lines_baseline(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            json.loads(line)
            count += 1
    return count


def array_baseline(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return len(json.load(f))


def ours(path: Path, fmt: str) -> int:
    count = 0
    for _ in iter_records(path, fmt):
        count += 1
    return count


def best_rates(cases: list, path: Path, repeats: int) -> list[tuple[float, int]]:
    """MB/s of each reader, best of `repeats` runs taken in turns.

    CPU time of this process, not wall time, so other work on the machine moves the numbers
    less; the files are in the page cache after the first read.
    """
    best = [float("inf")] * len(cases)
    counts = [0] * len(cases)
    for _ in range(repeats):
        for k, read in enumerate(cases):
            start = time.process_time()
            counts[k] = read(path)
            best[k] = min(best[k], time.process_time() - start)
    return [(path.stat().st_size / 1e6 / seconds, count) for seconds, count in zip(best, counts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="size of each generated file in MB (default 100)")
    parser.add_argument("--dir", type=Path, help="keep the generated files here (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        lines, array, packed = write_corpora(folder, args.mb)
        cases = [
            ("c4 JSON lines", lines, "c4", lines_baseline, "for line in f: json.loads(line)"),
            ("c4 JSON lines .gz", packed, "c4", lines_baseline, "gzip.open + json.loads per line"),
            ("wiki JSON array", array, "wiki", array_baseline, "json.load(f), whole file in memory"),
        ]
        print(f"{'case':<20} {'size MB':>8} {'records':>8} {'ours MB/s':>10} {'base MB/s':>10} {'ratio':>6}  baseline")
        for name, path, fmt, baseline, baseline_name in cases:
            (ours_rate, ours_count), (base_rate, base_count) = best_rates(
                [lambda p: ours(p, fmt), baseline], path, args.repeats)
            assert ours_count == base_count, (name, ours_count, base_count)
            print(f"{name:<20} {path.stat().st_size / 1e6:>8.1f} {ours_count:>8} {ours_rate:>10.1f} "
                  f"{base_rate:>10.1f} {ours_rate / base_rate:>6.2f}  {baseline_name}")


if __name__ == "__main__":
    main()
