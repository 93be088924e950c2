"""Greedy generation speed: our decoders against llama.cpp and transformers' `generate` on the CPU.

    python bench/generate_bench.py [--shapes tiny base] [--backends numpy mindspore]
                                   [--gguf-types f32 f16 q8_0] [--new-tokens 256] [--repeats 3] [--threads 2]

llama.cpp (llama-cpp-python) runs the same weights as GGUF files written by our own exporter
(export_gguf.gguf_tensors and write_gguf) with a stand-in vocabulary of one piece per id, in each
of `--gguf-types`; its greedy sampler (top_k 1) picks the tokens. The "ours (llamacpp TYPE)" rows
run the same files through `--backend llamacpp` (`llamacpp.LlamaCppDecoder`: llama.cpp's logits,
our sampler). Where llama_cpp cannot be imported, its rows say so and the rest runs. For every side the table gives tokens/s, time to
first token, the resident memory loading it added, and the bandwidth it reached: the bytes of
weights one token reads (every matrix once, the tied embedding once as the output layer) times
tokens/s.

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


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_bench_gguf(loaded, path: Path, type_name: str) -> int:
    """`loaded` as a GGUF of `type_name` at `path`; returns the bytes of weights a token reads."""
    from babyllama.export_gguf import gguf_tensors, ids_only_vocabulary, write_gguf

    tensors, _ = gguf_tensors(loaded.cfg, loaded.weights, type_name)
    write_gguf(path, "bench", loaded.cfg, tensors, ids_only_vocabulary(loaded.cfg.vocab_size), type_name, None, None)
    return sum(data.nbytes for _, data, _ in tensors)


class LlamaCpp:
    """llama.cpp through llama-cpp-python on one GGUF: greedy, batch 1."""

    def __init__(self, path: Path, cfg, threads: int):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=cfg.max_seq_len, n_threads=threads,
                                   n_threads_batch=threads, n_batch=TTFT_PROMPT_TOKENS, verbose=False)

    def run(self, prompt_ids, new_tokens):
        self.llm.reset()
        tokens = []
        began = time.perf_counter()
        for token in self.llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, reset=True):
            tokens.append(token)
            if len(tokens) == new_tokens:
                break
        return new_tokens / (time.perf_counter() - began), tokens

    def ttft(self, prompt_ids) -> float:
        self.llm.reset()
        began = time.perf_counter()
        next(self.llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, reset=True))
        return time.perf_counter() - began


def bench_shape(name: str, backends, gguf_types, new_tokens: int, repeats: int, threads: int) -> None:
    import numpy as np

    from babyllama.checkpoint import LoadedModel
    from babyllama.decode import make_decoder
    from babyllama.llamacpp import LlamaCppDecoder
    from babyllama.model import Transformer

    cfg = shape_config(name, new_tokens)
    model = Transformer(cfg, seed=0)
    weights = {p.name: p.asnumpy() for p in model.trainable_params()}
    del model
    loaded = LoadedModel(cfg, weights, Path(f"bench_{name}"), {})
    params = sum(w.size for w in weights.values())
    print(f"{name}: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, vocab {cfg.vocab_size:,}, "
          f"{params / 1e6:.1f} M parameters; {PROMPT_TOKENS}-token prompt, {new_tokens} new tokens, greedy",
          flush=True)
    # name -> (run(prompt, n) -> (rate, tokens), ttft(prompt) -> s, bytes a token reads, bytes loading added)
    sides = {}
    skipped = {}
    with tempfile.TemporaryDirectory() as temp:
        before = resident_bytes()
        hf = exported_to_transformers(loaded, Path(temp) / "hf")
        sides["transformers"] = (lambda p, n: theirs(hf, p, n), lambda p: their_ttft(hf, p), params * 4,
                                 resident_bytes() - before)
        for backend in backends:
            before = resident_bytes()
            decoder = make_decoder(loaded, backend)
            sides[f"ours ({backend})"] = (lambda p, n, d=decoder: ours(d, p, n), lambda p, d=decoder: our_ttft(d, p),
                                          params * 4, resident_bytes() - before)
        for type_name in gguf_types:
            try:
                import llama_cpp  # noqa: F401
            except ImportError as e:
                skipped[f"llama.cpp {type_name}"] = f"llama_cpp cannot be imported ({e}); pip install -e '.[llamacpp]'"
                continue
            path = Path(temp) / f"{type_name}.gguf"
            read = write_bench_gguf(loaded, path, type_name)
            before = resident_bytes()
            side = LlamaCpp(path, cfg, threads)
            sides[f"llama.cpp {type_name}"] = (side.run, side.ttft, read, resident_bytes() - before)
            # The same file through `--backend llamacpp`: llama.cpp's logits, our sampler.
            before = resident_bytes()
            decoder = LlamaCppDecoder(path, cfg, type_name, threads)
            sides[f"ours (llamacpp {type_name})"] = (lambda p, n, d=decoder: ours(d, p, n),
                                                     lambda p, d=decoder: our_ttft(d, p), read,
                                                     resident_bytes() - before)
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, cfg.vocab_size, PROMPT_TOKENS).tolist()
    ttft_prompt = rng.integers(3, cfg.vocab_size, TTFT_PROMPT_TOKENS).tolist()
    for run, *_ in sides.values():
        run(prompt, 8)
    rates = {side: [] for side in sides}
    continuations = {}
    for _ in range(repeats):
        for side, (run, *_) in sides.items():
            rate, continuations[side] = run(prompt, new_tokens)
            rates[side].append(rate)
    reference = "llama.cpp f32" if "llama.cpp f32" in sides else "transformers"
    reference_median = statistics.median(rates[reference])
    print(f"  {'':22} {'tokens/s':>9} {'best':>7} {'ttft ms':>8} {'GB/s':>6} {'MB/token':>9} {'RSS +MB':>8} "
          f"{'vs ' + reference:>18}  agree")
    for side, (run, ttft, read, memory) in sides.items():
        median = statistics.median(rates[side])
        first = statistics.median(ttft(ttft_prompt) for _ in range(5))
        print(f"  {side:22} {median:9.1f} {max(rates[side]):7.1f} {first * 1000:8.1f} {read * median / 1e9:6.1f} "
              f"{read / 1e6:9.1f} {memory / 1e6:8.0f} {median / reference_median:17.2f}x  "
              f"{agreement(continuations[side], continuations['ours (numpy)']) if 'ours (numpy)' in sides else '-'}"
              f"  (runs: {runs(rates[side])})")
    for side, reason in skipped.items():
        print(f"  {side:22} skipped: {reason}")
    print(f"  tokens/s: median of {repeats} interleaved runs, end to end (prompt pass included); ttft: "
          f"{TTFT_PROMPT_TOKENS}-token prompt, median of 5; agree: leading greedy tokens equal to ours (numpy)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["numpy"])
    parser.add_argument("--gguf-types", nargs="*", choices=("f32", "f16", "q8_0"), default=["f32", "f16", "q8_0"])
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
        bench_shape(name, args.backends, args.gguf_types, args.new_tokens, args.repeats, args.threads)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
