"""Duplicates among the documents the filters kept, with bounded memory: the exact hashes, then
each LSH band's keys, are grouped in passes, each pass taking the keys whose value falls in its
share (key mod passes) from every chunk, sorted so equal keys lie together, as many passes as
`memory_bytes` needs. Each document found with an earlier one is joined to it in a union-find
whose parent array is a file (`np.memmap`); a cluster's root is its first document in input
order, which is kept. Band matches count only when the whole signatures' estimate reaches the
threshold. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from babyllama.clean.work import ChunkStore

# Bytes a key entry takes while a pass sorts it (key, candidate index, sort order, group marks).
ENTRY_BYTES = 40
BLOCK = 1 << 20
LARGEST_CLUSTERS = 5


@dataclass
class DedupResult:
    exact: int = 0
    near: int = 0
    cluster_sizes: dict[int, int] = field(default_factory=dict)  # size -> clusters of that size
    largest: list[tuple[int, int]] = field(default_factory=list)  # (root candidate, size)
    examples: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)  # kind -> (dup, kept, similarity)


class UnionFind:
    """Union by the smaller root (the earlier document), parents in a file."""

    def __init__(self, path: Path, size: int):
        self.parent = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(max(size, 1),))
        for start in range(0, size, BLOCK):
            stop = min(size, start + BLOCK)
            self.parent[start:stop] = np.arange(start, stop)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:
            parent[x], x = root, int(parent[x])
        return root

    def union_pairs(self, pairs: np.ndarray) -> None:
        for a, b in pairs.tolist():
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self, start: int, stop: int) -> np.ndarray:
        roots = np.array(self.parent[start:stop])
        while True:
            up = np.asarray(self.parent[roots])
            if np.array_equal(up, roots):
                return roots
            roots = up


def passes_for(entries: int, memory_bytes: int) -> int:
    return max(1, math.ceil(entries * ENTRY_BYTES / max(memory_bytes, 1)))


def group_pairs(keys: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(first, other) for every index whose key equals that of an earlier (smaller) index."""
    order = np.lexsort((indices, keys))
    keys, indices = keys[order], indices[order]
    starts = np.concatenate(([True], keys[1:] != keys[:-1]))
    group_first = indices[np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))]
    later = ~starts
    return np.stack((group_first[later], indices[later]), axis=1)


def similarity(store: ChunkStore, pairs: np.ndarray) -> np.ndarray:
    """The signatures' estimate of each pair's Jaccard similarity."""
    if len(pairs) == 0:
        return np.empty(0)
    return (store.gather("signatures", pairs[:, 0]) == store.gather("signatures", pairs[:, 1])).mean(axis=1)


def find_duplicates(
    store: ChunkStore,
    parents_path: Path,
    bands: int,
    threshold: float,
    memory_bytes: int,
    examples: int,
    on_pass: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[UnionFind, DedupResult]:
    """Join each duplicate to the first document of its cluster; the counts, cluster sizes and
    the first `examples` duplicates of each kind."""
    total = store.candidates
    union = UnionFind(parents_path, total)
    passes = passes_for(total, memory_bytes)
    key_sets = [("exact", None)] + [("bands", band) for band in range(bands)]
    steps = len(key_sets) * passes
    for step, ((name, column), part) in enumerate((k, p) for k in key_sets for p in range(passes)):
        keys, indices = [], []
        for chunk in range(store.chunks):
            array = store.load(chunk, name)
            if len(array) == 0:
                continue
            chunk_keys = np.asarray(array[:, 0 if column is None else column])
            chosen = np.flatnonzero(chunk_keys % np.uint64(passes) == part) if passes > 1 else slice(None)
            keys.append(chunk_keys[chosen])
            indices.append(np.arange(store.offsets[chunk], store.offsets[chunk + 1])[chosen])
        if keys:
            keys, indices = np.concatenate(keys), np.concatenate(indices)
            pairs = group_pairs(keys, indices)
            if name == "exact":
                # Equal in the first 64 bits of their 128: the second half must agree too.
                pairs = pairs[np.all(store.gather("exact", pairs[:, 0]) == store.gather("exact", pairs[:, 1]), axis=1)]
            else:
                pairs = np.unique(pairs, axis=0) if len(pairs) else pairs
                pairs = pairs[similarity(store, pairs) >= threshold]
            union.union_pairs(pairs)
        on_pass(step + 1, steps)
    return union, summarise(store, union, examples)


def duplicate_codes(store: ChunkStore, union: UnionFind, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a chunk's kept documents: each one's root (the first of its cluster), and which are
    exact and which near duplicates of it (exact: the same normal form as the root's)."""
    start, stop = store.offsets[chunk], store.offsets[chunk + 1]
    roots = union.roots(start, stop)
    duplicate = roots != np.arange(start, stop)
    exact = np.zeros(stop - start, dtype=bool)
    if duplicate.any():
        rows = np.flatnonzero(duplicate)
        exact[rows] = np.all(store.gather("exact", rows + start) == store.gather("exact", roots[rows]), axis=1)
    return roots, duplicate & exact, duplicate & ~exact


def summarise(store: ChunkStore, union: UnionFind, examples: int) -> DedupResult:
    result = DedupResult(examples={"exact_duplicate": [], "near_duplicate": []})
    cluster_roots = []
    for chunk in range(store.chunks):
        roots, exact, near = duplicate_codes(store, union, chunk)
        result.exact += int(exact.sum())
        result.near += int(near.sum())
        cluster_roots.append(roots[exact | near])
        for kind, chosen in (("exact_duplicate", exact), ("near_duplicate", near)):
            room = examples - len(result.examples[kind])
            if room > 0 and chosen.any():
                rows = np.flatnonzero(chosen)[:room]
                pairs = np.stack((rows + store.offsets[chunk], roots[rows]), axis=1)
                result.examples[kind] += [
                    (int(a), int(b), round(float(s), 3)) for (a, b), s in zip(pairs, similarity(store, pairs))
                ]
    if cluster_roots:
        roots, sizes = np.unique(np.concatenate(cluster_roots), return_counts=True)
        sizes += 1
        size_values, clusters = np.unique(sizes, return_counts=True)
        result.cluster_sizes = {int(s): int(c) for s, c in zip(size_values, clusters)}
        largest = np.lexsort((roots, -sizes))[:LARGEST_CLUSTERS]
        result.largest = [(int(roots[i]), int(sizes[i])) for i in largest]
    return result
