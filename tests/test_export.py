"""`babyllama export`: the Hugging Face folder through transformers, llama2.c's model.bin, and reading back."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from test_generate import TINY, relative_error, write_checkpoint

from babyllama.checkpoint import load_model_for_inference
from babyllama.config import ModelConfig
from babyllama.decode import NumpyDecoder
from babyllama.errors import UserError
from babyllama.hf import (
    halves_to_pairs,
    model_config_from_hf,
    pairs_to_halves,
)

TEXTS = ("话说天下大势，分久必合，合久必分。", "  two  spaces and 2024年 ☃\n第二行\t𝄞")


def babyllama(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sp_tokenizer):
    """A checkpoint folder of a random tiny model with grouped-query attention, and the model."""
    folder = tmp_path_factory.mktemp("export") / "step_0000007"
    return folder, write_checkpoint(folder, TINY, sp_tokenizer, seed=7)


@pytest.fixture(scope="module")
def hf_folder(checkpoint, sp_tokenizer):
    """The checkpoint exported in this process (the command line's own path is tested below).

    Slow to make (transformers converts the tokenizer, importing torch): the tests using it are marked slow.
    """
    from babyllama.export import export_hf

    return export_hf(load_model_for_inference(checkpoint[0]), checkpoint[0].parent / "hf", sp_tokenizer)


def random_tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TINY.vocab_size, n)


# ---------------------------------------------------------------------------------------
# The renaming and the rotary layout


def test_halves_to_pairs_undoes_pairs_to_halves():
    weight = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    np.testing.assert_array_equal(halves_to_pairs(pairs_to_halves(weight, 8), 8), weight)


def test_pairs_become_halves_within_each_head():
    rows = np.arange(8, dtype=np.float32)[:, None]  # two heads of head_dim 4: pairs (0,1) (2,3) | (4,5) (6,7)
    assert pairs_to_halves(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


# ---------------------------------------------------------------------------------------
# Hugging Face


@pytest.mark.slow
def test_hf_export_writes_a_complete_folder_and_nothing_else(hf_folder):
    assert {p.name for p in hf_folder.iterdir()} == {
        "config.json", "model.safetensors", "generation_config.json", "README.md", "tokenizer.model",
        "babyllama_tokenizer.json", "tokenizer.json", "tokenizer_config.json"}
    assert not [p for p in hf_folder.parent.iterdir() if p.name.startswith(".")]
    config = json.loads((hf_folder / "config.json").read_text())
    assert (config["model_type"], config["tie_word_embeddings"], config["intermediate_size"]) == \
        ("llama", True, TINY.hidden_dim)
    assert (config["num_key_value_heads"], config["rms_norm_eps"], config["max_position_embeddings"]) == \
        (TINY.n_kv_heads, TINY.norm_eps, TINY.max_seq_len)
    assert json.loads((hf_folder / "generation_config.json").read_text())["eos_token_id"] == [2, 6]  # <|end|> too


@pytest.mark.slow
def test_transformers_loads_the_export_and_its_logits_match_ours(checkpoint, hf_folder):
    torch = pytest.importorskip("torch", reason="torch (the dev extra) runs transformers' Llama")
    import mindspore as ms
    from transformers import LlamaForCausalLM

    _, model = checkpoint
    theirs_model = LlamaForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32).eval()
    tokens = random_tokens(TINY.max_seq_len, seed=1)
    with torch.no_grad():
        theirs = theirs_model(torch.tensor(tokens[None])).logits[0].numpy()
    model.set_train(False)
    ours = model(ms.Tensor(tokens[None].astype(np.int32))).asnumpy()[0]
    assert relative_error(theirs, ours) < 1e-4


@pytest.mark.slow
def test_transformers_tokenizer_of_the_export_encodes_and_decodes_as_ours(hf_folder, sp_tokenizer):
    pytest.importorskip("torch", reason="transformers' tokenizer conversion is checked with the dev extra")
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(hf_folder))
    for text in TEXTS:
        ids = sp_tokenizer.encode(text)
        assert theirs.encode(text, add_special_tokens=False) == ids
        assert theirs.decode(ids) == text
    assert theirs.eos_token_id == sp_tokenizer.eos_id


@pytest.mark.slow
def test_the_export_reads_back_to_the_same_weights_and_tokenizer(checkpoint, hf_folder, sp_tokenizer):
    original = load_model_for_inference(checkpoint[0])
    back = load_model_for_inference(hf_folder)
    assert back.cfg.hidden_dim == original.cfg.hidden_dim
    assert (back.cfg.n_kv_heads, back.cfg.max_seq_len, back.cfg.norm_eps) == (2, TINY.max_seq_len, TINY.norm_eps)
    for name, weight in original.weights.items():
        np.testing.assert_array_equal(back.weights[name], weight, err_msg=name)
    from babyllama.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(back.tokenizer_path)
    assert (tokenizer.kind, tokenizer.fingerprint) == ("sentencepiece", sp_tokenizer.fingerprint)


@pytest.mark.slow
def test_generate_on_the_export_gives_the_checkpoints_greedy_tokens(checkpoint, hf_folder):
    outputs = []
    for ckpt in (checkpoint[0], hf_folder):
        done = babyllama("generate", "--ckpt", ckpt, "--prompt", "话说天下大势", "--temperature", 0,
                         "--max-new-tokens", 24)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > len("话说天下大势") + 2


# Conversations ending with a question: a system turn, several turns, Chinese and English, contents
# with spaces and newlines at either end and inside, a character made of byte tokens, an empty one.
CONVERSATIONS = (
    [{"role": "user", "content": "桃园结义的是谁？"}],
    [{"role": "system", "content": "你是说书人。"}, {"role": "user", "content": "桃园结义的是谁？"},
     {"role": "assistant", "content": "刘备、关羽、张飞。"}, {"role": "user", "content": "谁年纪最大？"}],
    [{"role": "system", "content": " Tell  tales.\n"}, {"role": "user", "content": "  two  spaces\n\n第二行\t☃ 𝄞 "},
     {"role": "assistant", "content": "\n答：\n 好 "}, {"role": "user", "content": ""},
     {"role": "assistant", "content": " "}, {"role": "user", "content": "Who won at 赤壁 in 208?"}],
)
ANSWER = {"role": "assistant", "content": "曹操 败走 华容道。\n"}


@pytest.mark.slow
def test_the_exported_chat_template_gives_the_ids_of_ours(hf_folder, sp_tokenizer):
    pytest.importorskip("torch", reason="transformers' tokenizer conversion is checked with the dev extra")
    from transformers import AutoTokenizer

    from babyllama.chat_template import template_for
    from babyllama.hf import HF_CHAT_TEMPLATES
    from babyllama.tokenizer import CHAT_TOKENS

    config = json.loads((hf_folder / "tokenizer_config.json").read_text())
    assert config["chat_template"] == HF_CHAT_TEMPLATES["babyllama-chat-v1"]
    theirs = AutoTokenizer.from_pretrained(str(hf_folder))
    specials = sp_tokenizer.special_ids()
    for token in CHAT_TOKENS:
        assert token in theirs.all_special_tokens
        assert theirs.convert_tokens_to_ids(token) == specials[token]
    template = template_for(sp_tokenizer)
    for messages in CONVERSATIONS:
        assert theirs.apply_chat_template(messages, add_generation_prompt=True)["input_ids"] == \
            template.prompt(messages)
        # A whole conversation: what fine-tuning trains on, end-of-text included.
        assert theirs.apply_chat_template([*messages, ANSWER])["input_ids"] == template.encode([*messages, ANSWER])[0]
    generation = json.loads((hf_folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [sp_tokenizer.eos_id, specials["<|end|>"]]


@pytest.mark.slow
def test_transformers_greedy_generate_on_the_export_answers_as_babyllama_chat(tmp_path, sp_tokenizer):
    torch = pytest.importorskip("torch", reason="torch (the dev extra) runs transformers' Llama")
    from test_chat import ROOMY, answer, chat, write_talking_checkpoint
    from transformers import AutoTokenizer, LlamaForCausalLM

    talking = write_talking_checkpoint(tmp_path / "step_0000003", sp_tokenizer, ROOMY)
    out = tmp_path / "hf"
    done = babyllama("export", "--ckpt", talking, "--format", "hf", "--out", out)
    assert done.returncode == 0, done.stderr
    model = LlamaForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    questions = ["桃园结义的是谁？", "曹操呢？", "Who won at 赤壁?"]
    messages, answers = [{"role": "system", "content": "你是说书人。"}], []
    for question in questions:
        messages.append({"role": "user", "content": question})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        with torch.no_grad():
            generated = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       max_new_tokens=24, do_sample=False)[0, len(ids):].tolist()
        ours = answer(talking, messages, 24)
        stop = [tokenizer.convert_tokens_to_ids("<|end|>")] if ours.stopped == "eos" else []
        assert generated == ours.token_ids + stop
        answers.append(tokenizer.decode(ours.token_ids, skip_special_tokens=True))
        messages.append({"role": "assistant", "content": answers[-1]})
    assert "eos" in {answer(talking, messages[:i], 24).stopped for i in (2, 4, 6)}
    for ckpt in (talking, out):
        status, stdout, stderr = chat(ckpt, questions, "--max-new-tokens", 24, "--system", "你是说书人。")
        assert status == 0, stderr
        assert stdout == "".join(f"{text}\n" for text in answers)


@pytest.mark.slow
def test_a_chatglm2_export_writes_its_conversation_text_as_the_chat_template(tmp_path, chatglm_shaped):
    import dataclasses

    from numpy_checkpoints import SMALL, write_numpy_checkpoint
    from transformers.utils.chat_template_utils import render_jinja_template

    from babyllama.chat_template import template_for
    from babyllama.export import export_hf

    cfg = dataclasses.replace(SMALL, vocab_size=chatglm_shaped.vocab_size)
    loaded = load_model_for_inference(write_numpy_checkpoint(tmp_path / "step_0000001", cfg,
                                                             chatglm_shaped.describe()))
    export_hf(loaded, tmp_path / "hf", chatglm_shaped)
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "ChatGLMTokenizer"
    template = template_for(chatglm_shaped)
    specials = chatglm_shaped.special_ids()
    for messages in CONVERSATIONS:
        (text,), _ = render_jinja_template([messages], chat_template=config["chat_template"],
                                           add_generation_prompt=True)
        # ChatGLM2's tokenizer puts [gMASK]sop in front of the text it encodes with special tokens.
        assert [specials["[gMASK]"], specials["sop"], *chatglm_shaped.encode(text)] == template.prompt(messages)
    assert json.loads((tmp_path / "hf" / "generation_config.json").read_text())["eos_token_id"] == 2


def test_an_export_whose_recorded_chat_template_is_not_its_tokenizers_warns_and_has_none(tmp_path, chatglm_shaped,
                                                                                        sp_tokenizer):
    import dataclasses

    from numpy_checkpoints import SMALL, write_numpy_checkpoint

    from babyllama.chat_template import template_for
    from babyllama.export import export_hf

    cfg = dataclasses.replace(SMALL, vocab_size=chatglm_shaped.vocab_size)
    folder = write_numpy_checkpoint(tmp_path / "step_0000001", cfg, chatglm_shaped.describe())
    loaded = load_model_for_inference(folder)
    loaded.config["chat_template"] = template_for(sp_tokenizer).describe()
    warnings = []
    export_hf(loaded, tmp_path / "hf", chatglm_shaped, warn=warnings.append)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{folder / 'config.json'}: records the chat template 'babyllama-chat-v1'")
    assert warnings[0].endswith("; the export has no chat template")
    assert "chat_template" not in json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())


@pytest.mark.slow
def test_eval_reads_the_export_too(checkpoint, hf_folder, tmp_path, sp_tokenizer):
    from test_eval import write_token_file

    data = write_token_file(tmp_path / "t.bin", random_tokens(3 * 16 + 1, seed=2), sp_tokenizer.describe())
    losses = []
    for ckpt in (checkpoint[0], hf_folder):
        done = babyllama("eval", "--ckpt", ckpt, "--data", data, "--seq-len", 16, "--json")
        assert done.returncode == 0, done.stderr
        losses.append(json.loads(done.stdout)["loss"])
    assert losses[0] == losses[1]


def harness_letter_scores(model, tokenizer, description: str, examples, question, shots: int, max_length: int):
    """The four letters' log-likelihoods as lm-evaluation-harness computes them for its ceval-valid
    tasks (its prompt written out here, its request split and its left truncation), through
    transformers' tokenizer and model; examples are dropped, last first, while the prompt does not fit."""
    import torch

    def text(row) -> str:
        return f"{row[0].strip()}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\n答案："

    for k in range(shots, -1, -1):
        context = description + "".join(f"{text(e)} {e[5]}\n\n" for e in examples[:k]) + text(question)
        context_ids = tokenizer.encode(context, add_special_tokens=False)
        continuations = [tokenizer.encode(f"{context} {letter}", add_special_tokens=False)[len(context_ids):]
                         for letter in "ABCD"]
        if len(context_ids) + max(map(len, continuations)) - 1 <= max_length or k == 0:
            break
    scores = []
    for continuation in continuations:
        inputs = (context_ids + continuation)[-(max_length + 1):][:-1]
        with torch.no_grad():
            logits = model(torch.tensor([inputs])).logits[0].double()
        log_probs = torch.log_softmax(logits, dim=-1)
        start = len(inputs) - len(continuation)
        scores.append(sum(float(log_probs[start + j, token]) for j, token in enumerate(continuation)))
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 1])
def test_benchmark_scores_of_the_export_through_transformers_equal_ours(checkpoint, hf_folder, tmp_path, shots):
    torch = pytest.importorskip("torch", reason="torch (the dev extra) runs transformers' Llama")
    from test_mcq import write_ceval
    from transformers import AutoTokenizer, LlamaForCausalLM

    from babyllama.decode import NumpyDecoder
    from babyllama.mcq import TASKS, load_subjects
    from babyllama.mcq.scoring import score_questions
    from babyllama.tokenizer import load_tokenizer

    folder = write_ceval(tmp_path / "ceval", {"law": "ABCDAB", "logic": "DCBADC", "art_studies": "AACCBD"}, dev=2)
    subjects = load_subjects(TASKS["ceval"], folder, shots=shots)
    theirs_model = LlamaForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32).eval()
    theirs_tokenizer = AutoTokenizer.from_pretrained(str(hf_folder))
    theirs = []
    for subject in subjects:
        description = f"以下是中国关于{subject.title}的单项选择题，请选出其中的正确答案。\n\n"
        examples = [(e.question, *e.choices, e.answer) for e in subject.examples]
        for q in subject.questions:
            theirs.append(harness_letter_scores(theirs_model, theirs_tokenizer, description, examples,
                                                (q.question, *q.choices, q.answer), shots, TINY.max_seq_len))
    loaded = load_model_for_inference(hf_folder)
    ours = score_questions(NumpyDecoder(loaded.cfg, loaded.weights), load_tokenizer(loaded.tokenizer_path),
                           TASKS["ceval"], subjects, shots)
    np.testing.assert_allclose([s.log_likelihoods for s in ours], theirs, rtol=0, atol=1e-4)
    predicted = ["ABCD"[int(np.argmax(scores))] for scores in theirs]
    assert [s.predicted for s in ours] == predicted
    answers = [q.answer for subject in subjects for q in subject.questions]
    accuracy = sum(p == a for p, a in zip(predicted, answers)) / len(answers)
    for ckpt in (hf_folder, checkpoint[0]):
        done = babyllama("eval", "--ckpt", ckpt, "--task", "ceval", "--data", folder, "--shots", shots, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["accuracy"] == accuracy


@pytest.mark.slow
def test_a_llama_saved_by_transformers_reads_in_with_matching_logits(tmp_path):
    """Any Llama of a shape we have: saved by transformers itself, sharded, in bfloat16."""
    torch = pytest.importorskip("torch", reason="torch (the dev extra) makes the reference Llama")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=48,
                         rms_norm_eps=1e-6, rope_theta=500000.0, tie_word_embeddings=True, initializer_range=0.2)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(str(tmp_path / "llama"), max_shard_size="200KB")
    assert (tmp_path / "llama" / "model.safetensors.index.json").is_file()
    loaded = load_model_for_inference(tmp_path / "llama")
    assert (loaded.cfg.hidden_dim, loaded.cfg.kv_heads, loaded.cfg.rope_theta) == (256, 3, 500000.0)
    # The reference reads the same bfloat16 weights into float32, as we do.
    theirs = LlamaForCausalLM.from_pretrained(str(tmp_path / "llama"), dtype=torch.float32).eval()
    tokens = np.random.default_rng(3).integers(0, 300, 48)
    with torch.no_grad():
        reference = theirs(torch.tensor(tokens[None])).logits[0].numpy()
    ours = NumpyDecoder(loaded.cfg, loaded.weights).score(tokens)
    assert relative_error(ours, reference) < 1e-4


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2"}, "model_type is 'gpt2'"),
    ({"intermediate_size": 100}, "intermediate_size 100"),
    ({"attention_bias": True}, "biases"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "scaled"),
])
def test_a_llama_of_another_shape_is_refused_naming_what_differs(change, message, tmp_path):
    from babyllama.hf import hf_config

    config = {**hf_config(TINY, None), **change}
    with pytest.raises(UserError, match=message):
        model_config_from_hf(config, tmp_path / "config.json")


