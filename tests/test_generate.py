"""Sampling, the numpy decoder against the MindSpore model, the generation loop and `babyllama generate`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from babyllama.checkpoint import load_model_for_inference
from babyllama.config import ModelConfig
from babyllama.decode import NumpyDecoder
from babyllama.errors import UserError
from babyllama.generate import Piece, generate, generate_pieces, read_prompt_file
from babyllama.sampling import SamplingParams, apply_repetition_penalty, choose_token, filter_top_k, filter_top_p

# Grouped-query attention (2 key/value heads for 4 query heads) so the decoder's head grouping is checked.
TINY = ModelConfig(vocab_size=2000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)


def write_checkpoint(folder, cfg: ModelConfig, tokenizer, seed: int = 0):
    """A checkpoint folder as babyllama train writes one: model.safetensors + config.json."""
    import mindspore as ms

    from babyllama.model import Transformer

    model = Transformer(cfg, seed=seed)
    folder.mkdir(parents=True)
    ms.save_checkpoint(model.trainable_params(), str(folder / "model.safetensors"), format="safetensors")
    config = {"model": dataclasses.asdict(cfg), "train": {}, "tokenizer": tokenizer.describe(), "preset": None}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, sp_tokenizer):
    """A run directory whose latest checkpoint holds a random tiny model; the model rides along."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    model = write_checkpoint(run / "checkpoints" / "step_0000010", TINY, sp_tokenizer)
    (run / "checkpoints" / "latest").write_text("step_0000010\n")
    return run, model


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


# ---------------------------------------------------------------------------------------
# Sampling, pure numpy


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_ids():
    logits = np.array([2.0, -1.0, 0.5, -3.0, 4.0])
    out = apply_repetition_penalty(logits, [0, 1, 1, 3], 2.0)
    np.testing.assert_array_equal(out, [1.0, -2.0, 0.5, -6.0, 4.0])
    np.testing.assert_array_equal(logits, [2.0, -1.0, 0.5, -3.0, 4.0])


def test_top_k_keeps_the_k_largest_and_top_p_the_smallest_set_reaching_p():
    logits = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    assert np.isfinite(filter_top_k(logits, 2)).tolist() == [False, True, False, True]
    assert np.isfinite(filter_top_p(logits, 0.65)).tolist() == [False, True, False, True]
    assert np.isfinite(filter_top_p(logits, 0.75)).tolist() == [False, True, True, True]
    assert np.isfinite(filter_top_p(logits, 1e-9)).tolist() == [False, True, False, False]


def test_greedy_and_filters_down_to_one_token_give_the_arg_max():
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=50)
        best = int(np.argmax(logits))
        assert choose_token(logits, SamplingParams(temperature=0.0), rng) == best
        assert choose_token(logits, SamplingParams(temperature=1.5, top_k=1), rng) == best
        assert choose_token(logits, SamplingParams(temperature=1.5, top_p=1e-9), rng) == best


def test_penalty_applies_before_greedy_choice():
    logits = np.array([3.0, 2.0, 1.0])
    assert choose_token(logits, SamplingParams(temperature=0.0, repetition_penalty=2.0), None, [0]) == 1


def test_sampling_follows_the_probabilities():
    probs = np.array([0.1, 0.6, 0.3])
    rng = np.random.default_rng(1)
    draws = [choose_token(np.log(probs), SamplingParams(temperature=1.0), rng) for _ in range(3000)]
    counts = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(counts, probs, atol=0.04)


@pytest.mark.parametrize("field, value", [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5),
                                          ("top_k", -2), ("max_new_tokens", 0), ("repetition_penalty", 0.0)])
def test_bad_sampling_params_are_user_errors(field, value):
    with pytest.raises(UserError, match=field):
        SamplingParams(**{field: value}).validate()


# ---------------------------------------------------------------------------------------
# The numpy decoder against the MindSpore training model


def test_numpy_decoder_matches_the_mindspore_model_at_prefill_and_each_decode_step(run_dir):
    import mindspore as ms

    run, model = run_dir
    loaded = load_model_for_inference(run)
    decoder = NumpyDecoder(loaded.cfg, loaded.weights)
    tokens = np.random.default_rng(5).integers(0, TINY.vocab_size, 20)
    model.set_train(False)
    reference = model(ms.Tensor(tokens[None].astype(np.int32))).asnumpy()[0]
    split = 12
    assert relative_error(decoder.prefill(tokens[:split]), reference[split - 1]) < 1e-5
    for position in range(split, len(tokens)):
        assert relative_error(decoder.decode(int(tokens[position])), reference[position]) < 1e-5
    # A second prefill starts over: stale cache slots beyond the prompt must not leak in.
    assert relative_error(decoder.prefill(tokens[:5]), reference[4]) < 1e-5


