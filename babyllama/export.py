"""`babyllama export`: a checkpoint as a Hugging Face Llama folder, as llama2.c's model.bin, or as a
GGUF file for llama.cpp and Ollama (babyllama.export_gguf).

The Hugging Face format itself is babyllama.hf's; this module writes the files. What each file
holds: docs/ARCHITECTURE.md, "Exports".
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import signal
import struct
import sys
from pathlib import Path

import numpy as np

from babyllama.checkpoint import load_model_for_inference
from babyllama.config import ModelConfig
from babyllama.errors import UserError
from babyllama.events import add_progress_argument, event_printer
from babyllama.export_gguf import DEFAULT_GGUF_TYPE, GGUF_TYPES, export_gguf, modelfile_path, sentencepiece_model_file
from babyllama.files import atomic_write_bytes, atomic_write_json, space_failures_naming, temp_path
from babyllama.hf import HF_CHAT_TEMPLATES, HF_CONFIG_FILE, HF_WEIGHTS_FILE, hf_config, hf_weights
from babyllama.rotary import rotary_tables

FORMATS = ("hf", "llama2c", "gguf")
HF_GENERATION_CONFIG_FILE = "generation_config.json"
LLAMA2C_ROPE_THETA = 10000.0
LLAMA2C_NORM_EPS = 1e-5
LLAMA2C_TOKENIZER_KINDS = ("sentencepiece", "chatglm")
# What the exported tokenizer must encode exactly as ours does: Chinese, digits, spaces, bytes.
TOKENIZER_PROBE = "话说天下大势，分久必合，合久必分。 Two  spaces, 2024年\n第二行\t☃ 𝄞"
# A conversation the exported chat template must turn into the ids our chat template gives.
CHAT_PROBE = (
    {"role": "system", "content": " 你是说书人。\n"},
    {"role": "user", "content": "桃园结义的是谁？"},
    {"role": "assistant", "content": "刘备、关羽、张飞。 "},
    {"role": "user", "content": "Two  spaces\n第二行 "},
)

LLAMA2C_LAYER_ORDER = ("attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
                       "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


# ---------------------------------------------------------------------------------------
# Hugging Face: writing


def _generation_config(tokenizer: dict | None, template) -> dict:
    """No max_length: transformers warns on every generate(max_new_tokens=...) call when the
    config sets it, and the context length is in config.json already. With a chat template,
    generation stops at the ids that end an answer (`<|end|>`) as well as at end-of-text."""
    from babyllama.sampling import SamplingParams

    tokenizer = tokenizer or {}
    eos = tokenizer.get("eos_id")
    if template is not None and template.stop_ids - {eos}:
        eos = [eos, *sorted(template.stop_ids - {eos})]
    return {
        "bos_token_id": tokenizer.get("bos_id"),
        "eos_token_id": eos,
        "do_sample": True,
        "temperature": SamplingParams().temperature,
    }


def _warn(message: str) -> None:
    print(f"babyllama export: warning: {message}", file=sys.stderr, flush=True)


# What transformers needs to convert our SentencePiece model to a fast tokenizer that encodes as it
# does: no dummy space in front (the model was trained without one) and no special tokens added.
SENTENCEPIECE_AS_LLAMA = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": False,
    "add_eos_token": False,
    "add_prefix_space": False,
    "legacy": False,
    "clean_up_tokenization_spaces": False,
}


def _write_sentencepiece_tokenizer(folder: Path, tokenizer, template, warn) -> str:
    """tokenizer.model, our config, and transformers' conversion of it when that encodes as we do,
    with the chat template when transformers' `apply_chat_template` gives our template's ids."""
    from transformers import AutoTokenizer

    from babyllama.tokenizer import BABYLLAMA_CONFIG_FILE, SENTENCEPIECE_FILE

    shutil.copyfile(sentencepiece_model_file(tokenizer), folder / SENTENCEPIECE_FILE)
    if (tokenizer.path / BABYLLAMA_CONFIG_FILE).is_file():
        shutil.copyfile(tokenizer.path / BABYLLAMA_CONFIG_FILE, folder / BABYLLAMA_CONFIG_FILE)
    else:
        config = {"kind": "sentencepiece", "model": SENTENCEPIECE_FILE, "vocab_size": tokenizer.vocab_size,
                  "eos_id": tokenizer.eos_id, "bos_id": tokenizer.bos_id, "sha256": tokenizer.fingerprint}
        atomic_write_json(folder / BABYLLAMA_CONFIG_FILE, config)
    atomic_write_json(folder / "tokenizer_config.json", SENTENCEPIECE_AS_LLAMA)

    converted = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    theirs = converted.encode(TOKENIZER_PROBE, add_special_tokens=False)
    if theirs != tokenizer.encode(TOKENIZER_PROBE):
        warn("transformers' conversion of the SentencePiece model encodes differently from it; the folder "
             "keeps tokenizer.model for babyllama and gets no tokenizer.json")
        (folder / "tokenizer_config.json").unlink()
        return "SentencePiece tokenizer.model (babyllama reads it; transformers' conversion differed)"
    chat = ""
    if template is not None:
        # The conversion makes the control pieces, the chat markers among them, added special tokens.
        converted.chat_template = HF_CHAT_TEMPLATES[template.name]
        theirs = converted.apply_chat_template(list(CHAT_PROBE), add_generation_prompt=True, return_dict=False)
        if theirs == template.prompt(CHAT_PROBE):
            chat = (f" Its chat_template is babyllama's {template.name}: "
                    "`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` gives the ids "
                    "`babyllama chat` feeds the model, and generation_config.json stops at `<|end|>`.")
        else:
            warn("transformers' apply_chat_template gives other ids than the chat template; the folder's "
                 "tokenizer gets no chat_template")
            converted.chat_template = None
    # In tokenizer_config.json rather than chat_template.jinja, where every transformers version reads it.
    converted.save_pretrained(str(folder), save_jinja_files=False)
    return "SentencePiece tokenizer.model, with tokenizer.json for AutoTokenizer." + chat


def _write_tokenizer(folder: Path, tokenizer, template, warn) -> str:
    """The tokenizer's files in `folder`; returns a line for the README."""
    from babyllama.tokenizer import HF_TOKENIZER_FILE_PATTERNS, SENTENCEPIECE_FILE

    if tokenizer.kind == "sentencepiece":
        return _write_sentencepiece_tokenizer(folder, tokenizer, template, warn)
    if tokenizer.kind == "chatglm":
        shutil.copyfile(sentencepiece_model_file(tokenizer), folder / SENTENCEPIECE_FILE)
        config = {"tokenizer_class": "ChatGLMTokenizer"}
        chat = ""
        if template is not None:
            config["chat_template"] = HF_CHAT_TEMPLATES[template.name]
            chat = (" Its chat_template writes ChatGLM2's conversation text; ChatGLM2's tokenizer puts [gMASK]sop "
                    "in front when it encodes with special tokens, so `tokenizer(tokenizer.apply_chat_template("
                    "messages, add_generation_prompt=True, tokenize=False))` gives the ids `babyllama chat` feeds "
                    "the model.")
        atomic_write_json(folder / "tokenizer_config.json", config)
        return ("ChatGLM2-6B's tokenizer.model. babyllama reads it as it is; to load it with transformers, "
                "add ChatGLM2-6B's tokenization_chatglm.py (THUDM/chatglm2-6b) and load with "
                "trust_remote_code=True. Ids 64789-64793 are its special tokens." + chat)
    for path in sorted(tokenizer.path.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in HF_TOKENIZER_FILE_PATTERNS):
            shutil.copyfile(path, folder / path.name)
    return f"the Hugging Face tokenizer {tokenizer.name}, copied"


