"""Checkpoint folders of random tiny models written with numpy alone: for tests of what reads
checkpoints (jobs, the app), which need no MindSpore and should not wait for its import."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from babyllama.config import ModelConfig

# Small enough that export and eval take a blink; grouped-query attention as in test_generate's TINY.
SMALL = ModelConfig(vocab_size=512, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)


def weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    shapes = {"tok_embeddings.weight": (cfg.vocab_size, cfg.dim), "norm.weight": (cfg.dim,)}
    for i in range(cfg.n_layers):
        layer = {"attention_norm": (cfg.dim,), "attention.wq": (q, cfg.dim), "attention.wk": (kv, cfg.dim),
                 "attention.wv": (kv, cfg.dim), "attention.wo": (cfg.dim, q), "ffn_norm": (cfg.dim,),
                 "feed_forward.w1": (cfg.hidden_dim, cfg.dim), "feed_forward.w2": (cfg.dim, cfg.hidden_dim),
                 "feed_forward.w3": (cfg.hidden_dim, cfg.dim)}
        shapes.update({f"layers.{i}.{part}.weight": shape for part, shape in layer.items()})
    return shapes


def write_numpy_checkpoint(folder: Path, cfg: ModelConfig = SMALL, tokenizer: dict | None = None,
                           seed: int = 0) -> Path:
    """model.safetensors and config.json, what generate, eval and export read of a checkpoint."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    weights = {name: (np.ones(shape) if len(shape) == 1 else rng.normal(0, 0.02, shape)).astype(np.float32)
               for name, shape in weight_shapes(cfg).items()}
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    config = {"model": dataclasses.asdict(cfg), "train": {}, "tokenizer": tokenizer, "preset": None}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def write_run_with_checkpoint(run_path: Path, step: int, cfg: ModelConfig = SMALL, tokenizer: dict | None = None,
                              train: dict | None = None) -> Path:
    """A finished run directory whose latest checkpoint is a random model at `step`; returns the checkpoint."""
    from babyllama.runs import RunDir

    run = RunDir(run_path)
    run.create({"model": dataclasses.asdict(cfg), "train": train or {}})
    write_numpy_checkpoint(run.checkpoint_path(step), cfg, tokenizer)
    run.latest_path.write_text(f"{run.checkpoint_path(step).name}\n")
    run.write_status(state="finished", step=step, max_steps=step)
    return run.checkpoint_path(step)
