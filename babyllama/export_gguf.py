"""`babyllama export --format gguf`: a checkpoint as one GGUF file for llama.cpp (and Ollama, LM
Studio), written by the `gguf` package (llama.cpp's own writer), with an Ollama Modelfile beside it.

What the file holds, and why each choice: docs/ARCHITECTURE.md, "Exports".
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babyllama.config import ModelConfig, expected_weight_names
from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, space_failures_naming, temp_path
from babyllama.hf import HF_CHAT_TEMPLATES, hf_name

GGUF_TYPES = ("f32", "f16", "q8_0")
DEFAULT_GGUF_TYPE = "f16"
GGUF_TOKENIZER_KINDS = ("sentencepiece", "chatglm")
MODELFILE_SUFFIX = ".Modelfile"

# The chat templates as the Jinja text of tokenizer.chat_template. Ours is the Hugging Face export's;
# ChatGLM2's adds the `[gMASK]sop` its own tokenizer code puts in front, which llama.cpp does not.
GGUF_CHAT_TEMPLATES = {
    "babyllama-chat-v1": HF_CHAT_TEMPLATES["babyllama-chat-v1"],
    "chatglm2": "{{- '[gMASK]sop' -}}" + HF_CHAT_TEMPLATES["chatglm2"],
}

# The same conversations in Ollama's Go template syntax (Modelfile TEMPLATE), for `.Messages`.
OLLAMA_TEMPLATE_OURS = (
    '{{ range .Messages }}{{ if eq .Role "system" }}<|system|>{{ else if eq .Role "user" }}<|user|>'
    '{{ else }}<|assistant|>{{ end }}{{ .Content }}<|end|>{{ end }}<|assistant|>'
)


def sentencepiece_model_file(tokenizer) -> Path:
    """The .model file of a SentencePiece-based tokenizer, which is its path or lies in its folder."""
    from babyllama.tokenizer import SENTENCEPIECE_FILE

    return tokenizer.path / SENTENCEPIECE_FILE if tokenizer.path.is_dir() else tokenizer.path


def modelfile_path(gguf_path: Path) -> Path:
    """Where the Ollama Modelfile of NAME.gguf goes: NAME.Modelfile beside it."""
    return gguf_path.with_name(gguf_path.stem + MODELFILE_SUFFIX)


# ---------------------------------------------------------------------------------------
# The vocabulary


@dataclass
class Vocabulary:
    """A SentencePiece-based tokenizer as llama.cpp's "llama" vocabulary, one entry per model id."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int | None
    eos_id: int
    unk_id: int | None
    pad_id: int | None
    add_space_prefix: bool
    remove_extra_whitespaces: bool


def ids_only_vocabulary(vocab_size: int) -> Vocabulary:
    """One placeholder piece per id: what llama.cpp needs to load a model that is only ever given
    ids (the llama.cpp backend, the bench)."""
    return Vocabulary(tokens=[f"<t{i}>" for i in range(vocab_size)], scores=[0.0] * vocab_size,
                      types=[1] * vocab_size, bos_id=None, eos_id=2, unk_id=0, pad_id=None,
                      add_space_prefix=False, remove_extra_whitespaces=False)


def gguf_vocabulary(tokenizer, vocab_size: int, warn) -> Vocabulary:
    """The tokenizer's pieces with their scores and types (byte-fallback pieces BYTE, control pieces
    and ChatGLM2's special tokens CONTROL), padded to the model's `vocab_size` with unused entries.

    llama.cpp encodes a "llama" vocabulary as SentencePiece's BPE does (the highest-scoring merge
    first), so a unigram model is refused; it does not normalise text, so a model that does is
    exported with a warning."""
    import gguf
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    model_file = sentencepiece_model_file(tokenizer)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
    if kind != "BPE":
        raise UserError(f"{model_file}: a SentencePiece {kind.lower()} model; llama.cpp's SentencePiece vocabulary "
                        "encodes as BPE does, so it would split text otherwise: export --format hf instead")
    normalizer = proto.normalizer_spec
    if normalizer.precompiled_charsmap and normalizer.name != "identity":
        warn(f"{model_file}: the tokenizer normalises text ({normalizer.name}) and llama.cpp does not, so text "
             "that normalisation changes (full-width letters, for one) is encoded differently there")
    processor = spm.SentencePieceProcessor(model_file=str(model_file))
    tokens, scores, types = [], [], []
    for i in range(processor.get_piece_size()):
        tokens.append(processor.id_to_piece(i))
        scores.append(processor.get_score(i))
        if processor.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif processor.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif processor.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif processor.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif proto.pieces[i].type == proto.pieces[i].USER_DEFINED:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    named = {token_id: token for token, token_id in tokenizer.special_ids().items() if token_id >= len(tokens)}
    for i in range(len(tokens), vocab_size):
        tokens.append(named.get(i, f"[PAD{i}]"))
        scores.append(0.0)
        types.append(gguf.TokenType.CONTROL if i in named else gguf.TokenType.UNUSED)
    return Vocabulary(
        tokens, scores, [int(t) for t in types],
        bos_id=processor.bos_id() if processor.bos_id() >= 0 else None,
        eos_id=processor.eos_id(),
        unk_id=processor.unk_id() if processor.unk_id() >= 0 else None,
        pad_id=processor.pad_id() if processor.pad_id() >= 0 else None,
        add_space_prefix=normalizer.add_dummy_prefix,
        remove_extra_whitespaces=normalizer.remove_extra_whitespaces,
    )


