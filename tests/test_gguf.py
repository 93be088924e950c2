"""`babyllama export --format gguf`: the file read back with gguf's own reader, and run by llama.cpp
itself (llama-cpp-python, where it is installed): its tokenizer, logits and greedy tokens against ours,
q8_0's, and a fine-tuned model's chat template.

The llama.cpp tests are slow and skip where `llama_cpp` cannot be imported
(`pip install llama-cpp-python`, which builds llama.cpp from source: minutes).
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_checkpoints import write_numpy_checkpoint
from test_export import CONVERSATIONS, TEXTS
from test_generate import TINY

from babyllama.checkpoint import load_model_for_inference
from babyllama.config import ModelConfig
from babyllama.export_gguf import GGUF_CHAT_TEMPLATES, OLLAMA_TEMPLATE_OURS
from babyllama.hf import halves_to_pairs, hf_weights

gguf = pytest.importorskip("gguf", reason="the gguf package writes and reads GGUF files")

PROMPT = "话说天下大势，分久必合"
PARENT = {"run": "/runs/base", "checkpoint": "/runs/base/checkpoints/step_0000012", "step": 12}


def babyllama(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def export(ckpt: Path, out: Path, *flags) -> subprocess.CompletedProcess:
    done = babyllama("export", "--ckpt", ckpt, "--format", "gguf", "--out", out, *flags)
    assert done.returncode == 0, done.stderr
    return done


def fields(path: Path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {name: field.contents() for name, field in reader.fields.items()}


def tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def dequantized(tensor) -> np.ndarray:
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sp_tokenizer):
    """A random model of TINY's shape (grouped-query attention) with our tokenizer, written with numpy."""
    return write_numpy_checkpoint(tmp_path_factory.mktemp("gguf") / "step_0000007", TINY, sp_tokenizer.describe())


