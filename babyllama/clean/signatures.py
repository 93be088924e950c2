"""What a worker computes for a chunk of documents: each one's first failed filter, or its
exact hash (xxhash of the normal form), MinHash signature (rensa, over character shingles) and
LSH band keys. See docs/ARCHITECTURE.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rensa
import xxhash

from babyllama.clean.quality import MIX, code_points, first_failed_rule, gram_hashes, normal_form
from babyllama.clean.settings import FILTER_RULES, CleanSettings

# Characters of a removed document's text an example keeps.
EXCERPT_CHARS = 160


@dataclass
class ChunkResult:
    """`status`: 0 for a document kept by the filters, else 1 + its rule's index in FILTER_RULES.
    The other arrays hold a row per kept document, in order."""

    status: np.ndarray  # uint8, a document each
    exact: np.ndarray  # uint64 (kept, 2): the 128-bit hash of the normal form
    signatures: np.ndarray  # uint32 (kept, num_perm)
    bands: np.ndarray  # uint64 (kept, bands)
    examples: list  # (index in the chunk, rule, measured, excerpt) of filtered documents


def excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def shingle_hashes(points: np.ndarray, shingle_chars: int, grams: np.ndarray | None = None) -> np.ndarray:
    """The distinct hashes of a document's shingles: its runs of `shingle_chars` characters,
    whitespace left out (`points`: the code points of its NFKC text without whitespace; `grams`,
    their `gram_hashes` if known). A shorter document is one shingle, padded."""
    if len(points) < shingle_chars:
        points = np.concatenate((points, np.zeros(shingle_chars - len(points), np.uint32)))
        grams = None
    return np.unique(gram_hashes(points, shingle_chars) if grams is None else grams)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit key for each band of each signature; equal bands give equal keys."""
    keys = np.empty((len(signatures), bands), np.uint64)
    wide = signatures.astype(np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            key = np.full(len(signatures), np.uint64(band + 1) * MIX)
            for column in range(band * rows, (band + 1) * rows):
                key = (key ^ wide[:, column]) * MIX
                key ^= key >> np.uint64(31)
            keys[:, band] = key
    return keys


def analyse_chunk(texts: list[str], settings: CleanSettings, examples_wanted: dict[str, int]) -> ChunkResult:
    """Filter, hash and sign a chunk's documents; the first `examples_wanted[rule]` documents each
    filter removes come back as examples."""
    status = np.zeros(len(texts), np.uint8)
    exact = []
    shingles = []
    examples = []
    wanted = dict(examples_wanted)
    for index, text in enumerate(texts):
        normalised, normal = normal_form(text)
        dense = normal.replace(" ", "")
        points = code_points(dense)
        grams = gram_hashes(points, settings.shingle_chars)
        failed = first_failed_rule(normalised, dense, points, settings, grams)
        if failed is not None:
            rule, measured = failed
            status[index] = 1 + FILTER_RULES.index(rule)
            if wanted.get(rule, 0) > 0:
                wanted[rule] -= 1
                examples.append((index, rule, measured, excerpt(text)))
            continue
        digest = xxhash.xxh3_128_digest(normal.encode("utf-8", "surrogatepass"))
        exact.append(np.frombuffer(digest, dtype=np.uint64))
        if settings.dedup:
            shingles.append(shingle_hashes(points, settings.shingle_chars, grams))
    bands, rows = settings.bands
    kept = len(exact)
    if kept and settings.dedup:
        offsets = np.cumsum([0] + [len(s) for s in shingles], dtype=np.uint64)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            np.concatenate(shingles), offsets, settings.num_perm, settings.seed
        )
        signatures = np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(kept, settings.num_perm)
    else:
        signatures = np.empty((kept, settings.num_perm if settings.dedup else 0), np.uint32)
    return ChunkResult(
        status=status,
        exact=np.array(exact, dtype=np.uint64).reshape(kept, 2),
        signatures=signatures,
        bands=band_keys(signatures, bands, rows) if settings.dedup else np.empty((kept, 0), np.uint64),
        examples=examples,
    )