@pytest.mark.slow
def test_mindspore_backend_gives_the_numpy_decoders_logits(run_dir):
    from babyllama.decode import MindSporeDecoder

    loaded = load_model_for_inference(run_dir[0])
    ours, theirs = NumpyDecoder(loaded.cfg, loaded.weights), MindSporeDecoder(loaded.cfg, loaded.weights)
    prompt = [5, 9, 100, 7]
    assert relative_error(ours.prefill(prompt), theirs.prefill(prompt)) < 1e-5
    for token in (3, 1999, 42):
        assert relative_error(ours.decode(token), theirs.decode(token)) < 1e-5


def test_checkpoint_folder_and_run_directory_load_the_same_checkpoint(run_dir):
    run, _ = run_dir
    assert load_model_for_inference(run).checkpoint == load_model_for_inference(
        run / "checkpoints" / "step_0000010").checkpoint


def test_a_folder_without_checkpoints_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="neither a checkpoint"):
        load_model_for_inference(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="no complete checkpoint"):
        load_model_for_inference(tmp_path)


# ---------------------------------------------------------------------------------------
# The generation loop


class ScriptedDecoder:
    """Logits that make `script` the greedy continuation, one token per step."""

    def __init__(self, script, vocab_size=2000, max_seq_len=64):
        self.script = list(script)
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.step = 0

    def _logits(self):
        logits = np.zeros(self.vocab_size, np.float32)
        logits[self.script[min(self.step, len(self.script) - 1)]] = 10.0
        self.step += 1
        return logits

    def prefill(self, ids):
        self.step = 0
        return self._logits()

    def decode(self, token):
        return self._logits()


def test_generation_stops_at_eos_without_emitting_it(sp_tokenizer):
    words = sp_tokenizer.encode("曹操")
    decoder = ScriptedDecoder(words + [sp_tokenizer.eos_id] + words)
    result = generate(decoder, sp_tokenizer, "话说", SamplingParams(temperature=0.0, max_new_tokens=50))
    assert result.stopped == "eos"
    assert result.token_ids == words
    assert result.text == "曹操"


def test_generation_from_ids_stops_at_a_stop_id_without_emitting_it(sp_tokenizer):
    words = sp_tokenizer.encode("曹操")
    end = sp_tokenizer.special_ids()["<|end|>"]
    params = SamplingParams(temperature=0.0, max_new_tokens=2 * len(words) + 1)
    result = generate(ScriptedDecoder(words + [end] + words), sp_tokenizer, [4, 5], params, stop_ids={end})
    assert (result.stopped, result.token_ids, result.text, result.prompt_tokens) == ("eos", words, "曹操", 2)
    result = generate(ScriptedDecoder(words + [end] + words), sp_tokenizer, [4, 5], params)
    assert (result.stopped, result.token_ids, result.text) == ("length", words + [end] + words, "曹操曹操")


def test_generation_stops_at_the_token_budget_and_can_be_cancelled(sp_tokenizer):
    word = sp_tokenizer.encode("天下")[0]
    result = generate(ScriptedDecoder([word]), sp_tokenizer, "话说", SamplingParams(temperature=0.0, max_new_tokens=7))
    assert (result.stopped, len(result.token_ids)) == ("length", 7)
    asked = []
    result = generate(ScriptedDecoder([word]), sp_tokenizer, "话说", SamplingParams(temperature=0.0),
                      should_stop=lambda: asked.append(1) or len(asked) > 3)
    assert (result.stopped, len(result.token_ids)) == ("cancelled", 3)


def test_a_full_context_stops_with_its_own_reason(sp_tokenizer):
    word = sp_tokenizer.encode("天下")[0]
    prompt_tokens = len(sp_tokenizer.encode("话说"))
    room = 64 - prompt_tokens
    result = generate(ScriptedDecoder([word], max_seq_len=64), sp_tokenizer, "话说",
                      SamplingParams(temperature=0.0, max_new_tokens=1000))
    assert (result.stopped, len(result.token_ids), result.prompt_tokens) == ("context", room, prompt_tokens)
    result = generate(ScriptedDecoder([word], max_seq_len=64), sp_tokenizer, "话说",
                      SamplingParams(temperature=0.0, max_new_tokens=room))
    assert (result.stopped, len(result.token_ids)) == ("length", room)


def streamed(pieces) -> tuple[list[Piece], object]:
    """(the pieces, the Generation) of a generate_pieces generator."""
    given = []
    while True:
        try:
            given.append(next(pieces))
        except StopIteration as done:
            return given, done.value


def byte_ids(tokenizer, text: str) -> list[int]:
    return [tokenizer._sp.piece_to_id(f"<0x{byte:02X}>") for byte in text.encode("utf-8")]


def test_a_character_split_over_byte_tokens_streams_whole_once_its_last_byte_comes(sp_tokenizer):
    character = "龘"  # far outside a vocabulary trained on 三国演义: only byte pieces spell it
    assert len(sp_tokenizer.encode(character)) > 1
    script = byte_ids(sp_tokenizer, character) + sp_tokenizer.encode("天下") + [sp_tokenizer.eos_id]
    pieces, result = streamed(generate_pieces(ScriptedDecoder(script), sp_tokenizer, "话说",
                                              SamplingParams(temperature=0.0, max_new_tokens=50)))
    assert pieces[0] == Piece(character, 3)
    assert "".join(piece.text for piece in pieces) == result.text == character + "天下"
    assert pieces[-1].tokens == len(result.token_ids) == len(script) - 1