@pytest.fixture(scope="module")
def exports(checkpoint, tmp_path_factory):
    """The checkpoint exported as each type."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for type_name in ("f32", "f16", "q8_0"):
        out[type_name] = folder / f"tiny-{type_name}.gguf"
        export(checkpoint, out[type_name], "--type", type_name)
    return out


# ---------------------------------------------------------------------------------------
# The file, read back with gguf's reader


def test_the_gguf_is_a_llama_of_our_shape(exports):
    meta = fields(exports["f32"])
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == gguf.LlamaFileType.ALL_F32
    assert {key: meta[f"llama.{key}"] for key in ("context_length", "embedding_length", "feed_forward_length",
                                                   "block_count", "attention.head_count", "attention.head_count_kv",
                                                   "rope.dimension_count", "vocab_size")} == {
        "context_length": TINY.max_seq_len, "embedding_length": TINY.dim, "feed_forward_length": TINY.hidden_dim,
        "block_count": TINY.n_layers, "attention.head_count": TINY.n_heads, "attention.head_count_kv": TINY.n_kv_heads,
        "rope.dimension_count": TINY.head_dim, "vocab_size": TINY.vocab_size}
    assert meta["llama.rope.freq_base"] == TINY.rope_theta
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(TINY.norm_eps)


def test_the_vocabulary_is_ours_with_scores_and_types(exports, sp_tokenizer):
    import sentencepiece as spm

    meta = fields(exports["f32"])
    processor = spm.SentencePieceProcessor(model_file=str(sp_tokenizer.path / "tokenizer.model"))
    assert meta["tokenizer.ggml.model"] == "llama"
    assert meta["tokenizer.ggml.tokens"] == [processor.id_to_piece(i) for i in range(TINY.vocab_size)]
    assert meta["tokenizer.ggml.scores"] == pytest.approx([processor.get_score(i) for i in range(TINY.vocab_size)])
    types = meta["tokenizer.ggml.token_type"]
    specials = sp_tokenizer.special_ids()
    assert types[0] == gguf.TokenType.UNKNOWN
    assert {types[i] for i in specials.values()} == {gguf.TokenType.CONTROL}
    assert {"<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"} <= specials.keys()
    byte_ids = [i for i, piece in enumerate(meta["tokenizer.ggml.tokens"]) if piece.startswith("<0x")]
    assert len(byte_ids) == 256 and {types[i] for i in byte_ids} == {gguf.TokenType.BYTE}
    assert types.count(gguf.TokenType.NORMAL) == TINY.vocab_size - 256 - len(specials) - 1
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"],
            meta["tokenizer.ggml.unknown_token_id"]) == (1, 2, 0)
    assert "tokenizer.ggml.padding_token_id" not in meta  # our tokenizers have no padding piece
    # Prompts go in as they are: no <s>, no </s>, no space in front (the tokenizer adds none).
    assert (meta["tokenizer.ggml.add_bos_token"], meta["tokenizer.ggml.add_eos_token"],
            meta["tokenizer.ggml.add_space_prefix"]) == (False, False, False)


def test_the_weights_are_in_llamacpps_layout_and_the_output_is_the_tied_embedding(exports, checkpoint):
    weights = load_model_for_inference(checkpoint).weights
    stored = tensors(exports["f32"])
    assert "output.weight" not in stored  # llama.cpp falls back to token_embd.weight
    assert len(stored) == 2 + 9 * TINY.n_layers
    np.testing.assert_array_equal(dequantized(stored["token_embd.weight"]), weights["tok_embeddings.weight"])
    np.testing.assert_array_equal(dequantized(stored["blk.1.ffn_down.weight"]), weights["layers.1.feed_forward.w2.weight"])
    # llama.cpp's "llama" rotates interleaved pairs, as we do: its converter undoes the Hugging Face export's
    # reordering of wq and wk, and our rows go in as they are.
    hf = hf_weights(TINY, weights)
    for ours, theirs, heads in (("wq", "q", TINY.n_heads), ("wk", "k", TINY.n_kv_heads)):
        stored_rows = dequantized(stored[f"blk.0.attn_{theirs}.weight"])
        np.testing.assert_array_equal(stored_rows, weights[f"layers.0.attention.{ours}.weight"])
        np.testing.assert_array_equal(stored_rows, halves_to_pairs(hf[f"model.layers.0.self_attn.{theirs}_proj.weight"],
                                                                   heads))
        assert not np.array_equal(stored_rows, hf[f"model.layers.0.self_attn.{theirs}_proj.weight"])


def test_f16_and_q8_0_convert_the_matrices_and_keep_the_norms_in_f32(exports, checkpoint):
    weights = load_model_for_inference(checkpoint).weights
    for type_name, qtype, file_type in (("f16", gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
                                        ("q8_0", gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)):
        stored = tensors(exports[type_name])
        assert fields(exports[type_name])["general.file_type"] == file_type
        assert {t.tensor_type for name, t in stored.items() if name.endswith("norm.weight")} == \
            {gguf.GGMLQuantizationType.F32}
        assert {t.tensor_type for name, t in stored.items() if not name.endswith("norm.weight")} == {qtype}
        embedding = weights["tok_embeddings.weight"]
        # q8_0: a block of 32 values shares a scale of its largest magnitude / 127.
        bound = np.abs(embedding).max() / 127 if type_name == "q8_0" else np.abs(embedding).max() / 1024
        assert np.abs(dequantized(stored["token_embd.weight"]) - embedding).max() <= bound
    sizes = {name: path.stat().st_size for name, path in exports.items()}
    assert 0.45 < sizes["f16"] / sizes["f32"] < 0.55
    assert 0.25 < sizes["q8_0"] / sizes["f32"] < 0.32  # 34 bytes per 32 values, against 128


def test_q8_0_keeps_in_f16_the_matrices_whose_rows_are_not_whole_blocks(tmp_path, sp_tokenizer):
    cfg = ModelConfig(vocab_size=sp_tokenizer.vocab_size, dim=48, n_layers=1, n_heads=4, max_seq_len=32)
    ckpt = write_numpy_checkpoint(tmp_path / "step_0000001", cfg, sp_tokenizer.describe())
    done = export(ckpt, tmp_path / "m.gguf", "--type", "q8_0")
    types = {name: t.tensor_type.name for name, t in tensors(tmp_path / "m.gguf").items()}
    # Rows of 48 values (dim) are not whole 32-value blocks; ffn_down's rows are hidden_dim = 128 values.
    assert types == {"token_embd.weight": "F16", "output_norm.weight": "F32", "blk.0.attn_norm.weight": "F32",
                     "blk.0.attn_q.weight": "F16", "blk.0.attn_k.weight": "F16", "blk.0.attn_v.weight": "F16",
                     "blk.0.attn_output.weight": "F16", "blk.0.ffn_norm.weight": "F32", "blk.0.ffn_gate.weight": "F16",
                     "blk.0.ffn_up.weight": "F16", "blk.0.ffn_down.weight": "Q8_0"}
    assert done.stderr == ("babyllama export: warning: 7 matrices kept in f16 (token_embd.weight, blk.0.attn_q.weight, "
                           "blk.0.attn_k.weight, ...): their rows are not a whole number of q8_0's 32-value blocks\n")


# ---------------------------------------------------------------------------------------
# Chat templates and the Modelfile


def test_a_pretrained_model_has_no_chat_template_and_its_modelfile_continues_text(exports):
    assert "tokenizer.chat_template" not in fields(exports["f16"])
    modelfile = exports["f16"].with_name("tiny-f16.Modelfile").read_text()
    assert modelfile == (
        "# Ollama: ollama create NAME -f tiny-f16.Modelfile\n"
        "FROM ./tiny-f16.gguf\n\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        'PARAMETER stop "</s>"\n'
        f"PARAMETER num_ctx {TINY.max_seq_len}\n"
        "PARAMETER num_predict 256\nPARAMETER temperature 0.8\nPARAMETER top_k 0\nPARAMETER top_p 1\n"
        "PARAMETER repeat_penalty 1\n")


@pytest.fixture(scope="module")
def chat_export(tmp_path_factory, sp_tokenizer):
    """A fine-tuned model (its config.json names its parent) exported as f32."""
    from test_chat import ROOMY, write_talking_checkpoint

    folder = tmp_path_factory.mktemp("chat")
    ckpt = write_talking_checkpoint(folder / "step_0000003", sp_tokenizer, ROOMY, init_from=PARENT)
    export(ckpt, folder / "chat.gguf", "--type", "f32")
    return ckpt, folder / "chat.gguf"


def test_a_fine_tuned_model_carries_its_chat_template_and_ollamas(chat_export, sp_tokenizer):
    _, path = chat_export
    meta = fields(path)
    specials = sp_tokenizer.special_ids()
    assert meta["tokenizer.chat_template"] == GGUF_CHAT_TEMPLATES["babyllama-chat-v1"]
    assert meta["tokenizer.ggml.eot_token_id"] == specials["<|end|>"]
    modelfile = path.with_name("chat.Modelfile").read_text()
    assert f'TEMPLATE """{OLLAMA_TEMPLATE_OURS}"""\n' in modelfile
    assert 'PARAMETER stop "</s>"\nPARAMETER stop "<|end|>"\n' in modelfile


def test_the_chat_template_renders_our_conversation_text(sp_tokenizer):
    """Rendered as llama.cpp's Python binding renders it (jinja2, trim_blocks and lstrip_blocks), the
    template's text, split at its markers, is each turn's content between the ids of ours."""
    import jinja2

    from babyllama.chat_template import template_for

    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    render = environment.from_string(GGUF_CHAT_TEMPLATES["babyllama-chat-v1"]).render
    template = template_for(sp_tokenizer)
    markers = {token: i for token, i in sp_tokenizer.special_ids().items() if token.startswith("<|")}
    for messages in CONVERSATIONS:
        text = render(messages=messages, add_generation_prompt=True, eos_token="</s>")
        ids = []
        for part in re.split("(<\\|[a-z]+\\|>)", text):
            ids += [markers[part]] if part in markers else sp_tokenizer.encode(part)
        assert ids == template.prompt(messages)


def test_chatglm2s_tokenizer_goes_in_with_its_dummy_space_and_special_tokens(tmp_path, chatglm_shaped):
    import jinja2

    from babyllama.chat_template import template_for

    cfg = dataclasses.replace(TINY, vocab_size=chatglm_shaped.vocab_size + 6)  # padded, as ChatGLM2-6B's is not
    ckpt = write_numpy_checkpoint(tmp_path / "step_0000001", cfg, chatglm_shaped.describe())
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "init_from": PARENT}))
    export(ckpt, tmp_path / "glm.gguf")
    meta = fields(tmp_path / "glm.gguf")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == cfg.vocab_size
    assert tokens[64789:64794] == ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
    assert set(types[64789:64794]) == {gguf.TokenType.CONTROL}
    assert tokens[64794:] == [f"[PAD{i}]" for i in range(64794, cfg.vocab_size)]
    assert set(types[64794:]) == {gguf.TokenType.UNUSED}
    assert meta["tokenizer.ggml.add_space_prefix"] is True
    assert "tokenizer.ggml.eot_token_id" not in meta
    # llama.cpp adds nothing in front: the template writes [gMASK]sop, which ChatGLM2's tokenizer adds.
    render = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(meta["tokenizer.chat_template"]).render
    template = template_for(chatglm_shaped)
    for messages in CONVERSATIONS:
        text = render(messages=messages, add_generation_prompt=True)
        assert text.startswith("[gMASK]sop")
        assert [64790, 64792, *chatglm_shaped.encode(text.removeprefix("[gMASK]sop"))] == template.prompt(messages)
    modelfile = (tmp_path / "glm.Modelfile").read_text()
    assert '{{ if eq $i 0 1 }}1{{ else if eq $i 2 3 }}2' in modelfile and 'PARAMETER stop "</s>"\n' in modelfile


# ---------------------------------------------------------------------------------------
# The command: refusals, events, atomic writes


def test_a_unigram_tokenizer_is_refused_in_one_line_and_nothing_is_written(tmp_path, sp_tokenizer_dir):
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((sp_tokenizer_dir / "tokenizer.model").read_bytes())
    model.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
    (tmp_path / "unigram").mkdir()
    (tmp_path / "unigram" / "tokenizer.model").write_bytes(model.SerializeToString())
    cfg = dataclasses.replace(TINY, vocab_size=len(model.pieces))
    ckpt = write_numpy_checkpoint(tmp_path / "step_0000001", cfg)
    done = babyllama("export", "--ckpt", ckpt, "--format", "gguf", "--out", tmp_path / "out" / "m.gguf",
                     "--tokenizer", tmp_path / "unigram")
    assert done.returncode == 2
    assert done.stderr == (f"babyllama export: error: {tmp_path / 'unigram' / 'tokenizer.model'}: a SentencePiece "
                           "unigram model; llama.cpp's SentencePiece vocabulary encodes as BPE does, so it would split "
                           "text otherwise: export --format hf instead\n")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("flags, message", [
    (["--format", "hf", "--type", "q8_0"], "--type goes with --format gguf (the hf export is float32)"),
    (["--format", "gguf"], "{ckpt}: no tokenizer to put in the GGUF, and llama.cpp needs one; give it with "
                           "--tokenizer PATH"),
])
def test_what_cannot_be_exported_is_said_in_one_line(tmp_path, flags, message):
    ckpt = write_numpy_checkpoint(tmp_path / "step_0000001")
    done = babyllama("export", "--ckpt", ckpt, "--out", tmp_path / "m.gguf", *flags)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[-1] == f"babyllama export: error: {message.format(ckpt=ckpt)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000001"]


def test_an_existing_modelfile_is_replaced_only_with_force(checkpoint, tmp_path):
    (tmp_path / "m.Modelfile").write_text("mine\n")
    done = babyllama("export", "--ckpt", checkpoint, "--format", "gguf", "--out", tmp_path / "m.gguf")
    assert done.returncode == 2
    assert done.stderr == (f"babyllama export: error: {tmp_path / 'm.Modelfile'} exists (the Ollama Modelfile of "
                           "m.gguf); give --force to replace it, or another --out\n")
    done = export(checkpoint, tmp_path / "m.gguf", "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.Modelfile", "m.gguf"]
    # A pretrained model continues text: llama.cpp's completion tool, not its chat.
    assert done.stdout.splitlines()[-1] == (f"run it with llama.cpp: llama-completion -m {tmp_path / 'm.gguf'} -no-cnv "
                                            f"-p TEXT; with Ollama: ollama create NAME -f {tmp_path / 'm.Modelfile'}")
    assert (tmp_path / "m.Modelfile").read_text().startswith("# Ollama")


def test_a_full_disk_is_said_in_one_line_and_leaves_no_file(checkpoint, small_disk):
    done = babyllama("export", "--ckpt", checkpoint, "--format", "gguf", "--type", "f32",
                     "--out", small_disk / "m.gguf")
    assert (done.returncode, done.stderr) == (2, f"babyllama export: error: No space left on device writing "
                                                 f"{small_disk / 'm.gguf'}; free some space and run it again\n")
    assert list(small_disk.iterdir()) == []


def test_sigterm_while_writing_leaves_no_temporary_file(checkpoint, tmp_path):
    """A stopped export (SIGTERM, as a service manager or `kill` sends) removes its temporary file."""
    process = subprocess.Popen([sys.executable, "-m", "babyllama", "export", "--ckpt", str(checkpoint), "--format",
                                "gguf", "--type", "f32", "--out", str(tmp_path / "m.gguf"), "--progress", "jsonl"],
                               stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if json.loads(line).get("message") == "writing m.gguf":
            process.send_signal(signal.SIGTERM)
            break
    status = process.wait(600)
    assert list(tmp_path.iterdir()) == []
    assert status == 128 + signal.SIGTERM


def test_progress_jsonl_names_each_stage_then_the_file_and_its_modelfile(checkpoint, tmp_path):
    out = tmp_path / "exports" / "m.gguf"
    done = export(checkpoint, out, "--type", "q8_0", "--progress", "jsonl")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["event"], e.get("message")) for e in events[:-1]] == [
        ("stage", "loading the checkpoint"), ("stage", "converting the weights to q8_0"), ("stage", "writing m.gguf"),
        ("stage", "writing m.Modelfile")]
    assert events[-1] == {"event": "done", "out": str(out), "format": "gguf", "checkpoint": str(checkpoint),
                          "parameters": events[-1]["parameters"], "tokenizer": str(out), "type": "q8_0",
                          "modelfile": str(tmp_path / "exports" / "m.Modelfile"), "chat_template": None,
                          "bytes": out.stat().st_size, "warnings": []}
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.Modelfile", "m.gguf"]


def test_the_app_offers_the_engines_types_with_its_default_first():
    from babyllama.export_gguf import DEFAULT_GGUF_TYPE
    from babyllama.export_gguf import GGUF_TYPES as ENGINE_TYPES
    from babyllama_tui.training.run_jobs import GGUF_TYPES

    assert sorted(GGUF_TYPES) == sorted(ENGINE_TYPES) and next(iter(GGUF_TYPES)) == DEFAULT_GGUF_TYPE


# ---------------------------------------------------------------------------------------
# llama.cpp itself


def llama(path: Path, n_ctx: int):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (which builds llama.cpp) is not installed")
    # Keys and values in float32, as ours are: llama.cpp's default float16 cache would round them.
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, type_k=0, type_v=0, n_threads=2,
                           verbose=False)


def llama_greedy(model, ids: list[int], limit: int, stop: set[int]) -> list[int]:
    """llama.cpp's greedy continuation (its own sampler at temperature 0), up to `limit` tokens or a stop id."""
    out = []
    for token in model.generate(ids, temp=0.0, reset=True):
        if token in stop or len(out) == limit:
            break
        out.append(token)
    return out