def _readme(loaded, tokenizer_line: str) -> str:
    cfg = loaded.cfg
    return (
        f"# {loaded.checkpoint.name}: a babyllama Llama2 in Hugging Face format\n\n"
        f"Exported from `{loaded.checkpoint}`: {cfg.n_layers} layers, dim {cfg.dim}, {cfg.n_heads} heads "
        f"({cfg.kv_heads} key/value), vocabulary {cfg.vocab_size:,}, context {cfg.max_seq_len} tokens, "
        f"{sum(w.size for w in loaded.weights.values()):,} parameters, float32.\n\n"
        "```python\n"
        "from transformers import AutoTokenizer, LlamaForCausalLM\n"
        "model = LlamaForCausalLM.from_pretrained(\"DIR\")\n"
        "tokenizer = AutoTokenizer.from_pretrained(\"DIR\")  # where the tokenizer allows, see below\n"
        "```\n\n"
        f"Tokenizer: {tokenizer_line}\n\n"
        "babyllama reads this folder back: `babyllama generate --ckpt DIR`.\n"
    )


def _tokenizer_for(loaded, given: Path | None, warn):
    from babyllama.tokenizer import load_tokenizer

    path = given or loaded.tokenizer_path
    if path is None:
        warn(f"{loaded.checkpoint}: names no tokenizer; the export has none (give one with --tokenizer PATH)")
        return None
    try:
        tokenizer = load_tokenizer(path)
    except UserError as e:
        if given is not None:
            raise
        warn(f"{e}; the export has no tokenizer (give one with --tokenizer PATH)")
        return None
    if tokenizer.vocab_size > loaded.cfg.vocab_size:
        raise UserError(f"{tokenizer.path}: vocabulary {tokenizer.vocab_size:,} is larger than the model's "
                        f"{loaded.cfg.vocab_size:,}; give the tokenizer the model was trained with")
    return tokenizer