# ---------------------------------------------------------------------------------------
# The weights


def gguf_tensor_names(cfg: ModelConfig) -> dict[str, str]:
    """Our parameter names -> llama.cpp's, through gguf's own map of Hugging Face Llama names."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.n_layers)
    return {name: names.get_name(hf_name(name), try_suffixes=(".weight",)) for name in expected_weight_names(cfg)}


def gguf_tensors(cfg: ModelConfig, weights: dict[str, np.ndarray], type_name: str):
    """(gguf name, data, GGMLQuantizationType) in file order, and the names of matrices q8_0 could not
    take. As llama.cpp's converter does: vectors (the norms) stay float32; a matrix whose rows are not
    a whole number of q8_0 blocks (32 values) falls back to float16. Our wq and wk rotate interleaved
    pairs, as llama.cpp's "llama" architecture does, so no rows move (the Hugging Face export's
    reordering is what llama.cpp's converter undoes)."""
    import gguf

    wanted = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
              "q8_0": gguf.GGMLQuantizationType.Q8_0}[type_name]
    out, fell_back = [], []
    for ours, theirs in gguf_tensor_names(cfg).items():
        data = np.ascontiguousarray(weights[ours], dtype=np.float32)
        qtype = gguf.GGMLQuantizationType.F32 if data.ndim == 1 else wanted
        try:
            quantized = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:
            fell_back.append(theirs)
            qtype = gguf.GGMLQuantizationType.F16
            quantized = gguf.quants.quantize(data, qtype)
        out.append((theirs, quantized, qtype))
    return out, fell_back


FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}


# ---------------------------------------------------------------------------------------
# The file


