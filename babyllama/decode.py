"""Decoders: the model's forward pass with a key/value cache, behind prefill(ids) -> logits at the
prompt's last position and decode(id) -> logits after it.

`NumpyDecoder`, the default, runs the weights in numpy and never imports MindSpore;
`MindSporeDecoder` runs model.CachedDecoder, for Ascend and GPU. Why numpy on the CPU:
docs/MINDSPORE.md, "Decoding"; how it is laid out: docs/ARCHITECTURE.md, "Generating text".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from babyllama.checkpoint import LoadedModel
from babyllama.config import ModelConfig
from babyllama.errors import UserError
from babyllama.rotary import rotary_tables

BACKENDS = ("numpy", "mindspore", "llamacpp")
BACKEND_NAMES = {"numpy": "numpy", "mindspore": "MindSpore", "llamacpp": "llama.cpp"}


def _rms_normalized(x: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm without its weight, over the last axis."""
    return x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def _inputs_first(matrix: np.ndarray, norm_weight: np.ndarray | None = None) -> np.ndarray:
    """A (outputs, inputs) weight as a contiguous (inputs, outputs) array, times the weight of the
    RMSNorm in front of it, if any: W (g * x) = (W diag(g)) x."""
    transposed = matrix.T if norm_weight is None else matrix.T * norm_weight[:, None]
    return np.ascontiguousarray(transposed)