def _chat_template_for(loaded, tokenizer, warn):
    """The model's chat template (None without a tokenizer, or with one that has no chat tokens);
    a checkpoint whose recorded template cannot be used is warned about."""
    if tokenizer is None:
        return None
    try:
        return loaded.chat_template(tokenizer)
    except UserError as e:
        if loaded.config.get("chat_template") is not None:
            warn(f"{e}; the export has no chat template")
        return None


def _no_stage(message: str) -> None:
    pass


def export_hf(loaded, out: Path, tokenizer=None, warn=_warn, stage=_no_stage) -> Path:
    """Write `loaded` (a checkpoint.LoadedModel) as a Hugging Face Llama folder at `out`; `stage(message)`
    is told what is being written."""
    from safetensors.numpy import save_file

    description = tokenizer.describe() if tokenizer is not None else None
    template = _chat_template_for(loaded, tokenizer, warn)
    temp = temp_path(out)
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    with space_failures_naming(out):
        try:
            stage(f"writing {HF_WEIGHTS_FILE}")
            atomic_write_json(temp / HF_CONFIG_FILE, hf_config(loaded.cfg, description))
            save_file(hf_weights(loaded.cfg, loaded.weights), str(temp / HF_WEIGHTS_FILE), metadata={"format": "pt"})
            atomic_write_json(temp / HF_GENERATION_CONFIG_FILE, _generation_config(description, template))
            if tokenizer is not None:
                stage(f"writing the tokenizer {tokenizer.name}")
            tokenizer_line = (_write_tokenizer(temp, tokenizer, template, warn) if tokenizer is not None
                              else "none was exported.")
            (temp / "README.md").write_text(_readme(loaded, tokenizer_line), encoding="utf-8")
            _replace(temp, out)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return out


def _replace(temp: Path, out: Path) -> None:
    """Rename `temp` to `out`, moving an existing `out` (allowed by --force) aside first."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        temp.rename(out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        temp.rename(out)


# ---------------------------------------------------------------------------------------
# llama2.c


def llama2c_header(cfg: ModelConfig) -> bytes:
    return struct.pack("<7i", cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.vocab_size,
                       cfg.max_seq_len)


def llama2c_tensors(cfg: ModelConfig, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The tensors of a version-0 model.bin after its header, in file order."""
    tensors = [weights["tok_embeddings.weight"]]
    for part in LLAMA2C_LAYER_ORDER:
        tensors += [weights[f"layers.{i}.{part}.weight"] for i in range(cfg.n_layers)]
    tensors.append(weights["norm.weight"])
    return tensors + list(rotary_tables(cfg, cfg.max_seq_len))


