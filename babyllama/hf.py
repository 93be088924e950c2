"""The Hugging Face Llama format: parameter names, the rotary row order, config.json both ways,
and reading a folder (ours, or any Llama of a shape ModelConfig can say) back.

`babyllama export` writes the folders. What differs from our layout besides the names, and what
a folder must be to be read: docs/ARCHITECTURE.md, "Exports".
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
from pathlib import Path

import numpy as np

from babyllama.config import ModelConfig, expected_weight_names
from babyllama.errors import UserError

HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

# Hugging Face LlamaForCausalLM names, by our name with {i} for the layer.
HF_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "layers.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.feed_forward.w1.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.feed_forward.w2.weight": "model.layers.{i}.mlp.down_proj.weight",
    "layers.{i}.feed_forward.w3.weight": "model.layers.{i}.mlp.up_proj.weight",
}
HF_OUTPUT_NAME = "lm_head.weight"


def hf_name(name: str) -> str:
    """Our parameter name -> Hugging Face LlamaForCausalLM's (KeyError for a name we do not have)."""
    match = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if match:
        return HF_NAMES["layers.{i}." + match.group(2)].format(i=match.group(1))
    return HF_NAMES[name]


def pairs_to_halves(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """wq/wk rows from our rotary layout (interleaved pairs) to Hugging Face's (halves), head by head."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def halves_to_pairs(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of pairs_to_halves."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def _rotary_heads(name: str, cfg: ModelConfig) -> int | None:
    if name.endswith("attention.wq.weight"):
        return cfg.n_heads
    if name.endswith("attention.wk.weight"):
        return cfg.kv_heads
    return None


# ---------------------------------------------------------------------------------------
# Writing


def hf_config(cfg: ModelConfig, tokenizer: dict | None) -> dict:
    tokenizer = tokenizer or {}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": tokenizer.get("bos_id"),
        "eos_token_id": tokenizer.get("eos_id"),
        "pad_token_id": None,
        "torch_dtype": "float32",
    }


# Chat templates (babyllama.chat_template) as the Jinja text of a tokenizer config's "chat_template",
# by template name, rendering what each template's prompt encodes. Ours: its markers (special tokens
# of the exported tokenizer) around each content, then `<|assistant|>` for a generation prompt or
# end-of-text after a last answer. ChatGLM2's: its text without the `[gMASK]sop` prefix, which
# ChatGLM2's tokenizer adds itself (docs/ARCHITECTURE.md, "Exports").
HF_CHAT_TEMPLATES = {
    "babyllama-chat-v1": (
        "{%- for message in messages -%}"
        "{{ {'system': '<|system|>', 'user': '<|user|>', 'assistant': '<|assistant|>'}[message['role']]"
        " + message['content'] + '<|end|>' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}"
        "{%- elif messages and messages[-1]['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    ),
    "chatglm2": (
        r"{%- for message in messages if message['role'] == 'system' -%}{{ message['content'] + '\n\n' }}"
        r"{%- endfor -%}"
        r"{%- for message in messages if message['role'] != 'system' -%}"
        r"{%- if loop.index0 % 2 == 0 -%}"
        r"{{ '[Round ' + (loop.index0 // 2 + 1) | string + ']\n\n问：' + message['content'] + '\n\n答：' }}"
        r"{%- else -%}{{ message['content'] + '\n\n' }}{%- endif -%}"
        r"{%- endfor -%}"
    ),
}


def hf_weights(cfg: ModelConfig, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in weights.items():
        heads = _rotary_heads(name, cfg)
        value = pairs_to_halves(value, heads) if heads else value
        out[hf_name(name)] = np.ascontiguousarray(value, dtype=np.float32)
    return out


# ---------------------------------------------------------------------------------------
# Reading back


def is_hf_folder(path: Path) -> bool:
    """A folder whose config.json is a Hugging Face model config (it has "model_type")."""
    config = Path(path) / HF_CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False


def _multiple_of_for(dim: int, hidden: int) -> int | None:
    """A multiple_of for which ModelConfig's feed-forward rule gives `hidden` (the smallest power of two)."""
    base = int(2 * 4 * dim / 3)
    for power in range(0, 16):
        multiple_of = 2 ** power
        if multiple_of * math.ceil(base / multiple_of) == hidden:
            return multiple_of
    return None


def model_config_from_hf(config: dict, source: Path) -> ModelConfig:
    def need(condition: bool, what: str) -> None:
        if not condition:
            raise UserError(f"{source}: {what}; babyllama reads Llama models of its own shape only")

    need(config.get("model_type") == "llama", f"model_type is {config.get('model_type')!r}, not \"llama\"")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        need(isinstance(config.get(key), int), f"has no whole-number {key}")
    need(config.get("hidden_act", "silu") == "silu", f"hidden_act is {config.get('hidden_act')!r}, not silu")
    need(not config.get("attention_bias") and not config.get("mlp_bias"), "the layers have biases")
    rope = config.get("rope_parameters") or {}
    need(not config.get("rope_scaling") and rope.get("rope_type", "default") == "default",
         "the rotary embedding is scaled")
    dim, n_heads = config["hidden_size"], config["num_attention_heads"]
    need(config.get("head_dim") in (None, dim // n_heads), f"head_dim {config.get('head_dim')} is not "
         f"hidden_size / num_attention_heads = {dim // n_heads}")
    multiple_of = _multiple_of_for(dim, config["intermediate_size"])
    need(multiple_of is not None, f"intermediate_size {config['intermediate_size']} is not Meta's "
         f"2/3 * 4 * hidden_size rounded up to a power-of-two multiple")
    n_kv_heads = config.get("num_key_value_heads") or n_heads
    cfg = ModelConfig(
        vocab_size=config["vocab_size"], dim=dim, n_layers=config["num_hidden_layers"], n_heads=n_heads,
        n_kv_heads=None if n_kv_heads == n_heads else n_kv_heads, multiple_of=multiple_of,
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        max_seq_len=int(config.get("max_position_embeddings") or 2048),
        rope_theta=float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
    )
    try:
        cfg.validate()
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    return cfg


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def read_safetensors(path: Path, names: set[str] | None = None) -> dict[str, np.ndarray]:
    """float32 arrays of a safetensors file (F32, F16, BF16 or F64 tensors), memory-mapped while read."""
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
        header_size = struct.unpack("<Q", data[:8].tobytes())[0]
        header = json.loads(data[8:8 + header_size].tobytes())
    except (OSError, ValueError, struct.error) as e:
        raise UserError(f"{path}: cannot be read as safetensors ({e})") from None
    body = 8 + header_size
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or (names is not None and name not in names):
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise UserError(f"{path}: tensor {name} is {info['dtype']}; babyllama reads F32, F16 and BF16 weights")
        start, end = info["data_offsets"]
        raw = np.frombuffer(data[body + start:body + end], dtype=dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":
            # bfloat16 is the top half of a float32.
            out[name] = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out[name] = raw.astype(np.float32)
    return out


def hf_weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors files (one, or those its index names); refused when it has none."""
    if (folder / HF_WEIGHTS_FILE).is_file():
        return [folder / HF_WEIGHTS_FILE]
    index = folder / HF_WEIGHTS_INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    raise UserError(f"{folder}: has no {HF_WEIGHTS_FILE} (or {HF_WEIGHTS_INDEX_FILE}); export the weights as "
                    "safetensors (save_pretrained(..., safe_serialization=True))")


def read_hf_folder(folder: str | Path) -> tuple[ModelConfig, dict[str, np.ndarray], dict]:
    """A Hugging Face Llama folder's model config, its float32 weights under our names in our rotary
    layout, and the config.json a babyllama checkpoint of it would have."""
    from babyllama.tokenizer import HF_CONFIG_FILE as HF_TOKENIZER_CONFIG_FILE
    from babyllama.tokenizer import HF_TOKENIZER_FILE, SENTENCEPIECE_FILE

    folder = Path(folder)
    config_path = folder / HF_CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    cfg = model_config_from_hf(config, config_path)
    names = {name: hf_name(name) for name in expected_weight_names(cfg)}
    stored = {}
    for path in hf_weight_files(folder):
        stored.update(read_safetensors(path, set(names.values()) | {HF_OUTPUT_NAME}))
    weights = {}
    for ours, theirs in names.items():
        if theirs not in stored:
            raise UserError(f"{folder}: the weights lack {theirs}; the folder does not match its config.json")
        heads = _rotary_heads(ours, cfg)
        weights[ours] = np.ascontiguousarray(halves_to_pairs(stored[theirs], heads) if heads else stored[theirs])
    embedding = weights["tok_embeddings.weight"]
    if embedding.shape != (cfg.vocab_size, cfg.dim):
        raise UserError(f"{folder}: {names['tok_embeddings.weight']} is {embedding.shape}, config.json says "
                        f"({cfg.vocab_size}, {cfg.dim})")
    output = stored.get(HF_OUTPUT_NAME)
    if output is not None and not config.get("tie_word_embeddings", True) and not np.array_equal(output, embedding):
        raise UserError(f"{config_path}: the output layer ({HF_OUTPUT_NAME}) is not the embedding; babyllama's "
                        "model ties them")
    has_tokenizer = any((folder / name).is_file()
                        for name in (SENTENCEPIECE_FILE, HF_TOKENIZER_FILE, HF_TOKENIZER_CONFIG_FILE))
    own = {
        "model": dataclasses.asdict(cfg),
        "tokenizer": {"path": str(folder.absolute())} if has_tokenizer else None,
        "preset": None,
        "source": "huggingface",
    }
    return cfg, weights, own
