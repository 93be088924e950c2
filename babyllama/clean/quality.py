"""A document's normal form (NFKC, whitespace runs as one space) and the quality filters: each
measures a share of the document and compares it with its limit in `CleanSettings`.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from babyllama.clean.settings import MAX_GRAM, CleanSettings

# Matched in the NFKC text with its whitespace, up to the first space or non-ASCII character (a URL
# in Chinese text runs straight into the next sentence, and NFKC makes its full-width commas ASCII).
URL = re.compile(r"(?:https?://|ftp://|www\.)[!-~]+", re.IGNORECASE)
RUN_CHARS = 4  # a run of this many of one character counts as repeated characters
MIX = np.uint64(0x9E3779B97F4A7C15)
# Odd multipliers of a gram's code points, one per position (fixed: hashes must not change between runs).
POSITION_MULTIPLIERS = np.random.default_rng(20261205).integers(1, 2**63, size=MAX_GRAM, dtype=np.uint64) | np.uint64(1)
FULL_WIDTH_FIRST, FULL_WIDTH_LAST, FULL_WIDTH_SHIFT = 0xFF01, 0xFF5E, 0xFEE0
IDEOGRAPHIC_SPACE = 0x3000
ELLIPSIS = "\u2026"


def _punctuation_table() -> np.ndarray:
    # The Basic Multilingual Plane's punctuation and symbol categories (P*, S*), looked up by code point.
    table = np.zeros(0x10000, dtype=bool)
    for code in range(0x10000):
        table[code] = unicodedata.category(chr(code))[0] in "PS"
    return table


PUNCTUATION = _punctuation_table()


def nfkc(text: str) -> str:
    """Unicode NFKC, the ellipsis (…) left as it is. Chinese text is NFKC but for its full-width
    ASCII forms (，！１Ａ) and ideographic spaces, which are mapped here as NFKC maps them, in
    numpy: twice as fast as unicodedata on such text, which then only checks the result."""
    points = code_points(text)
    full_width = (points >= FULL_WIDTH_FIRST) & (points <= FULL_WIDTH_LAST)
    space = points == IDEOGRAPHIC_SPACE
    if full_width.any() or space.any():
        points = points.copy()
        points[full_width] -= FULL_WIDTH_SHIFT
        points[space] = 0x20
        text = points.tobytes().decode("utf-32-le", "surrogatepass")
    if unicodedata.is_normalized("NFKC", text):
        return text
    # NFKC but for the ellipsis: it would make Chinese "……" six ASCII dots, a run of one character
    # and three times the punctuation, which removed dialogue from fiction as symbol spam.
    return ELLIPSIS.join(unicodedata.normalize("NFKC", part) for part in text.split(ELLIPSIS))


def normal_form(text: str) -> tuple[str, str]:
    """(NFKC text, the same with every run of whitespace as one space, stripped): the second is
    what exact duplicates compare."""
    normalised = nfkc(text)
    return normalised, " ".join(normalised.split())


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def gram_hashes(points: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of each run of `n` code points (one per start), in order."""
    count = len(points) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64)
    wide = points.astype(np.uint64)
    with np.errstate(over="ignore"):
        # A sum of products (a few whole-array steps per position), then mixed so every bit counts.
        hashes = wide[:count] * POSITION_MULTIPLIERS[0]
        for k in range(1, n):
            hashes += wide[k:k + count] * POSITION_MULTIPLIERS[k]
        hashes ^= hashes >> np.uint64(29)
        hashes *= MIX
        hashes ^= hashes >> np.uint64(32)
    return hashes


def is_cjk(points: np.ndarray) -> np.ndarray:
    return (
        ((points >= 0x4E00) & (points <= 0x9FFF))
        | ((points >= 0x3400) & (points <= 0x4DBF))
        | ((points >= 0xF900) & (points <= 0xFAFF))
        | ((points >= 0x20000) & (points <= 0x3FFFF))
    )


def cjk_share(points: np.ndarray) -> float:
    """CJK ideographs among the characters, a run of Latin letters counting as one: an English
    term in Chinese text says about what one or two ideographs would."""
    letters = ((points | 0x20) >= 0x61) & ((points | 0x20) <= 0x7A)
    word_starts = int(letters[0]) + int((letters[1:] & ~letters[:-1]).sum())
    return float(is_cjk(points).sum() / (len(points) - int(letters.sum()) + word_starts))


