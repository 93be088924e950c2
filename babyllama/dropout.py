"""`SeededDropout`: dropout whose masks are a hash of a counter saved with the weights, so resume is exact.

`use_seeded_dropout` swaps a model's nn.Dropout layers for it (counters named "<site>.draws").
The hash and its checks: docs/ARCHITECTURE.md, "Training"; why MindSpore's own dropout cannot
resume: docs/MINDSPORE.md, "Dropout".
"""

from __future__ import annotations

import hashlib

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

GOLDEN = 0x9E3779B1
MURMUR_1 = 0x85EBCA6B
MURMUR_2 = 0xC2B2AE35
DRAWS_SUFFIX = ".draws"


def as_int32(value: int) -> int:
    """The int32 whose bits are `value` modulo 2**32 (MindSpore's int32 arithmetic wraps)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _logical_shift_right(h, bits: int):
    return ops.bitwise_and(ops.bitwise_right_shift(h, bits), (1 << (32 - bits)) - 1)


def fmix32(h):
    """murmur3's 32-bit finaliser on an int32 tensor (a logical shift emulated with a mask)."""
    h = ops.bitwise_xor(h, _logical_shift_right(h, 16)) * as_int32(MURMUR_1)
    h = ops.bitwise_xor(h, _logical_shift_right(h, 13)) * as_int32(MURMUR_2)
    return ops.bitwise_xor(h, _logical_shift_right(h, 16))


class SeededDropout(nn.Cell):
    """Inverted dropout (kept values scaled by 1 / (1 - p)) with masks from a stored counter."""

    def __init__(self, p: float, stream: int):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.scale = 1.0 / (1.0 - p)
        self.threshold = as_int32(round((2 * p - 1) * 2**31))
        self.stream = as_int32(stream)
        self.draws = Parameter(Tensor(0, ms.int32), name="draws", requires_grad=False)

    def construct(self, x):
        if not self.training or self.p == 0:
            return x
        key = fmix32(self.draws * as_int32(GOLDEN) + self.stream)
        ops.assign_add(self.draws, ops.ones_like(self.draws))
        cols = x.shape[-1]
        rows = x.size // cols
        row_keys = fmix32(ops.arange(0, rows, dtype=ms.int32) * 7 + key)
        col_keys = fmix32(ops.arange(0, cols, dtype=ms.int32) * 3 + (key + 11))
        w = row_keys.reshape(-1, 1) + col_keys.reshape(1, -1)
        bits = w * (w + fmix32(key + 5))
        keep = ops.cast(bits >= self.threshold, x.dtype).reshape(x.shape)
        return x * ops.stop_gradient(keep * self.scale)


def site_stream(seed: int, rank: int, site: str) -> int:
    """A 32-bit stream id for one dropout site of one rank."""
    digest = hashlib.sha256(f"babyllama.dropout/{seed}/{rank}/{site}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def use_seeded_dropout(model: nn.Cell, seed: int, rank: int = 0) -> list[str]:
    """Replace every nn.Dropout inside `model` by a SeededDropout; returns the sites' names.

    Call before the model is compiled (before building a TrainStep on it).
    """
    sites = [(name, cell) for name, cell in model.cells_and_names() if isinstance(cell, nn.Dropout)]
    for name, cell in sites:
        parent_name, _, attribute = name.rpartition(".")
        parent = model if not parent_name else dict(model.cells_and_names())[parent_name]
        seeded = SeededDropout(1.0 - cell.keep_prob if cell.p is None else cell.p, site_stream(seed, rank, name))
        setattr(parent, attribute, seeded)
        seeded.draws.name = name + DRAWS_SUFFIX
    return [name for name, _ in sites]