def our_greedy(ckpt: Path, tokenizer, prompt, limit: int, stop_ids=()):
    from babyllama.decode import NumpyDecoder
    from babyllama.generate import SamplingParams, generate

    loaded = load_model_for_inference(ckpt)
    return generate(NumpyDecoder(loaded.cfg, loaded.weights), tokenizer, prompt,
                    SamplingParams(max_new_tokens=limit, temperature=0.0), stop_ids=stop_ids)


# The f32 comparisons run on a random model whose weights are large enough that its greedy choices are
# decisive (test_chat's talking model): llama.cpp's float32 logits agree with ours within 1e-4 of their
# largest magnitude (2e-6 measured), far below the gap between its first and second choices.
F32_TOLERANCE = 1e-4


@pytest.mark.slow
def test_llamacpp_tokenizes_text_as_ours(exports, sp_tokenizer):
    model = llama(exports["f32"], TINY.max_seq_len)
    for text in (PROMPT, *TEXTS):
        assert model.tokenize(text.encode(), add_bos=False, special=False) == sp_tokenizer.encode(text)
        assert model.detokenize(sp_tokenizer.encode(text)).decode() == text


@pytest.mark.slow
def test_llamacpps_f32_logits_and_greedy_tokens_are_ours(chat_export, sp_tokenizer, tmp_path):
    from test_chat import ROOMY

    ckpt, path = chat_export
    model = llama(path, ROOMY.max_seq_len)
    ids = sp_tokenizer.encode(PROMPT)
    model.reset()
    model.eval(ids)
    theirs = np.array(model.scores[:len(ids)])
    from babyllama.decode import NumpyDecoder

    loaded = load_model_for_inference(ckpt)
    ours = NumpyDecoder(loaded.cfg, loaded.weights).score(np.array(ids))
    assert np.abs(theirs - ours).max() / np.abs(ours).max() < F32_TOLERANCE
    # The talking model never ends a text on its own: 48 tokens each way.
    ours = our_greedy(ckpt, sp_tokenizer, PROMPT, 48)
    assert (ours.stopped, len(ours.token_ids)) == ("length", 48)
    assert llama_greedy(model, ids, 48, {sp_tokenizer.eos_id}) == ours.token_ids
    done = babyllama("generate", "--ckpt", ckpt, "--prompt", PROMPT, "--temperature", 0, "--max-new-tokens", 48)
    assert done.returncode == 0, done.stderr
    assert done.stdout == PROMPT + ours.text + "\n\n"


