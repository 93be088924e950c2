"""The Llama2 model: parameters, names, initialisation, causality and the KV-cache path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from babyllama.config import ModelConfig, param_count

ms = pytest.importorskip("mindspore")

from babyllama.hf import HF_OUTPUT_NAME, hf_name, pairs_to_halves  # noqa: E402
from babyllama.model import CachedDecoder, Transformer  # noqa: E402

TINY = ModelConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, max_seq_len=16)
GQA = dataclasses.replace(TINY, n_heads=4, n_kv_heads=2)


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture(scope="module")
def gqa_model():
    model = Transformer(GQA, seed=3)
    model.set_train(False)
    return model


@pytest.fixture(scope="module")
def decoder(gqa_model):
    return CachedDecoder(gqa_model, batch_size=2)


def forward(model, tokens: np.ndarray) -> np.ndarray:
    return model(ms.Tensor(tokens.astype(np.int32))).asnumpy()


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        GQA,
        ModelConfig(vocab_size=1000, dim=48, n_layers=3, n_heads=6, n_kv_heads=1, multiple_of=7, max_seq_len=8),
        ModelConfig(vocab_size=8000, dim=288, n_layers=6, n_heads=6),
    ],
)
def test_param_count_matches_the_built_model(cfg):
    model = Transformer(cfg, seed=0)
    assert sum(p.size for p in model.trainable_params()) == param_count(cfg)


def test_names_and_shapes_map_onto_hugging_face_llama():
    model = Transformer(GQA, seed=0)
    shapes = {p.name: tuple(p.shape) for p in model.trainable_params()}
    hf = {hf_name(name): shape for name, shape in shapes.items()}
    assert len(hf) == len(shapes)
    kv = GQA.kv_heads * GQA.head_dim
    expected = {"model.embed_tokens.weight": (97, 32), "model.norm.weight": (32,)}
    for i in range(GQA.n_layers):
        prefix = f"model.layers.{i}."
        expected.update({
            prefix + "input_layernorm.weight": (32,),
            prefix + "post_attention_layernorm.weight": (32,),
            prefix + "self_attn.q_proj.weight": (32, 32),
            prefix + "self_attn.k_proj.weight": (kv, 32),
            prefix + "self_attn.v_proj.weight": (kv, 32),
            prefix + "self_attn.o_proj.weight": (32, 32),
            prefix + "mlp.gate_proj.weight": (GQA.hidden_dim, 32),
            prefix + "mlp.up_proj.weight": (GQA.hidden_dim, 32),
            prefix + "mlp.down_proj.weight": (32, GQA.hidden_dim),
        })
    assert hf == expected
    assert HF_OUTPUT_NAME == "lm_head.weight"
    assert hf_name("layers.1.feed_forward.w1.weight") == "model.layers.1.mlp.gate_proj.weight"
    with pytest.raises(KeyError):
        hf_name("output.weight")


def test_permuted_rows_turn_pair_rotation_into_half_rotation():
    """With wq's rows permuted, Hugging Face's rotate_half gives our interleaved rotation, permuted."""
    rng = np.random.default_rng(0)
    n_heads, head_dim, dim = 2, 8, 5
    weight = rng.normal(size=(n_heads * head_dim, dim))
    x = rng.normal(size=dim)
    angle = rng.uniform(0, 6, size=head_dim // 2)
    cos, sin = np.cos(angle), np.sin(angle)

    ours = (weight @ x).reshape(n_heads, head_dim // 2, 2)
    ours = np.stack((ours[..., 0] * cos - ours[..., 1] * sin, ours[..., 0] * sin + ours[..., 1] * cos), -1)

    theirs = (pairs_to_halves(weight, n_heads) @ x).reshape(n_heads, head_dim)
    first, second = theirs[:, : head_dim // 2], theirs[:, head_dim // 2:]
    theirs = np.concatenate((first * cos - second * sin, second * cos + first * sin), -1)

    np.testing.assert_allclose(theirs, np.concatenate((ours[..., 0], ours[..., 1]), -1), rtol=1e-12)


def test_initialisation_follows_the_seed_and_is_reproducible():
    cfg = ModelConfig(vocab_size=4000, dim=128, n_layers=8, n_heads=4, max_seq_len=16)
    params = {p.name: p.asnumpy() for p in Transformer(cfg, seed=7).trainable_params()}
    again = {p.name: p.asnumpy() for p in Transformer(cfg, seed=7).trainable_params()}
    assert all(np.array_equal(params[k], again[k]) for k in params)
    residual = 0.02 / np.sqrt(2 * cfg.n_layers)
    for name, value in params.items():
        if value.ndim == 1:
            assert np.all(value == 1.0), name
        elif name.endswith(("w3.weight", "wo.weight")):
            assert value.std() == pytest.approx(residual, rel=0.05), name
        else:
            assert value.std() == pytest.approx(0.02, rel=0.05), name
    other = Transformer(cfg, seed=8).trainable_params()[0].asnumpy()
    assert not np.array_equal(other, params["tok_embeddings.weight"])


def test_forward_gives_logits_for_every_position(gqa_model):
    logits = forward(gqa_model, np.arange(2 * 12).reshape(2, 12) % 97)
    assert logits.shape == (2, 12, 97)
    assert np.isfinite(logits).all()


def test_a_later_token_never_changes_earlier_logits(gqa_model):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 97, (2, 12))
    changed = tokens.copy()
    changed[:, 7] = (changed[:, 7] + 1) % 97
    before, after = forward(gqa_model, tokens), forward(gqa_model, changed)
    np.testing.assert_array_equal(before[:, :7], after[:, :7])
    assert np.abs(before[:, 7:] - after[:, 7:]).max() > 1e-4


@pytest.mark.parametrize("prompt_len", [5, 1])
def test_cache_prefill_and_decode_match_the_full_forward(gqa_model, decoder, prompt_len):
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 97, (2, 12))
    full = forward(gqa_model, tokens)
    steps = [decoder.prefill(tokens[:, :prompt_len])]
    steps += [decoder.decode(tokens[:, i]) for i in range(prompt_len, tokens.shape[1])]
    for offset, logits in enumerate(steps):
        expected = full[:, prompt_len - 1 + offset]
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert decoder.position == tokens.shape[1]


def test_prefill_starts_over(decoder):
    tokens = np.arange(2 * 5).reshape(2, 5) % 97
    first = decoder.prefill(tokens)
    decoder.decode(tokens[:, 0])
    np.testing.assert_array_equal(decoder.prefill(tokens), first)


def test_cache_refuses_to_run_past_the_context(decoder):
    decoder.prefill(np.zeros((2, 5), np.int32))
    for _ in range(GQA.max_seq_len - 5):
        decoder.decode([0, 0])
    with pytest.raises(ValueError, match="the cache holds 16 positions; 16 used, 1 more asked"):
        decoder.decode([0, 0])
