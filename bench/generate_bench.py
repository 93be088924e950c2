"""Greedy generation speed: our decoders against transformers' `generate` on torch CPU.

    python bench/generate_bench.py [--shapes tiny base] [--backends numpy mindspore]
                                   [--new-tokens 256] [--repeats 3] [--threads 2]

Same weights on every side: a freshly initialised babyllama Transformer, written out by
`babyllama export --format hf`'s own function (export.export_hf) and loaded back with
`LlamaForCausalLM.from_pretrained`, the way a user takes our model to transformers. Same
16-token prompt, greedy, batch 1, a fixed number of new tokens (end-of-text never stops
any side). Each side runs `repeats` times in turns after one warm-up each (the MindSpore
backend's warm-up compiles its graphs); the median tokens/s counts, measured end to end
(prompt pass included). Then time to first token for a 64-token prompt (median of 5), and
for how many leading tokens the greedy continuations agree (random weights leave
near-ties, so a late divergence is rounding, an early one a wrong conversion).

Threads: torch gets `--threads` (torch.set_num_threads), and so does numpy's OpenBLAS
(OPENBLAS_NUM_THREADS, set before numpy loads); MindSpore keeps its default of 2 on this
machine. torch is imported before MindSpore so that the OMP_WAIT_POLICY babyllama.model sets
for MindSpore's OpenMP does not reach torch's, which loads its own.

`tiny` is the tiny preset (vocabulary 64,794); its context is raised from 256 to hold the
prompt and the new tokens (the weights do not depend on it). `base` is the seed's shape:
dim 512, 8 layers, 8 heads, 512-token context, vocabulary 64,794. The machine may be
shared: compare the ratios within one run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SHAPES = ("tiny", "base")
BACKENDS = ("numpy", "mindspore")
PROMPT_TOKENS = 16
TTFT_PROMPT_TOKENS = 64


class TokensOnly:
    """Tokenizer stand-in: the prompt is ids already, no id ends the text, text is not decoded."""

    eos_id = -1

    def __init__(self, prompt_ids):
        self.prompt_ids = list(prompt_ids)

    def encode(self, text):
        return self.prompt_ids

    def incremental_decoder(self):
        return self

    def push(self, token):
        return ""

    def flush(self):
        return ""


def shape_config(name: str, new_tokens: int):
    from babyllama.config import ModelConfig, preset

    cfg = preset("tiny")[0] if name == "tiny" else ModelConfig(dim=512, n_layers=8, n_heads=8, max_seq_len=512)
    return dataclasses.replace(cfg, max_seq_len=max(cfg.max_seq_len, PROMPT_TOKENS + new_tokens))


def exported_to_transformers(loaded, folder: Path):
    """`loaded` through export_hf into `folder`, then loaded by transformers as any user would."""
    import torch
    from transformers import LlamaForCausalLM

    from babyllama.export import export_hf

    export_hf(loaded, folder, warn=lambda message: None)
    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def ours(decoder, prompt_ids, new_tokens):
    from babyllama.generate import SamplingParams, generate

    result = generate(decoder, TokensOnly(prompt_ids), "", SamplingParams(max_new_tokens=new_tokens, temperature=0.0))
    assert len(result.token_ids) == new_tokens
    return result.tokens_per_s, result.token_ids


def theirs(hf, prompt_ids, new_tokens):
    import torch

    ids = torch.tensor([prompt_ids])
    began = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    seconds = time.perf_counter() - began
    tokens = out[0, len(prompt_ids):].tolist()
    assert len(tokens) == new_tokens
    return new_tokens / seconds, tokens


def our_ttft(decoder, prompt_ids) -> float:
    from babyllama.generate import SamplingParams, generate

    return generate(decoder, TokensOnly(prompt_ids), "", SamplingParams(max_new_tokens=1, temperature=0.0)).ttft_s


def their_ttft(hf, prompt_ids) -> float:
    import torch

    ids = torch.tensor([prompt_ids])
    began = time.perf_counter()
    with torch.inference_mode():
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
    return time.perf_counter() - began


def agreement(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def runs(rates) -> str:
    return ", ".join(f"{r:.1f}" for r in rates)


def bench_shape(name: str, backends, new_tokens: int, repeats: int) -> None:
    import numpy as np

    from babyllama.checkpoint import LoadedModel
    from babyllama.decode import make_decoder
    from babyllama.model import Transformer

    cfg = shape_config(name, new_tokens)
    model = Transformer(cfg, seed=0)
    weights = {p.name: p.asnumpy() for p in model.trainable_params()}
    del model
    loaded = LoadedModel(cfg, weights, Path(f"bench_{name}"), {})
    with tempfile.TemporaryDirectory() as temp:
        hf = exported_to_transformers(loaded, Path(temp) / "hf")
    decoders = {backend: make_decoder(loaded, backend) for backend in backends}
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, cfg.vocab_size, PROMPT_TOKENS).tolist()
    ttft_prompt = rng.integers(3, cfg.vocab_size, TTFT_PROMPT_TOKENS).tolist()
    params = sum(w.size for w in weights.values())
    print(f"{name}: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, vocab {cfg.vocab_size:,}, "
          f"{params / 1e6:.1f} M parameters; {PROMPT_TOKENS}-token prompt, {new_tokens} new tokens, greedy",
          flush=True)
    for decoder in decoders.values():
        ours(decoder, prompt, 8)
    theirs(hf, prompt, 8)
    our_rates = {backend: [] for backend in backends}
    their_rates = []
    continuations = {}
    for _ in range(repeats):
        for backend, decoder in decoders.items():
            rate, continuations[backend] = ours(decoder, prompt, new_tokens)
            our_rates[backend].append(rate)
        rate, continuations["transformers"] = theirs(hf, prompt, new_tokens)
        their_rates.append(rate)
    theirs_median = statistics.median(their_rates)
    print(f"  transformers generate:  {theirs_median:8.1f} tokens/s  (runs: {runs(their_rates)})")
    for backend in backends:
        median = statistics.median(our_rates[backend])
        print(f"  ours ({backend + '):':11} {median:8.1f} tokens/s  (runs: {runs(our_rates[backend])})  "
              f"ratio ours / transformers: {median / theirs_median:.2f}x")
    their_first = statistics.median(their_ttft(hf, ttft_prompt) for _ in range(5))
    print(f"  time to first token, {TTFT_PROMPT_TOKENS}-token prompt (median of 5): "
          f"transformers {their_first * 1000:.1f} ms", end="")
    for backend, decoder in decoders.items():
        print(f", ours ({backend}) {statistics.median(our_ttft(decoder, ttft_prompt) for _ in range(5)) * 1000:.1f} ms",
              end="")
    print()
    for backend in backends:
        print(f"  greedy continuations, ours ({backend}) and transformers, agree on the first "
              f"{agreement(continuations[backend], continuations['transformers'])} of {new_tokens} tokens")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch's threads and numpy's BLAS threads (default 2)")
    args = parser.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("GLOG_v", "3")
    import numpy as np
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.ones(64, 64) @ torch.ones(64, 64)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__} "
          f"(OpenBLAS, {os.environ['OPENBLAS_NUM_THREADS']} threads); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for name in args.shapes:
        bench_shape(name, args.backends, args.new_tokens, args.repeats)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
