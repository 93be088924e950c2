"""Training speed and memory: our MindSpore step against a PyTorch eager reference, in one run.

    python bench/train_bench.py [--vocab 8000 64794] [--steps 10] [--dim 288 --layers 6 --heads 6 --seq 256 --batch 8]

The same Llama (llama2.c's stories15M shape by default), the same random token batches,
fp32, two threads each, and for both the OpenMP setting `babyllama train` runs with (idle
threads sleep; libgomp's default spinning doubled our step time when the cores were
shared). Every measurement runs in its own subprocess so that its peak RSS (getrusage
ru_maxrss: import, compile and training) is its own. Per vocabulary it prints tokens/s,
wall and CPU ms per step (CPU time is less skewed by other processes), peak RSS,
first-step time (graph compile for MindSpore), the ratios ours/PyTorch, and the model
FLOPs utilisation against this machine's measured fp32 matmul peak (torch matmul of
2048x2048 matrices, same threads). The sides alternate for `--rounds` rounds and each
keeps its fastest; the load average before and after is printed because other processes
on the machine skew every number. MindSpore's fused kernels are cached in a directory of
the bench's own, empty at each vocabulary's start: the first round's first step compiles
them, as a user's first run of a shape does, and later rounds find them, as later runs
do; the first step of every round is printed.

The PyTorch reference is written here, not imported: llama2.c's model (interleaved-pair
rotary, SwiGLU, tied embedding, scaled_dot_product_attention with is_causal),
F.cross_entropy, clip_grad_norm_, torch.optim.AdamW with the same groups. torch (2.13.0,
CPU) is needed only for this bench: `pip install torch==2.13.0`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from babyllama.config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = 2


def batches(vocab: int, batch: int, seq: int, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        window = rng.integers(0, vocab, (batch, seq + 1), dtype=np.int64).astype(np.int32)
        out.append((window[:, :-1].copy(), window[:, 1:].copy()))
    return out


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_steps(run_step, data, warmup: int) -> dict:
    started = time.perf_counter()
    run_step(*data[0])
    first = time.perf_counter() - started
    for x, y in data[1:warmup]:
        run_step(x, y)
    timed = data[warmup:]
    started, cpu_started = time.perf_counter(), time.process_time()
    losses = [run_step(x, y) for x, y in timed]
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    tokens = sum(x.size for x, _ in timed)
    return {"first_step_s": first, "tokens_per_s": tokens / elapsed, "step_ms": 1000 * elapsed / len(timed),
            "cpu_ms": 1000 * cpu / len(timed), "last_loss": losses[-1], "peak_rss": peak_rss_bytes()}


def flops_per_token(model: ModelConfig) -> int:
    """Training FLOPs per token (forward + backward): 6 * matmul weights + causal attention.

    The PaLM estimate (6N + 12·L·d·T, with N excluding the embedding gather but including
    the tied output matmul), with the attention term halved for the causal mask's half
    of the score matrix that does useful work.
    """
    from babyllama.config import non_embedding_param_count

    n_matmul = non_embedding_param_count(model) + model.vocab_size * model.dim
    return 6 * n_matmul + 6 * model.n_layers * model.dim * model.max_seq_len


# ---------------------------------------------------------------------------------------
# Ours


def run_mindspore(args) -> dict:
    sys.path.insert(0, ROOT)
    from babyllama.config import ModelConfig, TrainConfig
    from babyllama.step import TrainStep, setup_runtime

    model_cfg = ModelConfig(vocab_size=args.vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                            max_seq_len=args.seq)
    train_cfg = TrainConfig(batch_size=args.batch, learning_rate=3e-4, warmup_iters=0, max_steps=1000,
                            threads=THREADS, dtype="float32")
    setup_runtime(train_cfg)
    trainer = TrainStep(model_cfg, train_cfg)
    data = batches(args.vocab, args.batch, args.seq, args.warmup + args.steps)
    return time_steps(lambda x, y: trainer.step(x, y, 3e-4)[0], data, args.warmup)


# ---------------------------------------------------------------------------------------
# PyTorch reference


def run_torch(args) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    dim, n_heads, seq = args.dim, args.heads, args.seq
    head_dim = dim // n_heads
    hidden = 32 * math.ceil(int(8 * dim / 3) / 32)

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight

    def rotate(x, cos, sin):
        real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
        return torch.stack((real * cos - imag * sin, real * sin + imag * cos), -1).flatten(3)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_norm, self.ffn_norm = RMSNorm(), RMSNorm()
            self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
            self.w1 = nn.Linear(dim, hidden, bias=False)
            self.w2 = nn.Linear(hidden, dim, bias=False)
            self.w3 = nn.Linear(dim, hidden, bias=False)

        def forward(self, x, cos, sin):
            b, t, _ = x.shape
            h = self.attention_norm(x)
            q = rotate(self.wq(h).view(b, t, n_heads, head_dim), cos, sin).transpose(1, 2)
            k = rotate(self.wk(h).view(b, t, n_heads, head_dim), cos, sin).transpose(1, 2)
            v = self.wv(h).view(b, t, n_heads, head_dim).transpose(1, 2)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.wo(att.transpose(1, 2).reshape(b, t, dim))
            h = self.ffn_norm(x)
            return x + self.w2(F.silu(self.w1(h)) * self.w3(h))

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(args.vocab, dim)
            self.layers = nn.ModuleList(Block() for _ in range(args.layers))
            self.norm = RMSNorm()
            self.output = nn.Linear(dim, args.vocab, bias=False)
            self.output.weight = self.tok_embeddings.weight
            freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
            angles = torch.outer(torch.arange(seq).float(), freqs)
            self.register_buffer("cos", angles.cos()[:, None, :], persistent=False)
            self.register_buffer("sin", angles.sin()[:, None, :], persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * args.layers) if name.endswith(("w3.weight", "wo.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, tokens, targets):
            x = self.tok_embeddings(tokens)
            for layer in self.layers:
                x = layer(x, self.cos, self.sin)
            logits = self.output(self.norm(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    model = Llama()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=3e-4, betas=(0.9, 0.95))

    def step(x, y):
        loss = model(torch.from_numpy(x).long(), torch.from_numpy(y).long())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    data = batches(args.vocab, args.batch, args.seq, args.warmup + args.steps)
    return time_steps(step, data, args.warmup)


def run_matmul_peak(args) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - started))
    return {"flops_per_s": best}


# ---------------------------------------------------------------------------------------
# Driver


def in_subprocess(worker: str, args, vocab: int | None = None, kernel_cache: str | None = None) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--dim", str(args.dim), "--layers", str(args.layers),
            "--heads", str(args.heads), "--seq", str(args.seq), "--batch", str(args.batch)]
    if vocab is not None:
        argv += ["--vocab", str(vocab)]
    from babyllama.train import MINDSPORE_ENVIRONMENT

    env = dict(os.environ, GLOG_v="3", OMP_NUM_THREADS=str(THREADS), **MINDSPORE_ENVIRONMENT)
    if kernel_cache is not None:
        env["XDG_CACHE_HOME"] = kernel_cache
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{worker} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[8000, 64794])
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile included)")
    parser.add_argument("--dim", type=int, default=288)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate the two sides this many times and keep each side's fastest round "
                             "(other processes on the machine slow single rounds down)")
    parser.add_argument("--only", choices=["mindspore", "torch"], help="run one side only (no ratios)")
    parser.add_argument("--worker", choices=["mindspore", "torch", "matmul"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.vocab = args.vocab[0]
        run = {"mindspore": run_mindspore, "torch": run_torch, "matmul": run_matmul_peak}[args.worker]
        print(json.dumps(run(args)))
        return 0

    sys.path.insert(0, ROOT)
    from babyllama.config import ModelConfig, param_count

    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} cores, {THREADS} threads each")
    peak = in_subprocess("matmul", args)["flops_per_s"]
    print(f"matmul peak: {peak / 1e9:.0f} GFLOP/s (fp32, {THREADS} threads)")
    sides = ["mindspore", "torch"] if not args.only else [args.only]
    for vocab in args.vocab:
        kernel_cache = tempfile.mkdtemp(prefix="train-bench-kernels-")
        atexit.register(shutil.rmtree, kernel_cache, True)
        cfg = ModelConfig(vocab_size=vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                          max_seq_len=args.seq)
        rounds = [{side: in_subprocess(side, args, vocab, kernel_cache) for side in sides} for _ in range(args.rounds)]
        results = {side: max((r[side] for r in rounds), key=lambda r: r["tokens_per_s"]) for side in sides}
        print(f"\nvocab {vocab:,}: {param_count(cfg) / 1e6:.1f} M parameters, dim {args.dim}, {args.layers} layers, "
              f"seq {args.seq}, batch {args.batch}")
        print(f"  {'':10} {'tokens/s':>9} {'step ms':>8} {'cpu ms':>7} {'peak RSS':>9} {'1st step':>9} {'MFU':>6} "
              f"{'loss':>7}")
        for side, r in results.items():
            mfu = flops_per_token(cfg) * r["tokens_per_s"] / peak
            print(f"  {side:10} {r['tokens_per_s']:9.0f} {r['step_ms']:8.0f} {r['cpu_ms']:7.0f} "
                  f"{r['peak_rss'] / 2**30:7.2f} G {r['first_step_s']:8.1f}s {100 * mfu:5.1f}% {r['last_loss']:7.3f}")
        print("  first step by round: " + "; ".join(
            f"{side} " + ", ".join(f"{r[side]['first_step_s']:.1f}s" for r in rounds) for side in sides))
        if len(results) == 2:
            ours, ref = results["mindspore"], results["torch"]
            print(f"  ratio ours/torch: speed {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x, "
                  f"peak memory {ours['peak_rss'] / ref['peak_rss']:.2f}x")
    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