def llama2c_tokenizer_path(model_path: Path) -> Path:
    """Where the tokenizer of an exported model.bin goes: NAME.bin -> NAME.tokenizer.bin beside it."""
    return model_path.with_name(f"{model_path.stem}.tokenizer.bin")


def llama2c_tokenizer_bytes(tokenizer, vocab_size: int) -> bytes:
    """A SentencePiece-based tokenizer in llama2.c's tokenizer.bin layout, one entry per model id.

    int32 max piece length, then per id: float32 score, int32 length, the piece's UTF-8 bytes,
    with U+2581 as a space and <s>, </s> on lines of their own, as llama2.c's tokenizer.py
    writes them. Ids past the tokenizer's pieces (ChatGLM2's special tokens, padding) get
    their name or "<id N>", never an empty piece, which run.c cannot read.
    """
    import sentencepiece as spm

    from babyllama.tokenizer import SPACE_SYMBOL

    processor = spm.SentencePieceProcessor(model_file=str(sentencepiece_model_file(tokenizer)))
    named = {token_id: token for token, token_id in tokenizer.special_ids().items()}
    entries = []
    for i in range(vocab_size):
        if i < processor.get_piece_size():
            piece, score = processor.id_to_piece(i).replace(SPACE_SYMBOL, " "), processor.get_score(i)
            if i == processor.bos_id():
                piece = "\n<s>\n"
            elif i == processor.eos_id():
                piece = "\n</s>\n"
        else:
            piece, score = named.get(i, f"<id {i}>"), 0.0
        entries.append((piece.encode("utf-8"), score))
    out = [struct.pack("<i", max(len(piece) for piece, _ in entries))]
    for piece, score in entries:
        out.append(struct.pack("<fi", score, len(piece)) + piece)
    return b"".join(out)


def export_llama2c(loaded, out: Path, tokenizer=None, stage=_no_stage) -> Path:
    """model.bin at `out`, and with a SentencePiece-based `tokenizer` its tokenizer.bin beside it."""
    cfg = loaded.cfg
    if cfg.rope_theta != LLAMA2C_ROPE_THETA or cfg.norm_eps != LLAMA2C_NORM_EPS:
        raise UserError(f"{loaded.checkpoint}: rope_theta {cfg.rope_theta:g} and norm_eps {cfg.norm_eps:g}; "
                        f"llama2.c's run.c fixes them at {LLAMA2C_ROPE_THETA:g} and {LLAMA2C_NORM_EPS:g}: "
                        "export this model with --format hf instead")
    temp = temp_path(out)
    stage(f"writing {out.name}")
    with space_failures_naming(out):
        try:
            with open(temp, "wb") as f:
                f.write(llama2c_header(cfg))
                for tensor in llama2c_tensors(cfg, loaded.weights):
                    f.write(np.ascontiguousarray(tensor, dtype="<f4").tobytes())
            if tokenizer is not None:
                stage(f"writing {llama2c_tokenizer_path(out).name}")
                atomic_write_bytes(llama2c_tokenizer_path(out), llama2c_tokenizer_bytes(tokenizer, cfg.vocab_size))
            _replace(temp, out)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    return out


