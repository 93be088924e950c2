"""Batches from token files: babyllama.data against the seed's load-everything approach.

Writes a token file (default 1e8 uint16 ids, 200 MB) in a temporary folder, then times
  - opening: TokenDataset + BatchSampler against reading the whole file into memory and
    building a shuffled order of its windows (the seed's np.fromfile / concatenate / reshape,
    plus the permutation array a shuffled epoch needs);
  - one batch of 32 x (seq_len + 1): BatchSampler.batch (memmap + Feistel order) against
    fancy-indexing the in-memory array with the permutation.
The file was just written, so both read from the page cache: this compares the code, not the disk.

    python bench/data_bench.py [--tokens 100000000] [--seq-len 512] [--batch 32] [--steps 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from babyllama.data import BatchSampler, TokenDataset


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def per_call_seconds(fn, calls: int) -> float:
    """Best of three passes over `calls` calls (the machine is shared: the minimum is the signal)."""
    return best_of(3, lambda: [fn(i) for i in range(calls)]) / calls


def load_everything(paths: list[Path], seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in paths])
    rows = data[: len(data) // (seq_len + 1) * (seq_len + 1)].reshape(-1, seq_len + 1)
    return rows, np.random.default_rng(seed).permutation(len(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=float, default=1e8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    n_tokens, seq_len, batch = int(args.tokens), args.seq_len, args.batch

    with tempfile.TemporaryDirectory(prefix="babyllama-data-bench-") as tmp:
        path = Path(tmp) / "corpus.bin"
        rng = np.random.default_rng(0)
        with open(path, "wb") as f:
            for start in range(0, n_tokens, 1 << 24):
                rng.integers(0, 64_794, min(1 << 24, n_tokens - start), dtype=np.uint16).tofile(f)
        print(f"token file: {n_tokens:,} uint16 ids ({path.stat().st_size / 2**20:,.0f} MiB), "
              f"seq_len {seq_len}, batch {batch}")

        def open_ours():
            return BatchSampler(TokenDataset(path, seq_len), batch_size=batch, seed=0)

        open_ours_s = best_of(5, open_ours)
        sampler = open_ours()
        sampler.batch(0)
        ours_batch_s = per_call_seconds(sampler.batch, args.steps)

        rss_before = rss_mib()
        open_seed_s = best_of(3, lambda: load_everything([path], seq_len, seed=0))
        rows, order = load_everything([path], seq_len, seed=0)
        seed_mib = rss_mib() - rss_before

        def seed_batch(step: int):
            window = rows[order[step * batch : (step + 1) * batch]]
            return window[:, :-1].astype(np.int32), window[:, 1:].astype(np.int32)

        seed_batch_s = per_call_seconds(seed_batch, args.steps)
        x_ours, _ = sampler.batch(1)
        x_seed, _ = seed_batch(1)
        assert x_ours.shape == x_seed.shape and x_ours.dtype == x_seed.dtype

    print(f"open:  babyllama.data {open_ours_s * 1e3:8.2f} ms   load everything {open_seed_s * 1e3:8.1f} ms   "
          f"ratio {open_seed_s / open_ours_s:,.0f}x faster (load everything holds {seed_mib:,.0f} MiB more)")
    print(f"batch: babyllama.data {ours_batch_s * 1e6:8.1f} us   in-memory index  {seed_batch_s * 1e6:8.1f} us   "
          f"ratio {ours_batch_s / seed_batch_s:.2f} (ours / in-memory)")
    print(f"       at 124M windows (the seed's 63.4e9-token corpus at seq 512) a permutation array alone "
          f"is {124e6 * 8 / 2**30:.1f} GiB; the Feistel order needs none")


if __name__ == "__main__":
    main()