def test_a_lone_byte_token_the_model_draws_decodes_to_a_replacement_character(sp_tokenizer):
    # What a high temperature does: a character's first byte, then a token that cannot finish it.
    script = byte_ids(sp_tokenizer, "龘")[:1] + sp_tokenizer.encode("天下") + [sp_tokenizer.eos_id]
    pieces, result = streamed(generate_pieces(ScriptedDecoder(script), sp_tokenizer, "话说",
                                              SamplingParams(temperature=0.0, max_new_tokens=50)))
    assert "".join(piece.text for piece in pieces) == result.text == sp_tokenizer.decode(result.token_ids)
    assert result.text == "\ufffd天下"


def test_a_long_prompt_is_cut_from_the_left_with_a_warning(sp_tokenizer):
    warnings = []
    decoder = ScriptedDecoder([sp_tokenizer.encode("天下")[0]], max_seq_len=64)
    prompt = "话说天下大势，分久必合，合久必分。" * 10
    result = generate(decoder, sp_tokenizer, prompt, SamplingParams(temperature=0.0, max_new_tokens=16),
                      warn=warnings.append)
    assert result.prompt_tokens == 64 - 16
    assert len(warnings) == 1 and "keeping its last 48" in warnings[0]
    assert len(result.token_ids) == 16


def test_greedy_is_deterministic_and_seeds_decide_samples(run_dir, sp_tokenizer):
    loaded = load_model_for_inference(run_dir[0])
    decoder = NumpyDecoder(loaded.cfg, loaded.weights)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=20)
    assert generate(decoder, sp_tokenizer, "话说", greedy).token_ids == \
        generate(decoder, sp_tokenizer, "话说", greedy).token_ids
    sampled = SamplingParams(temperature=1.0, max_new_tokens=20, seed=3)
    first = generate(decoder, sp_tokenizer, "话说", sampled).token_ids
    assert generate(decoder, sp_tokenizer, "话说", sampled).token_ids == first
    assert generate(decoder, sp_tokenizer, "话说", dataclasses.replace(sampled, seed=4)).token_ids != first


def test_streamed_pieces_are_whole_characters_joining_to_the_decoded_text(run_dir, sp_tokenizer):
    loaded = load_model_for_inference(run_dir[0])
    decoder = NumpyDecoder(loaded.cfg, loaded.weights)
    # A random model at temperature 1 draws byte pieces often; several seeds make a split likely.
    for seed in range(5):
        params = SamplingParams(temperature=1.0, max_new_tokens=40, seed=seed)
        pieces, result = streamed(generate_pieces(decoder, sp_tokenizer, "话说", params))
        texts = [piece.text for piece in pieces]
        assert "".join(texts) == result.text == sp_tokenizer.decode(result.token_ids)
        assert not any(text.endswith("\ufffd") for text in texts[:-1])
        counts = [piece.tokens for piece in pieces]
        assert counts == sorted(counts) and 1 <= counts[0] and counts[-1] <= len(result.token_ids)


def test_prompt_file_reads_lines_and_question_fields(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text('话说\n\n{"question": "曹操"}\n', encoding="utf-8")
    assert read_prompt_file(path) == ["话说", "曹操"]
    path.write_text('话说\n{"answer": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"prompts.txt:2: .*question"):
        read_prompt_file(path)


# ---------------------------------------------------------------------------------------
# The command


def babyllama(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "babyllama", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_generate_command_writes_json_lines_of_answers_atomically(run_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"question": "话说"}\n曹操\n', encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    done = babyllama("generate", "--ckpt", str(run_dir[0]), "--prompt-file", str(prompts), "--out", str(out),
                     "--temperature", "0", "--max-new-tokens", "8")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == ["话说", "曹操"]
    assert all(isinstance(r["answer"], str) and r["answer"] for r in records)
    assert "tokens/s" in done.stderr
    assert sorted(tmp_path.iterdir()) == sorted([prompts, out])


def test_generate_command_streams_the_seed_prompts_by_default(run_dir):
    done = babyllama("generate", "--ckpt", str(run_dir[0]), "--max-new-tokens", "4", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "床前明月光" in done.stdout and "请你讲一个童话故事：" in done.stdout and "《小王子》" in done.stdout
    assert done.stderr.count("tokens/s") == 3


def test_generate_command_says_when_the_context_is_full(run_dir):
    done = babyllama("generate", "--ckpt", str(run_dir[0]), "--prompt", "话说", "--temperature", "0",
                     "--max-new-tokens", "1000")
    assert done.returncode == 0, done.stderr
    assert "stopped: context (the prompt and the continuation fill the model's 64-token context)" in done.stderr


def test_generate_command_reports_a_missing_checkpoint_in_one_line(tmp_path):
    done = babyllama("generate", "--ckpt", str(tmp_path / "nothing"), "--prompt", "话说")
    assert done.returncode == 2
    assert "no such file or folder" in done.stderr and "Traceback" not in done.stderr
