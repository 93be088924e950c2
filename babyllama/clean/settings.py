"""What `babyllama clean` may change: each quality filter's limit, the duplicate threshold and
how documents are hashed; the rules a removed document is counted under. See docs/ARCHITECTURE.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from babyllama.errors import UserError

MAX_GRAM = 64  # the longest n-gram or shingle, in characters

# Every reason a document is removed, in the order they are tried: the first that applies counts.
FILTER_RULES = (
    "too_short",
    "too_long",
    "urls",
    "digits",
    "punctuation",
    "repeated_chars",
    "repeated_lines",
    "repeated_ngrams",
    "low_cjk",
)
DUPLICATE_RULES = ("exact_duplicate", "near_duplicate")
RULES = FILTER_RULES + DUPLICATE_RULES

RULE_HELP = {
    "too_short": "fewer characters (whitespace left out) than --min-chars",
    "too_long": "more characters than --max-chars",
    "low_cjk": "a share of CJK ideographs (a Latin word counting as one character) below --min-cjk",
    "repeated_lines": "a share of lines repeating an earlier line above --max-repeated-lines",
    "repeated_ngrams": "a share of characters in repeated --ngram-chars n-grams above --max-repeated-ngrams",
    "repeated_chars": "a share of characters in runs of 4 or more of one character above --max-repeated-chars",
    "urls": "a share of characters in URLs above --max-urls",
    "digits": "a share of digits above --max-digits",
    "punctuation": "a share of punctuation and symbols above --max-punctuation",
    "exact_duplicate": "the same text as an earlier document after NFKC and whitespace normalisation",
    "near_duplicate": "an estimated Jaccard similarity of its character shingles to an earlier document "
    "of at least --threshold",
}

# A share limit at 1 (or a minimum at 0) turns its filter off.
SHARE_FIELDS = ("min_cjk", "max_repeated_lines", "max_repeated_ngrams", "max_repeated_chars", "max_urls",
                "max_digits", "max_punctuation", "threshold")


@dataclass(frozen=True)
class CleanSettings:
    min_chars: int = 30
    max_chars: int = 500_000
    min_cjk: float = 0.3
    max_repeated_lines: float = 0.3
    ngram_chars: int = 10
    max_repeated_ngrams: float = 0.3
    max_repeated_chars: float = 0.2
    max_urls: float = 0.3
    max_digits: float = 0.5
    max_punctuation: float = 0.4
    dedup: bool = True
    threshold: float = 0.8  # estimated Jaccard similarity of character shingles
    shingle_chars: int = 5
    num_perm: int = 128
    seed: int = 42

    def validate(self) -> CleanSettings:
        for name in SHARE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"--{flag(name)} {value} must be between 0 and 1")
        if self.threshold <= 0:
            raise UserError("--threshold must be above 0")
        for name, low, high in (("min_chars", 0, None), ("max_chars", 1, None), ("ngram_chars", 2, MAX_GRAM),
                                ("shingle_chars", 1, MAX_GRAM), ("num_perm", 16, None)):
            value = getattr(self, name)
            if value < low or (high is not None and value > high):
                raise UserError(f"--{flag(name)} {value} must be at least {low}"
                                + (f" and at most {high}" if high is not None else ""))
        if self.max_chars < self.min_chars:
            raise UserError(f"--max-chars {self.max_chars} is below --min-chars {self.min_chars}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def bands(self) -> tuple[int, int]:
        return lsh_bands(self.threshold, self.num_perm)


def flag(field: str) -> str:
    return field.replace("_", "-")


# The chance that a pair at exactly the threshold shares a band: the rest of the pairs the
# bands find are checked against the threshold on their whole signatures, so bands are chosen
# for recall and the check gives the precision.
BAND_RECALL_AT_THRESHOLD = 0.95


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the most rows per band (the fewest pairs to check) for which a pair at
    `threshold` still shares at least one band with probability BAND_RECALL_AT_THRESHOLD."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= BAND_RECALL_AT_THRESHOLD:
            best = (bands, rows)
    return best
