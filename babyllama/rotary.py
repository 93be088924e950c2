"""The rotary position tables, in numpy: one source for the MindSpore model (babyllama.model),
the numpy decoder (babyllama.decode) and llama2.c's model.bin (babyllama.export)."""

from __future__ import annotations

import numpy as np

from babyllama.config import ModelConfig


def rotary_tables(cfg: ModelConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of position * frequency, float32 (length, head_dim / 2): column j rotates the
    pair (x2j, x2j+1) of each head at each position."""
    half = cfg.head_dim // 2
    freqs = 1.0 / (cfg.rope_theta ** (np.arange(half, dtype=np.float64) * 2 / cfg.head_dim))
    angles = np.outer(np.arange(length, dtype=np.float64), freqs)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