# ---------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Export a checkpoint as a Hugging Face Llama folder (transformers), as llama2.c's model.bin, or as a GGUF "
        "file for llama.cpp and Ollama (with an Ollama Modelfile beside it). `--ckpt` on an exported Hugging Face "
        "folder reads it back."
    )
    parser.add_argument("--ckpt", required=True, type=Path, metavar="PATH",
                        help="a run directory (its latest checkpoint), a checkpoint folder or a Hugging Face folder")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="hf: a folder for transformers' LlamaForCausalLM; llama2c: llama2.c's model.bin; "
                        "gguf: one file for llama.cpp, Ollama and LM Studio")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR|FILE",
                        help="the folder (hf) or file (llama2c: NAME.bin, gguf: NAME.gguf) to write")
    parser.add_argument("--type", choices=GGUF_TYPES, metavar="|".join(GGUF_TYPES),
                        help=f"gguf only: the matrices' type (default {DEFAULT_GGUF_TYPE}); q8_0 keeps in f16 a "
                        "matrix whose rows are not a whole number of its 32-value blocks, and the norms stay f32")
    parser.add_argument("--tokenizer", type=Path, metavar="PATH",
                        help="the tokenizer to put beside the weights (default: the checkpoint's)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_progress_argument(parser)


def _terminated(number, frame) -> None:
    # SIGTERM's default ends the process at once, leaving the temporary file being written; as an
    # exit, the writers' cleanup runs first.
    raise SystemExit(128 + number)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    emit = event_printer(args.progress)
    if emit is None:
        _export(args, _warn, _no_stage, print)
        return 0
    warnings = []

    def warn(message: str) -> None:
        _warn(message)
        warnings.append(message)

    def stage(message: str) -> None:
        emit({"event": "stage", "message": message})

    try:
        done = _export(args, warn, stage, lambda line: None)
    except UserError as e:
        emit({"event": "error", "message": str(e)})
        raise
    emit({"event": "done", **done, "warnings": warnings})
    return 0


def _export(args: argparse.Namespace, warn, stage, say) -> dict:
    """The export `args` ask for; `say` gets the lines of the text report. Returns what a done event holds."""
    out = args.out
    if args.type is not None and args.format != "gguf":
        raise UserError(f"--type goes with --format gguf (the {args.format} export is float32)")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; give --force to replace it, or another --out")
    if args.format in ("llama2c", "gguf") and out.is_dir():
        example = "model.bin" if args.format == "llama2c" else "model.gguf"
        raise UserError(f"{out} is a folder; --format {args.format} writes one file, e.g. --out {example}")
    if args.format == "gguf" and modelfile_path(out).exists() and not args.force:
        raise UserError(f"{modelfile_path(out)} exists (the Ollama Modelfile of {out.name}); give --force to "
                        "replace it, or another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage("loading the checkpoint")
    loaded = load_model_for_inference(args.ckpt)
    tokenizer = _tokenizer_for(loaded, args.tokenizer, warn)
    parameters = sum(w.size for w in loaded.weights.values())
    done = {"out": str(out), "format": args.format, "checkpoint": str(loaded.checkpoint), "parameters": parameters,
            "tokenizer": None}
    if args.format == "hf":
        export_hf(loaded, out, tokenizer, warn, stage)
        say(f"wrote {out} from {loaded.checkpoint}: {parameters:,} parameters")
        return {**done, "tokenizer": str(out) if tokenizer is not None else None}
    if args.format == "gguf":
        type_name = args.type or DEFAULT_GGUF_TYPE
        written = export_gguf(loaded, out, tokenizer, _chat_template_for(loaded, tokenizer, warn), type_name, warn,
                              stage)
        say(f"wrote {out} ({type_name}, {written['bytes']:,} bytes) from {loaded.checkpoint}: {parameters:,} "
            f"parameters, and its Ollama Modelfile {written['modelfile']}")
        llama_cpp = (f"llama-cli -m {out} --jinja" if written["chat_template"] else
                     f"llama-completion -m {out} -no-cnv -p TEXT")
        say(f"run it with llama.cpp: {llama_cpp}; with Ollama: ollama create NAME -f {written['modelfile']}")
        return {**done, "tokenizer": str(out), **written}
    if tokenizer is not None and tokenizer.kind not in LLAMA2C_TOKENIZER_KINDS:
        warn(f"{tokenizer.path}: llama2.c reads SentencePiece tokenizers only; no tokenizer.bin written")
        tokenizer = None
    export_llama2c(loaded, out, tokenizer, stage)
    say(f"wrote {out} from {loaded.checkpoint}: {parameters:,} parameters")
    if tokenizer is None:
        return done
    say(f"and its tokenizer {llama2c_tokenizer_path(out)}; run it with llama2.c: "
        f"./run {out} -z {llama2c_tokenizer_path(out)}")
    return {**done, "tokenizer": str(llama2c_tokenizer_path(out))}