def _silu_times(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up, computed in gate's memory."""
    sigmoid_denominator = np.exp(-gate)
    sigmoid_denominator += 1.0
    gate /= sigmoid_denominator
    gate *= up
    return gate


@dataclass
class _Layer:
    """One layer's matrices, with the norm weights folded in: see NumpyDecoder."""

    wqkv: np.ndarray  # q columns (pre-scaled by 1/sqrt(head_dim)), then k, then v; (dim, q + k + v)
    wo: np.ndarray
    w13: np.ndarray  # gate columns then up columns, (dim, 2 * hidden)
    w2: np.ndarray  # (dim, hidden), the checkpoint's layout


class NumpyDecoder:
    """The model's forward pass in numpy float32 with a fixed-size key/value cache (batch 1).

    A token reads every weight once, so its speed is memory bandwidth and how little else it
    does. A matrix with more outputs than inputs is stored transposed, (inputs, outputs), and
    multiplied as x @ w: OpenBLAS's matrix-vector product reads such a matrix markedly faster in
    that layout, and one with fewer outputs (w2) in the checkpoint's (docs/MINDSPORE.md, "Against
    llama.cpp"). The tied embedding is stored once, as the output layer, and a token's embedding
    is its column. q, k and v are one matrix, gate and up another;
    the attention scale is folded into wq and each RMSNorm's weight into the matrix after it.

    Rotary embedding as complex multiplication: viewing a head's (x0, x1), (x2, x3), ... as
    complex numbers x0 + i x1, ..., the model's pair rotation by angle t is a product with
    cos t + i sin t, one numpy operation over every head of q and k at once. decode() writes into
    buffers made once, so a token allocates little: its logits too go into a buffer made once, so
    they hold until the next decode() (prefill() and score() return fresh arrays).
    """

    backend = "numpy"
    precision = "f32"

    def __init__(self, cfg: ModelConfig, weights: dict[str, np.ndarray]):
        self.cfg = cfg
        # The tied embedding as the output layer, (dim, vocab); a token's embedding is its column.
        self.output = _inputs_first(weights["tok_embeddings.weight"])
        self.final_norm = weights["norm.weight"]
        scale = np.float32(1.0 / math.sqrt(cfg.head_dim))
        self.layers = []
        for i in range(cfg.n_layers):
            w = {name[len(f"layers.{i}."):]: value for name, value in weights.items()
                 if name.startswith(f"layers.{i}.")}
            self.layers.append(_Layer(
                wqkv=_inputs_first(np.concatenate([w["attention.wq.weight"] * scale, w["attention.wk.weight"],
                                                   w["attention.wv.weight"]]), w["attention_norm.weight"]),
                wo=_inputs_first(w["attention.wo.weight"]),
                w13=_inputs_first(np.concatenate([w["feed_forward.w1.weight"], w["feed_forward.w3.weight"]]),
                                  w["ffn_norm.weight"]),
                w2=w["feed_forward.w2.weight"],
            ))
        cos, sin = rotary_tables(cfg, cfg.max_seq_len)
        # cos t + i sin t, from the model's own float32 tables.
        self.rotation = np.empty(cos.shape, np.complex64)
        self.rotation.real, self.rotation.imag = cos, sin
        shape = (cfg.n_layers, cfg.kv_heads, cfg.max_seq_len, cfg.head_dim)
        self.keys = np.zeros(shape, np.float32)
        self.values = np.zeros(shape, np.float32)
        self.position = 0
        self.q_size, self.kv_size = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self._x = np.empty(cfg.dim, np.float32)
        self._qkv = np.empty(self.q_size + 2 * self.kv_size, np.float32)
        self._projected = np.empty(cfg.dim, np.float32)
        self._gate_up = np.empty(2 * cfg.hidden_dim, np.float32)
        self._gate_up_views = (self._gate_up[:cfg.hidden_dim], self._gate_up[cfg.hidden_dim:],
                               np.empty(cfg.hidden_dim, np.float32))
        n_heads, n_kv, head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self._qkv_views = (
            self._qkv[:self.q_size + self.kv_size].view(np.complex64).reshape(n_heads + n_kv, head_dim // 2),
            self._qkv[:self.q_size].reshape(n_kv, n_heads // n_kv, head_dim),
            self._qkv[self.q_size:self.q_size + self.kv_size].reshape(n_kv, head_dim),
            self._qkv[self.q_size + self.kv_size:].reshape(n_kv, head_dim),
        )
        self._normed = np.empty(cfg.dim, np.float32)
        self._next_logits = np.empty(cfg.vocab_size, np.float32)

    @property
    def max_seq_len(self) -> int:
        return self.cfg.max_seq_len

    def prefill(self, ids) -> np.ndarray:
        """Start over with the prompt `ids`: logits (vocab,) at its last position."""
        self.position = 0
        return self._logits(self._advance(np.asarray(ids, np.int64).reshape(-1))[-1])

    def decode(self, token: int) -> np.ndarray:
        """Feed one token after what the cache holds: logits (vocab,) for the next, in a buffer the
        next decode() overwrites."""
        hidden = self._step(int(token))
        normed = np.multiply(hidden, self.final_norm, out=self._normed)
        normed *= 1.0 / math.sqrt(np.dot(hidden, hidden) / self.cfg.dim + self.cfg.norm_eps)
        return np.dot(normed, self.output, out=self._next_logits)

    def score(self, ids) -> np.ndarray:
        """Start over with `ids`: logits (len(ids), vocab) at every position, for measuring a text's loss."""
        self.position = 0
        return self._logits(self._advance(np.asarray(ids, np.int64).reshape(-1)))

    def rewind(self, position: int) -> None:
        """Forget every position from `position` on: the next decode() follows the first `position` tokens.
        For scoring several continuations of one prompt, prefilled once."""
        if not 0 <= position <= self.position:
            raise ValueError(f"cannot rewind to {position}: the cache holds {self.position} positions")
        self.position = position

    def _logits(self, hidden: np.ndarray) -> np.ndarray:
        """The tied output layer over final hidden states (..., dim) -> (..., vocab)."""
        return _rms_normalized(hidden, self.cfg.norm_eps) * self.final_norm @ self.output

    def _check_room(self, n: int) -> None:
        if n == 0 or self.position + n > self.cfg.max_seq_len:
            raise ValueError(f"the cache holds {self.cfg.max_seq_len} positions; {self.position} used, {n} more asked")

    def _advance(self, ids: np.ndarray) -> np.ndarray:
        """Run `ids` through the layers after what the cache holds: hidden states (len(ids), dim)."""
        cfg = self.cfg
        n, start = len(ids), self.position
        self._check_room(n)
        end = start + n
        n_heads, n_kv, head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q_size, kv_size = self.q_size, self.kv_size
        rotation = self.rotation[start:end, None, :]
        mask = None
        if n > 1:
            # Query i (at start + i) sees slots 0 .. start + i.
            mask = np.where(np.arange(end)[None, :] <= np.arange(start, end)[:, None], 0.0, -np.inf).astype(np.float32)
        x = self.output[:, ids].T
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            qkv = _rms_normalized(x, cfg.norm_eps) @ layer.wqkv
            rotated = qkv[:, :q_size + kv_size].view(np.complex64).reshape(n, n_heads + n_kv, head_dim // 2)
            rotated *= rotation
            keys[:, start:end] = qkv[:, q_size:q_size + kv_size].reshape(n, n_kv, head_dim).transpose(1, 0, 2)
            values[:, start:end] = qkv[:, q_size + kv_size:].reshape(n, n_kv, head_dim).transpose(1, 0, 2)
            # (kv heads, queries per kv head, n, head_dim): the query heads sharing each key/value head.
            q = qkv[:, :q_size].reshape(n, n_kv, n_heads // n_kv, head_dim).transpose(1, 2, 0, 3)
            scores = q @ keys[:, None, :end].transpose(0, 1, 3, 2)
            if mask is not None:
                scores += mask
            probs = _softmax_rows(scores)
            attended = (probs @ values[:, None, :end]).transpose(2, 0, 1, 3).reshape(n, q_size)
            h = x + attended @ layer.wo
            gate_up = _rms_normalized(h, cfg.norm_eps) @ layer.w13
            x = h + _silu_times(gate_up[:, :cfg.hidden_dim], gate_up[:, cfg.hidden_dim:]) @ layer.w2.T
        self.position = end
        return x

    def _step(self, token: int) -> np.ndarray:
        """_advance for one token, into preallocated buffers: the hidden state (dim,). Each norm is a
        dot product and one multiplication (its weight is in the next matrix), and every array
        operation writes into a buffer: at 512 dims a layer's Python costs about as much as reading
        its weights."""
        cfg = self.cfg
        self._check_room(1)
        position = self.position
        seen = position + 1
        inverse_dim, eps = 1.0 / cfg.dim, cfg.norm_eps
        qkv, normed, projected, gate, up, silu = self._qkv, self._normed, self._projected, *self._gate_up_views
        rotated, q, new_key, new_value = self._qkv_views
        rotation = self.rotation[position]
        x = self._x
        x[:] = self.output[:, token]
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            np.multiply(x, 1.0 / math.sqrt(np.dot(x, x) * inverse_dim + eps), out=normed)
            np.dot(normed, layer.wqkv, out=qkv)
            rotated *= rotation
            keys[:, position] = new_key
            values[:, position] = new_value
            probs = _softmax_rows(np.matmul(q, keys[:, :seen].transpose(0, 2, 1)))
            np.dot(np.matmul(probs, values[:, :seen]).reshape(-1), layer.wo, out=projected)
            x += projected
            np.multiply(x, 1.0 / math.sqrt(np.dot(x, x) * inverse_dim + eps), out=normed)
            np.dot(normed, layer.w13, out=self._gate_up)
            # silu(gate) * up = gate * up / (1 + exp(-gate))
            np.negative(gate, out=silu)
            np.exp(silu, out=silu)
            silu += 1.0
            np.multiply(gate, up, out=gate)
            gate /= silu
            np.dot(layer.w2, gate, out=projected)
            x += projected
        self.position = seen
        return x


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in `scores`' memory."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


class MindSporeDecoder:
    """model.CachedDecoder behind the same prefill/decode interface, for Ascend and GPU.

    It switches the process to graph mode: CachedDecoder is written to compile once per
    prompt length and once for decoding; op by op (PyNative) it is many times slower
    (docs/MINDSPORE.md, "Decoding").
    """

    backend = "mindspore"
    precision = "f32"

    def __init__(self, cfg: ModelConfig, weights: dict[str, np.ndarray]):
        import mindspore as ms

        from babyllama.model import CachedDecoder, Transformer

        ms.set_context(mode=ms.GRAPH_MODE)
        self.model = Transformer(cfg)
        for param in self.model.trainable_params():
            param.set_data(ms.Tensor(weights[param.name]))
        self.model.set_train(False)
        self.decoder = CachedDecoder(self.model, batch_size=1)
        self.decoder.set_train(False)
        self.max_seq_len = cfg.max_seq_len

    def prefill(self, ids) -> np.ndarray:
        return self.decoder.prefill([list(ids)])[0]

    def decode(self, token: int) -> np.ndarray:
        return self.decoder.decode([token])[0]


def make_decoder(loaded: LoadedModel, backend: str = "numpy", precision: str | None = None, say=print,
                 threads: int | None = None):
    """The decoder of `backend` for `loaded`; `precision` (f32, f16 or q8_0) and `threads` are
    llama.cpp's choices, the others run float32 on their libraries' threads. `say(message)` is told
    of slow preparations (a GGUF being made)."""
    if backend == "llamacpp":
        from babyllama.llamacpp import DEFAULT_PRECISION, llamacpp_decoder

        return llamacpp_decoder(loaded, precision or DEFAULT_PRECISION, say, threads)
    if precision not in (None, "f32"):
        raise UserError(f"--precision {precision} goes with --backend llamacpp; the {backend} backend runs float32")
    if threads is not None:
        raise UserError(f"--threads goes with --backend llamacpp; the {backend} backend's BLAS takes "
                        "OPENBLAS_NUM_THREADS from the environment")
    if backend == "numpy":
        return NumpyDecoder(loaded.cfg, loaded.weights)
    if backend == "mindspore":
        return MindSporeDecoder(loaded.cfg, loaded.weights)
    raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def backend_words(decoder) -> str:
    """What runs the model, for people: "numpy, float32", "llama.cpp, q8_0"."""
    precision = "float32" if decoder.precision == "f32" else decoder.precision
    return f"{BACKEND_NAMES[decoder.backend]}, {precision}"