@pytest.mark.slow
def test_llamacpps_chat_template_gives_our_prompt_ids_and_its_answers_are_ours(chat_export, sp_tokenizer):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from test_chat import ROOMY, chat

    from babyllama.chat_template import template_for

    ckpt, path = chat_export
    model = llama(path, ROOMY.max_seq_len)
    template = template_for(sp_tokenizer)
    # As llama-cpp-python's create_chat_completion does with the file's template: render, then tokenize
    # with the special tokens parsed and nothing added.
    formatter = Jinja2ChatFormatter(template=model.metadata["tokenizer.chat_template"], eos_token="</s>",
                                    bos_token="<s>")
    for messages in CONVERSATIONS:
        prompt = formatter(messages=messages).prompt
        assert model.tokenize(prompt.encode(), add_bos=False, special=True) == template.prompt(messages)
    # A conversation's answers, token for token: llama.cpp's greedy choices from the ids its template gives,
    # ending where ours end (a random model's answers hold lone byte pieces, which each side's text shows
    # differently, so the text of each answer taken into the conversation is ours).
    questions = ["桃园结义的是谁？", "曹操呢？", "Who won at 赤壁?"]
    messages, answers = [{"role": "system", "content": "你是说书人。"}], []
    for question in questions:
        messages.append({"role": "user", "content": question})
        prompt = model.tokenize(formatter(messages=messages).prompt.encode(), add_bos=False, special=True)
        ours = our_greedy(ckpt, sp_tokenizer, prompt, 24, template.stop_ids)
        assert llama_greedy(model, prompt, 24, set(template.stop_ids)) == ours.token_ids
        answers.append(ours.text)
        messages.append({"role": "assistant", "content": ours.text})
    status, stdout, stderr = chat(ckpt, questions, "--max-new-tokens", 24, "--system", "你是说书人。")
    assert status == 0, stderr
    assert stdout == "".join(f"{answer}\n" for answer in answers)


