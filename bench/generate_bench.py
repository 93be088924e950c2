"""Greedy generation speed: our numpy KV-cache decoder against transformers' `generate` on torch CPU.

    python bench/generate_bench.py [--shapes tiny base] [--new-tokens 256] [--repeats 3] [--threads 2]

Same weights on both sides (a freshly initialised babyllama Transformer, converted to a
transformers LlamaForCausalLM in memory with model.hf_name and model.permute_rotary_rows,
the mapping the Hugging Face export uses), same 16-token prompt, greedy, batch 1, a fixed
number of new tokens (end-of-text never stops either side). Each side runs `repeats` times
in turns, after one warm-up each; the median tokens/s counts, measured end to end (prompt
pass included). Also prints our time to first token for a 64-token prompt, and for how
many leading tokens the two greedy continuations agree (random weights leave near-ties, so
a late divergence is rounding, an early one a wrong conversion).

`tiny` is the tiny preset at the ChatGLM2 vocabulary (64,794); its 256-token context holds
the prompt and 240 new tokens. `base` is the seed's shape: dim 512, 8 layers, 8 heads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

SHAPES = ("tiny", "base")
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


def to_transformers(model, weights: dict[str, np.ndarray]):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from babyllama.model import hf_name, permute_rotary_rows

    cfg = model.cfg
    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )
    hf = LlamaForCausalLM(hf_cfg)
    state = {}
    for name, value in weights.items():
        if name.endswith("attention.wq.weight"):
            value = permute_rotary_rows(value, cfg.n_heads)
        elif name.endswith("attention.wk.weight"):
            value = permute_rotary_rows(value, cfg.kv_heads)
        state[hf_name(name)] = torch.from_numpy(np.ascontiguousarray(value))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    return hf.eval()


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


def bench_shape(name: str, new_tokens: int, repeats: int) -> None:
    from babyllama.config import ModelConfig, preset
    from babyllama.generate import NumpyDecoder
    from babyllama.model import Transformer

    cfg = preset("tiny")[0] if name == "tiny" else ModelConfig(dim=512, n_layers=8, n_heads=8, max_seq_len=512)
    model = Transformer(cfg, seed=0)
    weights = {p.name: p.asnumpy() for p in model.trainable_params()}
    decoder = NumpyDecoder(cfg, weights)
    hf = to_transformers(model, weights)
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, cfg.vocab_size, PROMPT_TOKENS).tolist()
    new_tokens = min(new_tokens, cfg.max_seq_len - PROMPT_TOKENS)
    params = sum(w.size for w in weights.values())
    print(f"{name}: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, vocab {cfg.vocab_size}, "
          f"{params / 1e6:.1f} M parameters; {PROMPT_TOKENS}-token prompt, {new_tokens} new tokens, greedy")
    ours(decoder, prompt, 8)
    theirs(hf, prompt, 8)
    our_rates, their_rates = [], []
    for _ in range(repeats):
        rate, our_tokens = ours(decoder, prompt, new_tokens)
        our_rates.append(rate)
        rate, their_tokens = theirs(hf, prompt, new_tokens)
        their_rates.append(rate)
    agree = next((i for i, (a, b) in enumerate(zip(our_tokens, their_tokens)) if a != b), new_tokens)
    ttft_prompt = rng.integers(3, cfg.vocab_size, TTFT_PROMPT_TOKENS).tolist()
    from babyllama.generate import SamplingParams, generate

    ttfts = [generate(decoder, TokensOnly(ttft_prompt), "", SamplingParams(max_new_tokens=1, temperature=0.0)).ttft_s
             for _ in range(5)]
    ours_median, theirs_median = statistics.median(our_rates), statistics.median(their_rates)
    print(f"  ours (numpy):             {ours_median:8.1f} tokens/s  (runs: {', '.join(f'{r:.1f}' for r in our_rates)})")
    print(f"  transformers generate:    {theirs_median:8.1f} tokens/s  (runs: {', '.join(f'{r:.1f}' for r in their_rates)})")
    print(f"  ratio ours / transformers: {ours_median / theirs_median:.2f}x")
    print(f"  time to first token, {TTFT_PROMPT_TOKENS}-token prompt: {statistics.median(ttfts) * 1000:.1f} ms (median of 5)")
    print(f"  greedy continuations agree on the first {agree} of {new_tokens} tokens")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (numpy's BLAS uses the machine's)")
    args = parser.parse_args()
    os.environ.setdefault("GLOG_v", "3")
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; numpy {np.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for name in args.shapes:
        bench_shape(name, args.new_tokens, args.repeats)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
