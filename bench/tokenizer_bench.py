"""How fast tokenizers encode in batches and decode while streaming, against the plain ways.

1. Encoding: `encode_batch(texts)` against `[encode(t) for t in texts]` on the sample corpus
   (三国演义), cut two ways: whole chapters (~5,000 characters) and lines (~400).
2. Streaming: `IncrementalDecoder.push` one id at a time over a whole chapter, against the
   naive stream that decodes all ids so far after each new id and gives out what is new
   (holding back an unfinished character the same way, so both give the same text).

Runs each side in turns and keeps the best wall time of each; prints times and ratio =
baseline / ours (above 1: ours is faster). Trains the vocabulary-8,000 tokenizer the demo
uses on the sample first (a second or two). Set BABYLLAMA_CHATGLM_TOKENIZER to also time
ChatGLM2's tokenizer.

    python bench/tokenizer_bench.py [--rounds 5] [--dir /tmp/tokenizer-bench]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from babyllama.corpora import read_documents
from babyllama.sample import fetch_sample
from babyllama.tokenizer import load_tokenizer, train_sentencepiece


def best_times(functions: dict, rounds: int) -> dict[str, float]:
    best = {name: float("inf") for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def naive_stream(tokenizer, ids: list[int]) -> str:
    given = 0
    pieces = []
    for end in range(1, len(ids) + 1):
        complete = tokenizer.decode(ids[:end]).rstrip("\ufffd")
        pieces.append(complete[given:])
        given = len(complete)
    text = tokenizer.decode(ids)
    return "".join(pieces) + text[given:]


def incremental_stream(tokenizer, ids: list[int]) -> str:
    decoder = tokenizer.incremental_decoder()
    return "".join(decoder.push(i) for i in ids) + decoder.flush()


def bench(tokenizer, chapters: list[str], rounds: int) -> None:
    lines = [line for chapter in chapters for line in chapter.splitlines() if line.strip()]
    characters = sum(map(len, chapters))
    print(f"{tokenizer.name} ({tokenizer.kind}, vocabulary {tokenizer.vocab_size:,})")
    for label, texts in (("chapters", chapters), ("lines", lines)):
        assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]
        times = best_times(
            {
                "one by one": lambda: [tokenizer.encode(t) for t in texts],
                "encode_batch": lambda: tokenizer.encode_batch(texts),
            },
            rounds,
        )
        ratio = times["one by one"] / times["encode_batch"]
        print(
            f"  encode {len(texts):>6,} {label:<8}  one by one {characters / times['one by one'] / 1e6:6.2f} M chars/s"
            f"   encode_batch {characters / times['encode_batch'] / 1e6:6.2f} M chars/s   ratio {ratio:.2f}"
        )
    ids = tokenizer.encode(max(chapters, key=len))
    assert incremental_stream(tokenizer, ids) == naive_stream(tokenizer, ids) == tokenizer.decode(ids)
    times = best_times(
        {"naive": lambda: naive_stream(tokenizer, ids), "incremental": lambda: incremental_stream(tokenizer, ids)},
        max(1, rounds // 2),
    )
    naive, incremental = (times[name] * 1e6 / len(ids) for name in ("naive", "incremental"))
    print(
        f"  stream {len(ids):,} ids one at a time  naive {naive:8.1f} us/id"
        f"   incremental {incremental:6.1f} us/id   ratio {naive / incremental:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "tokenizer-bench")
    args = parser.parse_args()

    sample = fetch_sample(args.dir / "sample")
    chapters = ["".join(doc.segments) for doc in read_documents([sample], "c4")]
    trained = train_sentencepiece(chapters, args.dir / "sanguo-8000", vocab_size=8000, force=True)
    print(f"{os.cpu_count()} cores; {len(chapters)} chapters, {sum(map(len, chapters)):,} characters")
    bench(load_tokenizer(trained), chapters, args.rounds)
    if os.environ.get("BABYLLAMA_CHATGLM_TOKENIZER"):
        bench(load_tokenizer(os.environ["BABYLLAMA_CHATGLM_TOKENIZER"]), chapters, args.rounds)


if __name__ == "__main__":
    main()