@pytest.mark.slow
def test_llamacpp_reads_chatglm2s_prompt_ids_from_the_rendered_template(tmp_path, chatglm_shaped):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from babyllama.chat_template import template_for

    cfg = dataclasses.replace(TINY, vocab_size=chatglm_shaped.vocab_size)
    ckpt = write_numpy_checkpoint(tmp_path / "step_0000001", cfg, chatglm_shaped.describe())
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "init_from": PARENT}))
    export(ckpt, tmp_path / "glm.gguf", "--type", "f32")
    model = llama(tmp_path / "glm.gguf", cfg.max_seq_len)
    template = template_for(chatglm_shaped)
    formatter = Jinja2ChatFormatter(template=model.metadata["tokenizer.chat_template"], eos_token="</s>",
                                    bos_token="<s>")
    for messages in CONVERSATIONS:
        prompt = formatter(messages=messages).prompt
        assert model.tokenize(prompt.encode(), add_bos=False, special=True) == template.prompt(messages)
    for text in TEXTS:
        assert model.tokenize(text.encode(), add_bos=False, special=False) == chatglm_shaped.encode(text)


# q8_0 on a model trained here: a short pretraining run, then fine-tuning on four questions, whose
# answers the model has learned by heart (test_sft_train's PAIRS, with its flags).


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, sample_jsonl, sp_tokenizer_dir):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (which builds llama.cpp) is not installed")
    from test_sft_train import PAIRS, PARENT_STEPS, SFT_FLAGS, conversation
    from test_train import SMALL_MODEL, babyllama_train

    from babyllama.prepare import prepare

    folder = tmp_path_factory.mktemp("trained")
    source = folder / "pairs.jsonl"
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(PAIRS)), 60))
    source.write_text("".join(json.dumps({"conversations": conversation(*PAIRS[i])}, ensure_ascii=False) + "\n"
                              for i in order), encoding="utf-8")
    prepare([source], "sft-conversations", sp_tokenizer_dir, folder / "pairs.bin", workers=1)
    prepare([sample_jsonl], "c4", sp_tokenizer_dir, folder / "sanguo.bin", workers=1)
    done = babyllama_train(folder / "base", "--data", str(folder / "sanguo.bin"), *SMALL_MODEL, "--max_steps",
                           str(PARENT_STEPS), "--sample_tokens", "0", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    done = babyllama_train(folder / "chat", "--init-from", str(folder / "base"), "--data", str(folder / "pairs.bin"),
                           *SFT_FLAGS, cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    for type_name in ("f32", "q8_0"):
        export(folder / "chat", folder / f"chat-{type_name}.gguf", "--type", type_name)
    return folder


@pytest.mark.slow
def test_q8_0s_greedy_answers_are_ours_from_a_quarter_of_the_bytes(fine_tuned, sp_tokenizer):
    from test_sft_train import PAIRS

    from babyllama.chat_template import template_for

    template = template_for(sp_tokenizer)
    f32, q8_0 = (fine_tuned / f"chat-{t}.gguf" for t in ("f32", "q8_0"))
    assert 0.25 < q8_0.stat().st_size / f32.stat().st_size < 0.32
    assert fields(q8_0)["tokenizer.chat_template"] == GGUF_CHAT_TEMPLATES["babyllama-chat-v1"]
    model = llama(q8_0, 64)
    for question, answer in PAIRS:
        prompt = template.prompt([{"role": "user", "content": question}])
        ours = our_greedy(fine_tuned / "chat", sp_tokenizer, prompt, 24, template.stop_ids)
        assert (ours.text, ours.stopped) == (answer, "eos")
        assert llama_greedy(model, prompt, 24, set(template.stop_ids)) == ours.token_ids
        reply = model.create_chat_completion([{"role": "user", "content": question}], temperature=0.0, max_tokens=24)
        assert reply["choices"][0]["message"]["content"] == answer

