"""Choosing each next token from a row of logits: `SamplingParams` and `choose_token` (repetition
penalty, temperature, top-k, top-p, one draw). Used by the generation loop (`generate`) and for
the sampling defaults the exports write down. See docs/ARCHITECTURE.md, "Generating text".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from babyllama.errors import UserError


@dataclass
class SamplingParams:
    """How to pick each next token. top_k 0 and top_p 1 switch those filters off."""

    max_new_tokens: int = 256
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise UserError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise UserError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise UserError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name, low, high in (("temperature", 0.0, math.inf), ("top_p", 0.0, 1.0),
                                ("repetition_penalty", 0.0, math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise UserError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        for name in ("top_p", "repetition_penalty"):
            if getattr(self, name) == 0.0:
                raise UserError(f"{name} must be above 0, got 0")


def apply_repetition_penalty(logits: np.ndarray, seen_ids, penalty: float) -> np.ndarray:
    """CTRL's penalty: logits of ids in `seen_ids` divided by `penalty` when positive, multiplied when not."""
    if penalty == 1.0 or len(seen_ids) == 0:
        return logits
    ids = np.unique(np.asarray(seen_ids, np.int64))
    out = logits.copy()
    values = out[ids]
    out[ids] = np.where(values > 0, values / penalty, values * penalty)
    return out


def filter_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Logits below the k-th largest become -inf (ties with it are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def filter_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the most likely tokens until their probabilities sum to at least p; the rest become -inf."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    probs = softmax(logits[order])
    # A token is kept when the tokens before it do not yet reach p: the top one always is.
    before = np.cumsum(probs) - probs
    out = np.full_like(logits, -np.inf)
    kept = order[before < p]
    out[kept] = logits[kept]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def choose_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, seen_ids=()) -> int:
    """The next token from one row of logits: penalty -> temperature -> top-k -> top-p -> draw."""
    # Greedy without a penalty needs no float64 copy: the arg max of the float32 row is the same.
    if params.temperature == 0.0 and (params.repetition_penalty == 1.0 or len(seen_ids) == 0):
        return int(np.argmax(logits))
    logits = apply_repetition_penalty(np.asarray(logits, np.float64), seen_ids, params.repetition_penalty)
    if params.temperature == 0.0:
        return int(np.argmax(logits))
    logits = filter_top_p(filter_top_k(logits / params.temperature, params.top_k), params.top_p)
    cumulative = np.cumsum(softmax(logits))
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), len(logits) - 1))