def repeated_line_share(normalised: str) -> float:
    lines = [line.strip() for line in normalised.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < 2:
        return 0.0
    return (len(lines) - len(set(lines))) / len(lines)


def ngram_hashes(points: np.ndarray, n: int, shorter: tuple[int, np.ndarray] | None = None) -> np.ndarray:
    """`gram_hashes(points, n)`, or as fast from the hashes of k-grams, `shorter` = (k, hashes)
    with n/2 <= k < n: each n-gram's from its first and its last k-gram (they cover it)."""
    if shorter is None or not n / 2 <= shorter[0] < n:
        return gram_hashes(points, n)
    k, hashes = shorter
    count = len(points) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64)
    with np.errstate(over="ignore"):
        combined = hashes[:count] * MIX + hashes[n - k:n - k + count]
        combined ^= combined >> np.uint64(31)
    return combined


def repeated_ngram_share(points: np.ndarray, n: int, shorter: tuple[int, np.ndarray] | None = None) -> float:
    """The share of characters covered by n-grams that occurred earlier in the document."""
    hashes = ngram_hashes(points, n, shorter)
    if len(hashes) < 2:
        return 0.0
    _, first = np.unique(hashes, return_index=True)
    repeated = np.ones(len(hashes), dtype=bool)
    repeated[first] = False
    if not repeated.any():
        return 0.0
    cover = np.zeros(len(points) + 1, dtype=np.int32)
    starts = np.flatnonzero(repeated)
    np.add.at(cover, starts, 1)
    np.add.at(cover, starts + n, -1)
    return float((np.cumsum(cover[:-1]) > 0).mean())


def repeated_char_share(points: np.ndarray) -> float:
    """The share of characters in runs of RUN_CHARS or more of one character."""
    if len(points) < RUN_CHARS:
        return 0.0
    change = np.flatnonzero(np.diff(points) != 0) + 1
    bounds = np.concatenate(([0], change, [len(points)]))
    runs = np.diff(bounds)
    return float(runs[runs >= RUN_CHARS].sum() / len(points))


def first_failed_rule(normalised: str, dense: str, points: np.ndarray, settings: CleanSettings,
                      shingles: np.ndarray | None = None) -> tuple[str, str] | None:
    """The first filter the document fails, as (rule, what was measured), or None. `normalised`:
    its NFKC text; `dense`, the same without whitespace, and `points`, dense's code points;
    `shingles`, its `gram_hashes` of `settings.shingle_chars`, if known."""
    size = len(dense)
    if size < settings.min_chars:
        return "too_short", f"{size:,} characters < {settings.min_chars:,}"
    if size > settings.max_chars:
        return "too_long", f"{size:,} characters > {settings.max_chars:,}"
    checks = (
        ("urls", lambda: sum(len(m) for m in URL.findall(normalised)) / size, settings.max_urls, "URL characters", False),
        ("digits", lambda: float(((points >= 0x30) & (points <= 0x39)).mean()), settings.max_digits, "digits",
         False),
        ("punctuation", lambda: float(PUNCTUATION[np.minimum(points, 0xFFFF)].mean()), settings.max_punctuation,
         "punctuation and symbols", False),
        ("repeated_chars", lambda: repeated_char_share(points), settings.max_repeated_chars,
         "characters in repeated runs", False),
        ("repeated_lines", lambda: repeated_line_share(normalised), settings.max_repeated_lines, "repeated lines",
         False),
        ("repeated_ngrams", lambda: repeated_ngram_share(
            points, settings.ngram_chars, None if shingles is None else (settings.shingle_chars, shingles)), settings.max_repeated_ngrams,
         f"characters in repeated {settings.ngram_chars}-grams", False),
        ("low_cjk", lambda: cjk_share(points), settings.min_cjk, "CJK share", True),
    )
    for rule, measure, limit, what, is_minimum in checks:
        if (limit <= 0.0) if is_minimum else (limit >= 1.0):
            continue
        share = measure()
        if (share < limit) if is_minimum else (share > limit):
            return rule, f"{what} {share:.2f} {'<' if is_minimum else '>'} {limit:g}"
    return None