@pytest.mark.slow
def test_the_command_replaces_an_existing_output_only_with_force(checkpoint, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    done = babyllama("export", "--ckpt", checkpoint[0], "--format", "hf", "--out", out)
    assert done.returncode == 2
    assert done.stderr.strip() == f"babyllama export: error: {out} exists; give --force to replace it, " \
        "or another --out"
    done = babyllama("export", "--ckpt", checkpoint[0], "--format", "hf", "--out", out, "--force")
    assert done.returncode == 0, done.stderr
    assert load_model_for_inference(out).cfg == load_model_for_inference(checkpoint[0]).cfg
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


@pytest.mark.parametrize("format_name, name", [("hf", "hf"), ("llama2c", "model.bin")])
def test_a_full_disk_is_said_in_one_line_naming_the_export_and_leaves_nothing(checkpoint, small_disk,
                                                                              format_name, name):
    """safetensors raises its own error type on a full disk, and a plain write() names no file:
    both end in the command's one line naming what was asked for."""
    done = babyllama("export", "--ckpt", checkpoint[0], "--format", format_name, "--out", small_disk / name)
    assert (done.returncode, done.stderr.splitlines()[-1]) == (
        2, f"babyllama export: error: No space left on device writing {small_disk / name}; "
        "free some space and run it again")
    assert "Traceback" not in done.stderr
    assert list(small_disk.iterdir()) == []


# ---------------------------------------------------------------------------------------
# llama2.c


def read_llama2c(path) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """A version-0 model.bin as llama2.c's run.c reads it: header, then tensors of known sizes."""
    data = path.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = header = struct.unpack("<7i", data[:28])
    head_dim = dim // n_heads
    sizes = [vocab_size * dim]
    for per_layer in (dim, n_heads * head_dim * dim, n_kv_heads * head_dim * dim, n_kv_heads * head_dim * dim,
                      dim * n_heads * head_dim, dim, hidden * dim, dim * hidden, hidden * dim):
        sizes += [per_layer] * n_layers
    sizes += [dim, seq_len * head_dim // 2, seq_len * head_dim // 2]
    floats = np.frombuffer(data[28:], dtype="<f4")
    assert floats.size == sum(sizes), "the file holds more or fewer floats than run.c reads"
    offsets = np.cumsum([0, *sizes])
    return header, [floats[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def read_llama2c_tokenizer(path) -> list[bytes]:
    """The pieces of a llama2.c tokenizer.bin, read as run.c's build_tokenizer does."""
    data = path.read_bytes()
    max_length, = struct.unpack("<i", data[:4])
    pieces, at = [], 4
    while at < len(data):
        _, length = struct.unpack("<fi", data[at:at + 8])
        pieces.append(data[at + 8:at + 8 + length])
        assert 0 < length <= max_length
        at += 8 + length
    return pieces


def run_c_decode(pieces: list[bytes], ids: list[int]) -> str:
    """Text of `ids` as run.c's decode gives it: byte pieces <0xXX> are that byte."""
    out = b""
    for i in ids:
        piece = pieces[i]
        byte = re.fullmatch(rb"<0x([0-9A-F]{2})>", piece)
        out += bytes([int(byte.group(1), 16)]) if byte else piece
    return out.decode("utf-8")


def test_llama2c_export_has_the_seeds_header_and_tensor_order(checkpoint, tmp_path):
    out = tmp_path / "model.bin"
    done = babyllama("export", "--ckpt", checkpoint[0], "--format", "llama2c", "--out", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.tokenizer.bin"]
    header, tensors = read_llama2c(out)
    assert header == (TINY.dim, TINY.hidden_dim, TINY.n_layers, TINY.n_heads, TINY.n_kv_heads, TINY.vocab_size,
                      TINY.max_seq_len)
    weights = load_model_for_inference(checkpoint[0]).weights
    order = ["tok_embeddings.weight"]
    for part in ("attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo", "ffn_norm",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"):
        order += [f"layers.{i}.{part}.weight" for i in range(TINY.n_layers)]
    order.append("norm.weight")
    for name, tensor in zip(order, tensors):
        np.testing.assert_array_equal(tensor, weights[name].reshape(-1), err_msg=name)
    # The rotary tables, position p and pair i at angle p / 10000^(2i / head_dim).
    cos, sin = (t.reshape(TINY.max_seq_len, TINY.head_dim // 2) for t in tensors[-2:])
    angle = 5 / 10000 ** (2 * 3 / TINY.head_dim)
    assert (cos[5, 3], sin[5, 3]) == pytest.approx((np.cos(angle), np.sin(angle)), rel=1e-6)


def test_llama2c_tokenizer_has_a_piece_per_model_id_and_decodes_as_ours(checkpoint, tmp_path, sp_tokenizer):
    out = tmp_path / "model.bin"
    assert babyllama("export", "--ckpt", checkpoint[0], "--format", "llama2c", "--out", out).returncode == 0
    pieces = read_llama2c_tokenizer(tmp_path / "model.tokenizer.bin")
    assert len(pieces) == TINY.vocab_size
    assert (pieces[1], pieces[2]) == (b"\n<s>\n", b"\n</s>\n")
    for text in TEXTS:
        assert run_c_decode(pieces, sp_tokenizer.encode(text)) == text


def test_llama2c_refuses_a_rope_theta_run_c_cannot_use(tmp_path):
    cfg = ModelConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2, max_seq_len=4, rope_theta=500000.0)
    from babyllama.checkpoint import LoadedModel
    from babyllama.export import export_llama2c

    loaded = LoadedModel(cfg, {}, tmp_path / "ckpt", {})
    with pytest.raises(UserError, match="rope_theta 500000"):
        export_llama2c(loaded, tmp_path / "model.bin")
    assert not list(tmp_path.iterdir())


def test_progress_jsonl_names_each_stage_then_what_was_written(tmp_path):
    from numpy_checkpoints import write_numpy_checkpoint

    folder = write_numpy_checkpoint(tmp_path / "step_0000005")
    out = tmp_path / "exports" / "small.bin"
    done = babyllama("export", "--ckpt", folder, "--format", "llama2c", "--out", out, "--progress", "jsonl")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["event"], e.get("message")) for e in events[:-1]] == [
        ("stage", "loading the checkpoint"), ("stage", "writing small.bin")]
    assert events[-1] == {"event": "done", "out": str(out), "format": "llama2c", "checkpoint": str(folder),
                          "parameters": events[-1]["parameters"], "tokenizer": None,
                          "warnings": [f"{folder}: names no tokenizer; the export has none (give one with "
                                       "--tokenizer PATH)"]}
    assert out.is_file()