def write_gguf(path: Path, name: str, cfg: ModelConfig, tensors, vocabulary: Vocabulary, type_name: str,
               chat_template: str | None, eot_id: int | None, notes: dict[str, str] | None = None) -> None:
    """The GGUF file at `path` (written in place: the caller gives a temporary name), through gguf's
    writer; `notes` are string fields of our own, by key."""
    import gguf

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    for key, value in (notes or {}).items():
        writer.add_string(key, value)
    writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[type_name]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_scores(vocabulary.scores)
    writer.add_token_types(vocabulary.types)
    writer.add_eos_token_id(vocabulary.eos_id)
    for add, token_id in ((writer.add_bos_token_id, vocabulary.bos_id), (writer.add_unk_token_id, vocabulary.unk_id),
                          (writer.add_pad_token_id, vocabulary.pad_id), (writer.add_eot_token_id, eot_id)):
        if token_id is not None:
            add(token_id)
    # Our prompts start as they are, with no <s> in front, and end with no </s>.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(vocabulary.add_space_prefix)
    writer.add_remove_extra_whitespaces(vocabulary.remove_extra_whitespaces)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    # No output.weight: llama.cpp's llama uses token_embd.weight for the output when it is missing,
    # which is our tied embedding.
    for tensor_name, data, qtype in tensors:
        writer.add_tensor(tensor_name, data, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except OSError as e:
        # numpy's tofile reports a short write ("N requested and M written") with no errno: with
        # less room left than the weights take, the file system is full (or over quota).
        if e.errno is None and shutil.disk_usage(path.parent).free < sum(data.nbytes for _, data, _ in tensors):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    finally:
        writer.close()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------
# Ollama's Modelfile


def ollama_chatglm2_template(max_rounds: int) -> str:
    """ChatGLM2's conversation text in Go template syntax. Its rounds are numbered and Go templates
    have no arithmetic, so the number comes from the turn's index: [Round k] is index 2k-2 without a
    system turn, 2k-1 with one (eq with several arguments is true when the first equals any)."""
    number = "".join(f"{{{{ {'if' if k == 1 else 'else if'} eq $i {2 * k - 2} {2 * k - 1} }}}}{k}"
                     for k in range(1, max_rounds + 1))
    return ('{{ range .Messages }}{{ if eq .Role "system" }}{{ .Content }}\n\n{{ end }}{{ end }}'
            '{{ range $i, $m := .Messages }}{{ if eq .Role "user" }}[Round ' + number + '{{ end }}]\n\n问：'
            '{{ .Content }}\n\n答：{{ else if eq .Role "assistant" }}{{ .Content }}\n\n{{ end }}{{ end }}')


def _go_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile_text(gguf_name: str, cfg: ModelConfig, vocabulary: Vocabulary, template, chat: bool) -> str:
    """The Modelfile: FROM the GGUF beside it, the template (the chat template for a chat model, the
    prompt as it is otherwise), the stop strings, and our sampling defaults."""
    from babyllama.sampling import SamplingParams

    defaults = SamplingParams()
    lines = [f"# Ollama: ollama create NAME -f {modelfile_path(Path(gguf_name)).name}", f"FROM ./{gguf_name}", ""]
    if chat and template.name == "babyllama-chat-v1":
        lines.append(f'TEMPLATE """{OLLAMA_TEMPLATE_OURS}"""')
    elif chat:
        # A round is ten tokens or more, so the context holds no more than this many.
        lines.append(f'TEMPLATE """{ollama_chatglm2_template(cfg.max_seq_len // 8 + 1)}"""')
    else:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    stops = [vocabulary.tokens[vocabulary.eos_id]]
    if chat:
        stops += sorted(vocabulary.tokens[i] for i in template.stop_ids if i != vocabulary.eos_id)
    lines += [f"PARAMETER stop {_go_string(stop)}" for stop in stops]
    lines += [
        f"PARAMETER num_ctx {cfg.max_seq_len}",
        f"PARAMETER num_predict {defaults.max_new_tokens}",
        f"PARAMETER temperature {defaults.temperature:g}",
        f"PARAMETER top_k {defaults.top_k}",
        f"PARAMETER top_p {defaults.top_p:g}",
        f"PARAMETER repeat_penalty {defaults.repetition_penalty:g}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The export


def is_chat_model(loaded) -> bool:
    """A fine-tuned checkpoint (its config.json names the one it started from): its GGUF carries the
    chat template, and its Modelfile's TEMPLATE is the conversation; a pretrained model continues text."""
    return isinstance(loaded.config.get("init_from"), dict)


def _run_name(checkpoint: Path) -> str:
    """RUN-STEP for a run's checkpoint (out/runs/RUN/checkpoints/step_N), else the folder's name."""
    if checkpoint.parent.name == "checkpoints" and checkpoint.name.startswith("step_"):
        return f"{checkpoint.parent.parent.name}-{int(checkpoint.name.removeprefix('step_'))}"
    return checkpoint.name


def export_gguf(loaded, out: Path, tokenizer, template, type_name: str, warn, stage) -> dict:
    """NAME.gguf at `out` and NAME.Modelfile beside it; returns what a done event adds."""
    cfg = loaded.cfg
    if tokenizer is None:
        raise UserError(f"{loaded.checkpoint}: no tokenizer to put in the GGUF, and llama.cpp needs one; give it "
                        "with --tokenizer PATH")
    if tokenizer.kind not in GGUF_TOKENIZER_KINDS:
        raise UserError(f"{tokenizer.path}: a Hugging Face tokenizer; the GGUF export writes SentencePiece "
                        "tokenizers (ours, ChatGLM2's): export --format hf and convert that folder with llama.cpp's "
                        "convert_hf_to_gguf.py")
    vocabulary = gguf_vocabulary(tokenizer, cfg.vocab_size, warn)
    chat = template is not None and is_chat_model(loaded)
    stage(f"converting the weights to {type_name}")
    tensors, fell_back = gguf_tensors(cfg, loaded.weights, type_name)
    if fell_back:
        warn(f"{len(fell_back)} matrices kept in f16 ({', '.join(fell_back[:3])}{', ...' if len(fell_back) > 3 else ''}): "
             "their rows are not a whole number of q8_0's 32-value blocks")
    end_id = template.describe().get("special_ids", {}).get("<|end|>") if chat else None
    stage(f"writing {out.name}")
    temp = temp_path(out)
    modelfile = modelfile_path(out)
    try:
        with space_failures_naming(out):
            write_gguf(temp, _run_name(loaded.checkpoint), cfg, tensors, vocabulary, type_name,
                       GGUF_CHAT_TEMPLATES[template.name] if chat else None, end_id)
        stage(f"writing {modelfile.name}")
        atomic_write_bytes(modelfile, modelfile_text(out.name, cfg, vocabulary, template, chat).encode("utf-8"))
        try:
            os.replace(temp, out)
        except BaseException:
            modelfile.unlink(missing_ok=True)
            raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return {"type": type_name, "modelfile": str(modelfile), "chat_template": template.name if chat else None,
            "bytes": out.stat().st_size}
