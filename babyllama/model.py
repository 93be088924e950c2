"""Llama2 in MindSpore, readable top to bottom: `Transformer` and `CachedDecoder` (prefill, decode).

Imports MindSpore at the top, so only functions import it, never a module the CLI loads to
build its parser. Parameter names, initialisation and the rotary layout: docs/ARCHITECTURE.md,
"The model and its configs"; why attention is written out: docs/MINDSPORE.md.
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from babyllama.config import ModelConfig
from babyllama.rotary import rotary_tables


def pair_swap_matrix(head_dim: int) -> np.ndarray:
    """S with (x @ S) = (-x1, x0, -x3, x2, ...): the "imaginary" partner of each pair, signed."""
    swap = np.zeros((head_dim, head_dim), np.float32)
    for i in range(0, head_dim, 2):
        swap[i + 1, i] = -1.0
        swap[i, i + 1] = 1.0
    return swap


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, swap: Tensor) -> Tensor:
    """Rotate each pair (x0, x1) of x (..., seq, heads, head_dim) by its angle: cos/sin (seq, 1, head_dim).

    (x0 cos - x1 sin, x1 cos + x0 sin) written as x * cos + (x @ swap) * sin: one small
    matmul and fused elementwise work, where slicing out every other element is slow on the CPU.
    """
    partner = ops.matmul(x.reshape(-1, x.shape[-1]), swap).reshape(x.shape)
    return x * cos + partner * sin


def matmul_in(dtype, matmul, a, b):
    """matmul(a, b) computed in `dtype` (None: as is), the result in float32."""
    if dtype is None:
        return matmul(a, b)
    return ops.cast(matmul(ops.cast(a, dtype), ops.cast(b, dtype)), ms.float32)


class Linear(nn.Cell):
    """y = x @ weight.T, weight (out_features, in_features) like torch.nn.Linear; no bias."""

    def __init__(self, in_features: int, out_features: int, compute_dtype=None):
        super().__init__()
        self.weight = Parameter(ops.zeros((out_features, in_features), ms.float32))
        self.matmul = ops.MatMul(transpose_b=True)
        self.compute_dtype = compute_dtype

    def construct(self, x):
        return matmul_in(self.compute_dtype, self.matmul, x, self.weight)


class Embedding(nn.Cell):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.weight = Parameter(ops.zeros((vocab_size, dim), ms.float32))
        self.gather = ops.Gather()

    def construct(self, ids):
        return self.gather(self.weight, ids, 0)


class RMSNorm(nn.Cell):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(ops.ones((dim,), ms.float32))

    def construct(self, x):
        return x * ops.rsqrt(ops.mean(x * x, -1, keep_dims=True) + self.eps) * self.weight


class Attention(nn.Cell):
    """Causal grouped-query self-attention over tokens laid out (batch * seq, dim)."""

    def __init__(self, cfg: ModelConfig, compute_dtype=None):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.n_rep = cfg.n_heads // cfg.kv_heads
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        self.wq = Linear(cfg.dim, cfg.n_heads * cfg.head_dim, compute_dtype)
        self.wk = Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, compute_dtype)
        self.wv = Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, compute_dtype)
        self.wo = Linear(cfg.n_heads * cfg.head_dim, cfg.dim, compute_dtype)
        self.attn_dropout = nn.Dropout(p=cfg.dropout)
        self.resid_dropout = nn.Dropout(p=cfg.dropout)

    def project(self, x, batch, seq, rope):
        """q (batch, heads, seq, head_dim), already times 1/sqrt(head_dim), and k, v
        (batch, kv_heads, seq, head_dim); q and k rotated. `rope` is (cos, sin, swap)."""
        cos, sin, swap = rope
        q = self.wq(x).reshape(batch, seq, self.n_heads, self.head_dim)
        k = self.wk(x).reshape(batch, seq, self.n_kv_heads, self.head_dim)
        v = self.wv(x).reshape(batch, seq, self.n_kv_heads, self.head_dim)
        # The score scale rides on q's rotation tables: a (seq, head_dim) multiply instead of
        # one over every (batch, heads, seq, seq) score, forward and backward.
        q = apply_rotary(q, cos * self.scale, sin * self.scale, swap).transpose(0, 2, 1, 3)
        k = apply_rotary(k, cos, sin, swap).transpose(0, 2, 1, 3)
        return q, k, v.transpose(0, 2, 1, 3)

    def attend(self, q, k, v, mask):
        """softmax(q k^T + mask) v for a pre-scaled q, heads merged back: (batch * seq, dim)."""
        batch, _, seq, _ = q.shape
        if self.n_rep > 1:
            k = ops.repeat_interleave(k, self.n_rep, 1)
            v = ops.repeat_interleave(v, self.n_rep, 1)
        scores = ops.BatchMatMul(transpose_b=True)(q, k) + mask
        probs = self.attn_dropout(ops.softmax(scores, -1))
        out = ops.BatchMatMul()(probs, v).transpose(0, 2, 1, 3)
        return out.reshape(batch * seq, self.n_heads * self.head_dim)

    def construct(self, x, batch, seq, rope, mask):
        q, k, v = self.project(x, batch, seq, rope)
        return self.resid_dropout(self.wo(self.attend(q, k, v, mask)))


class FeedForward(nn.Cell):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig, compute_dtype=None):
        super().__init__()
        self.w1 = Linear(cfg.dim, cfg.hidden_dim, compute_dtype)
        self.w2 = Linear(cfg.hidden_dim, cfg.dim, compute_dtype)
        self.w3 = Linear(cfg.dim, cfg.hidden_dim, compute_dtype)
        self.dropout = nn.Dropout(p=cfg.dropout)

    def construct(self, x):
        return self.dropout(self.w2(ops.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Cell):
    def __init__(self, cfg: ModelConfig, compute_dtype=None):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, compute_dtype)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg, compute_dtype)

    def construct(self, x, batch, seq, rope, mask):
        h = x + self.attention(self.attention_norm(x), batch, seq, rope, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Cell):
    """The language model. `construct(tokens)` gives logits for every position.

    `compute_dtype` "bfloat16" or "float16" runs the matmuls in that dtype (weights stay
    float32); "float32" (the default, and the only choice on the CPU) runs everything in float32.
    """

    def __init__(self, cfg: ModelConfig, seed: int | None = None, compute_dtype: str = "float32"):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        low_precision = {"float32": None, "bfloat16": ms.bfloat16, "float16": ms.float16}[compute_dtype]
        self.compute_dtype = low_precision
        self.tok_embeddings = Embedding(cfg.vocab_size, cfg.dim)
        self.dropout = nn.Dropout(p=cfg.dropout)
        self.layers = nn.CellList([TransformerBlock(cfg, low_precision) for _ in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output_matmul = ops.MatMul(transpose_b=True)
        # Each value twice (once per pair member), (seq, 1, head_dim): broadcasts over the heads axis
        # of (batch, seq, heads, head_dim).
        cos, sin = (np.repeat(table, 2, axis=1)[:, None, :] for table in rotary_tables(cfg, cfg.max_seq_len))
        self.rope_cos = Tensor(cos)
        self.rope_sin = Tensor(sin)
        self.rope_swap = Tensor(pair_swap_matrix(cfg.head_dim))
        causal = np.triu(np.full((cfg.max_seq_len, cfg.max_seq_len), -np.inf, np.float32), 1)
        self.causal_mask = Tensor(causal)
        self.init_weights(np.random.default_rng(seed))

    def init_weights(self, rng: np.random.Generator) -> None:
        """The seed's initialisation, drawn from `rng` so that a seed gives the same model.

        Only the weights: counters added later (dropout's draws) are left alone, so the same `rng`
        gives the same weights again (a rollback to the run's start)."""
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, param in self.parameters_and_names():
            if not param.requires_grad:
                continue
            if param.ndim == 1:
                values = np.ones(param.shape, np.float32)
            else:
                std = residual_std if name.endswith(("w3.weight", "wo.weight")) else 0.02
                values = rng.normal(0.0, std, param.shape).astype(np.float32)
            param.set_data(Tensor(values))

    def hidden_states(self, tokens):
        """The final normed hidden states, (batch * seq, dim)."""
        batch, seq = tokens.shape
        x = self.dropout(self.tok_embeddings(tokens.reshape(-1)))
        rope = (self.rope_cos[:seq], self.rope_sin[:seq], self.rope_swap)
        mask = self.causal_mask[:seq, :seq]
        for layer in self.layers:
            x = layer(x, batch, seq, rope, mask)
        return self.norm(x)

    def logits_of(self, hidden):
        """Tied output layer: hidden (n, dim) @ embedding^T -> (n, vocab)."""
        return matmul_in(self.compute_dtype, self.output_matmul, hidden, self.tok_embeddings.weight)

    def construct(self, tokens):
        batch, seq = tokens.shape
        return self.logits_of(self.hidden_states(tokens)).reshape(batch, seq, -1)


class CachedDecoder(nn.Cell):
    """Generation with a fixed-size key/value cache, sharing the weights of a Transformer.

    The cache holds max_seq_len positions per layer and lives between calls as a tuple of
    tensors passed in `ms.mutable`, and the position as a tensor, so a graph is compiled
    once per prompt length (prefill) and once for all one-token steps (decode).
    `position` says how many tokens the cache holds; `prefill` resets it.
    """

    def __init__(self, model: Transformer, batch_size: int = 1):
        super().__init__(auto_prefix=False)
        self.model = model
        cfg = model.cfg
        self.batch_size = batch_size
        self.cache_shape = (batch_size, cfg.kv_heads, cfg.max_seq_len, cfg.head_dim)
        self.max_seq_len = cfg.max_seq_len
        self.position = 0
        self.cache = None

    def prefill(self, tokens) -> np.ndarray:
        """Start over with prompts `tokens` (batch, n): logits (batch, vocab) at position n-1."""
        tokens = np.asarray(tokens, np.int32).reshape(self.batch_size, -1)
        empty = tuple(ops.zeros(self.cache_shape, ms.float32) for _ in range(2 * len(self.model.layers)))
        self.position = 0
        return self._advance(tokens, ms.mutable(empty))

    def decode(self, tokens) -> np.ndarray:
        """Feed one token per sequence (batch,) after what the cache holds: logits (batch, vocab)."""
        return self._advance(np.asarray(tokens, np.int32).reshape(self.batch_size, 1), self.cache)

    def _advance(self, tokens: np.ndarray, cache) -> np.ndarray:
        if self.position + tokens.shape[1] > self.max_seq_len:
            raise ValueError(
                f"the cache holds {self.max_seq_len} positions; {self.position} used, {tokens.shape[1]} more asked"
            )
        logits, new_cache = self(Tensor(tokens), Tensor(self.position, ms.int32), cache)
        self.cache = ms.mutable(tuple(new_cache))
        self.position += tokens.shape[1]
        return logits.asnumpy()

    def construct(self, tokens, start, cache):
        model = self.model
        batch, seq = tokens.shape
        positions = ops.arange(seq, dtype=ms.int32) + start
        rope = (ops.gather(model.rope_cos, positions, 0), ops.gather(model.rope_sin, positions, 0), model.rope_swap)
        # Query i (at start + i) sees cache slots 0 .. start + i; later slots hold zeros or stale keys.
        slots = ops.arange(self.max_seq_len, dtype=ms.int32)
        visible = slots.reshape(1, -1) <= positions.reshape(-1, 1)
        mask = ops.select(visible, ops.zeros(visible.shape, ms.float32), ops.fill(ms.float32, visible.shape, -np.inf))
        # One-hot (seq, slots) matrix that writes the new keys and values at slots start .. start + seq - 1.
        write = ops.cast(slots.reshape(1, -1) == positions.reshape(-1, 1), ms.float32)
        keep = 1.0 - write.sum(0).reshape(1, 1, -1, 1)
        x = model.tok_embeddings(tokens.reshape(-1))
        new_cache = ()
        for i, layer in enumerate(model.layers):
            attention = layer.attention
            q, k, v = attention.project(layer.attention_norm(x), batch, seq, rope)
            k_all = cache[2 * i] * keep + ops.matmul(write.T, k)
            v_all = cache[2 * i + 1] * keep + ops.matmul(write.T, v)
            new_cache += (k_all, v_all)
            h = x + attention.wo(attention.attend(q, k_all, v_all, mask))
            x = h + layer.feed_forward(layer.ffn_norm(h))
        last = model.norm(x.reshape(batch, seq, -1)[:, -1])
        return model.logits_of(last), new_cache
