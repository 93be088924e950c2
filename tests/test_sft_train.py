"""Fine-tuning: `babyllama train --init-from PARENT --data sft.bin`, on SFT token files (ids, a loss
mask, a manifest of kind "sft") written here with the chat template, as `babyllama prepare` writes
them from conversations.

Slow tests share one pretrained parent and one uninterrupted fine-tuning run of it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_checkpoints import write_run_with_checkpoint
from test_train import (
    SMALL_MODEL,
    WAIT_S,
    babyllama_train,
    communicate,
    digests,
    parse,
    rows_of,
    start_trainer,
    train_losses,
    trained_a_step,
    trainer_env,
    wait_for,
)

from babyllama import planning
from babyllama.chat_template import template_for
from babyllama.checkpoint import CONFIG_FILE
from babyllama.config import ModelConfig
from babyllama.data import IGNORE_ID, BatchSampler, SftDataset
from babyllama.errors import UserError
from babyllama.runs import RunDir, launch_detached

PAIRS = [
    ("刘备的两个结义兄弟是谁？", "关羽和张飞。"),
    ("诸葛亮字什么？", "字孔明，号卧龙。"),
    ("赤壁之战谁胜了？", "孙刘联军大胜曹操。"),
    ("曹操的儿子是谁？", "曹丕与曹植。"),
]
PARENT_STEPS = 12
SFT_STEPS = 160
SFT_FLAGS = ["--max_steps", str(SFT_STEPS), "--learning_rate", "3e-3", "--warmup_iters", "5", "--batch_size", "4",
             "--log_interval", "1", "--eval_interval", "80", "--save_interval", "80", "--sample_tokens", "16",
             "--sample_question", PAIRS[0][0], "--val_fraction", "0.05", "--seed", "3"]


def conversation(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory, sp_tokenizer_dir) -> Path:
    """The PAIRS, in a fixed shuffled order, 60 times over, prepared as an SFT token file."""
    from babyllama.prepare import prepare

    folder = tmp_path_factory.mktemp("sft")
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(PAIRS)), 60))
    source = folder / "pairs.jsonl"
    source.write_text("".join(json.dumps({"conversations": conversation(*PAIRS[i])}, ensure_ascii=False) + "\n"
                              for i in order), encoding="utf-8")
    out = folder / "pairs.bin"
    prepare([source], "sft-conversations", sp_tokenizer_dir, out, workers=1)
    return out


@pytest.fixture(scope="module")
def corpus_tokens(tmp_path_factory, sample_jsonl, sp_tokenizer_dir) -> Path:
    """The sample corpus prepared for pretraining."""
    from babyllama.prepare import prepare

    out = tmp_path_factory.mktemp("tokens") / "sanguo.bin"
    prepare([sample_jsonl], "c4", sp_tokenizer_dir, out, workers=1)
    return out


def test_the_validation_loss_is_the_mean_over_all_trained_targets_of_its_batches():
    from babyllama.evaluate import mean_loss

    def batch_loss(x, y):  # a batch's mean over its trained targets, each target's loss its id
        return float(y[y != IGNORE_ID].mean())

    batches = [(np.zeros((1, 3)), np.array([[5, IGNORE_ID, IGNORE_ID]])), (np.zeros((1, 3)), np.array([[1, 1, 1]]))]
    result = mean_loss(batch_loss, batches)
    assert (result.loss, result.tokens, result.windows) == (2.0, 4, 2)


def test_bits_per_byte_and_the_unigram_baseline_count_answer_tokens_only(sft_file, sp_tokenizer):
    from babyllama.measures import TextBytes, scored_targets, unigram_loss, windows_bytes

    dataset = SftDataset([sft_file], seq_len=64, val_fraction=0.05)
    every = np.arange(dataset.train_windows)
    answers = [sp_tokenizer.encode(answer) for _, answer in PAIRS]
    # Each answer's tokens and its end marker are trained; the marker is no text.
    by_hand = sum(len(a.encode("utf-8")) for _, a in PAIRS) / sum(len(ids) + 1 for ids in answers)
    measured = windows_bytes(TextBytes(sp_tokenizer, dataset.eos_id), dataset, every) / scored_targets(dataset, every)
    assert measured == pytest.approx(by_hand, rel=0.05)
    # The unigram baseline's frequencies are those of the answers' tokens and end markers alone.
    ids = [i for a in answers for i in a] + [template_for(sp_tokenizer).describe()["special_ids"]["<|end|>"]] * 4
    p = np.unique(ids, return_counts=True)[1] / len(ids)
    assert unigram_loss(dataset).loss == pytest.approx(float(-(p * np.log(p)).sum()), rel=0.05)


# ---------------------------------------------------------------------------------------
# Planning a fine-tuning run: refusals in one line (no MindSpore)


def numpy_parent(folder: Path, tokenizer, cfg: ModelConfig, recorded: dict | None = None) -> Path:
    """A run directory with one complete checkpoint of a random model (numpy only), recording
    `tokenizer` (or the `recorded` description)."""
    checkpoint = write_run_with_checkpoint(folder, 5, cfg, recorded or tokenizer.describe(),
                                           train={"batch_size": 4, "learning_rate": 1e-3, "lr_decay_iters": 5})
    from safetensors.numpy import save_file

    save_file({"optimizer_step": np.zeros((), np.float32)}, str(checkpoint / "optimizer.safetensors"))
    (checkpoint / "state.json").write_text(json.dumps({"format": 1, "step": 5}), encoding="utf-8")
    config = json.loads((checkpoint / CONFIG_FILE).read_text(encoding="utf-8"))
    config["train"] = {"batch_size": 4, "learning_rate": 1e-3, "max_steps": 5, "lr_decay_iters": 5,
                       "warmup_iters": 1}
    (checkpoint / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    return folder


PARENT_MODEL = ModelConfig(vocab_size=2000, dim=32, n_layers=2, n_heads=4, max_seq_len=32)


def test_a_fine_tuning_plan_takes_the_parents_shape_and_records_it(tmp_path, sp_tokenizer, sft_file):
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)
    plan = planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft"), "--init-from", str(parent),
                                        "--data", str(sft_file), "--max_steps", "10", "--warmup_iters", "2"),
                                  world_size=1)
    assert plan.model == PARENT_MODEL
    assert plan.train.batch_size == 4 and plan.train.learning_rate == 1e-3 and plan.train.max_steps == 10
    # The parent's schedule is not taken: the decay ends at this run's last step.
    assert plan.train.lr_decay_iters == 10
    config = plan.config()
    assert config["init_from"] == {"run": str(parent.resolve()),
                                   "checkpoint": str((parent / "checkpoints" / "step_0000005").resolve()), "step": 5}
    assert config["chat_template"] == template_for(sp_tokenizer).describe()
    # A dropout change shapes no parameter: allowed.
    planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft2"), "--init-from", str(parent),
                                 "--data", str(sft_file), "--dropout", "0.1"), world_size=1)


def test_a_pretraining_plan_records_the_tokenizers_chat_template(tmp_path, sp_tokenizer, corpus_tokens):
    plan = planning.plan_training(parse("--run", str(tmp_path / "runs" / "pre"), "--data", str(corpus_tokens),
                                        *SMALL_MODEL), world_size=1)
    config = plan.config()
    assert config["chat_template"] == template_for(sp_tokenizer).describe()
    assert "init_from" not in config


@pytest.mark.parametrize("flags, message", [
    (["--dim", "64"], r"the model.s shape differs from the parent.s \(dim: 32 != 64, parent first\)"),
    (["--max_seq_len", "64", "--n_layers", "3"], r"n_layers: 2 != 3; max_seq_len: 32 != 64"),
    (["--resume"], r"--init-from cannot be given with --resume"),
])
def test_fine_tuning_refuses_another_shape_and_init_from_with_resume(tmp_path, sp_tokenizer, sft_file, flags,
                                                                    message):
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)
    run = tmp_path / "runs" / "sft"
    if "--resume" in flags:
        RunDir(run).create({"model": {}, "train": {}})
    with pytest.raises(UserError, match=message) as refused:
        planning.plan_training(parse("--run", str(run), "--init-from", str(parent), "--data", str(sft_file),
                                     *flags), world_size=1)
    assert "\n" not in str(refused.value)


def test_fine_tuning_refuses_pretraining_files_among_its_data(tmp_path, sp_tokenizer, sft_file, corpus_tokens):
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)
    with pytest.raises(UserError, match=f"{corpus_tokens}: a pretraining token file") as refused:
        planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft"), "--init-from", str(parent),
                                     "--data", str(sft_file), str(corpus_tokens)), world_size=1)
    assert "\n" not in str(refused.value)


def test_fine_tuning_refuses_data_of_another_tokenizer(tmp_path, sp_tokenizer, sft_file):
    other = {**sp_tokenizer.describe(), "name": "other", "sha256": "sha256:" + "0" * 64}
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL, recorded=other)
    with pytest.raises(UserError, match=r"the parent was trained with tokenizer other \(sha256:0000.*the data's is "
                                        r"sanguo .*prepare the data with the parent's tokenizer") as refused:
        planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft"), "--init-from", str(parent),
                                     "--data", str(sft_file)), world_size=1)
    assert "\n" not in str(refused.value)


def sft_copy(sft_file: Path, folder: Path, mask: bytes | None, manifest: bool = True) -> Path:
    """The SFT file (and its manifest) copied into `folder`, with `mask` for its loss mask (None: none)."""
    folder.mkdir()
    for name in (sft_file.name, sft_file.name + ".json")[:2 if manifest else 1]:
        (folder / name).write_bytes((sft_file.parent / name).read_bytes())
    if mask is not None:
        (folder / (sft_file.name + ".mask")).write_bytes(mask)
    return folder / sft_file.name


@pytest.mark.parametrize("case, expected", [
    ("a run without a checkpoint", "runs/bare: the run has no complete checkpoint yet"),
    ("a folder that is not a run", "notes: neither a checkpoint folder"),
    ("a mask missing", "its loss mask pairs.bin.mask is missing"),
    ("a mask cut short", "pairs.bin.mask: 100 bytes, but the token file holds"),
    ("no answer token", "no window of seq_len + 1 = 33 tokens holds a trained token"),
    ("a manifest missing", "pairs.bin: its manifest pairs.bin.json is missing, but a loss mask lies beside it"),
])
def test_fine_tuning_mistakes_end_in_one_line_before_a_run_is_made(tmp_path, sp_tokenizer, sft_file, case, expected):
    """As a user gives them to the CLI."""
    parent, data = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL), sft_file
    mask = (sft_file.parent / (sft_file.name + ".mask")).read_bytes()
    if case == "a run without a checkpoint":
        parent = tmp_path / "runs" / "bare"
        RunDir(parent).create({"model": {}, "train": {}})
    elif case == "a folder that is not a run":
        parent = tmp_path / "notes"
        parent.mkdir()
    else:
        damaged = {"a mask missing": None, "a mask cut short": mask[:100], "no answer token": bytes(len(mask)),
                   "a manifest missing": mask}
        data = sft_copy(sft_file, tmp_path / "damaged", damaged[case], manifest=case != "a manifest missing")
    run = tmp_path / "runs" / "sft"
    done = babyllama_train(run, "--init-from", str(parent), "--data", str(data), "--max_steps", "4",
                           "--warmup_iters", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("babyllama train: error: ") and expected in line
    assert not run.exists()


def test_resuming_a_fine_tuning_run_without_a_checkpoint_whose_parent_is_gone_says_so(tmp_path, sp_tokenizer,
                                                                                      sft_file):
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)
    run = tmp_path / "runs" / "sft"
    plan = planning.plan_training(parse("--run", str(run), "--init-from", str(parent), "--data", str(sft_file),
                                        "--max_steps", "4", "--warmup_iters", "1"), world_size=1)
    RunDir(run).create(plan.config())  # as a trainer stopped before its first save leaves it
    shutil.rmtree(parent)
    done = babyllama_train(run, "--resume", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"babyllama train: error: {run} has no checkpoint yet, so it would start again from its parent, but "
        f"{(parent / 'checkpoints' / 'step_0000005').resolve()} is gone; start a new fine-tuning run with "
        "--init-from another checkpoint")


def hf_parent(folder: Path, parent_run: Path, tokenizer_dir: Path | None) -> Path:
    """The latest checkpoint of `parent_run` as a Hugging Face folder, written with babyllama.hf as export
    writes one, with the files of the tokenizer folder `tokenizer_dir` (None: no tokenizer)."""
    from safetensors.numpy import save_file

    from babyllama.checkpoint import load_model_for_inference
    from babyllama.hf import hf_config, hf_weights

    loaded = load_model_for_inference(parent_run)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hf_config(loaded.cfg, None)), encoding="utf-8")
    save_file(hf_weights(loaded.cfg, loaded.weights), str(folder / "model.safetensors"))
    for path in tokenizer_dir.iterdir() if tokenizer_dir else ():
        shutil.copy(path, folder / path.name)
    return folder


def test_a_fine_tuning_run_may_start_from_a_hugging_face_export(tmp_path, sp_tokenizer, sp_tokenizer_dir, sft_file):
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)
    hf = hf_parent(tmp_path / "exports" / "base-hf", parent, sp_tokenizer_dir)
    plan = planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft"), "--init-from", str(hf),
                                        "--data", str(sft_file), "--max_steps", "10", "--warmup_iters", "2"),
                                  world_size=1)
    # The folder says the feed-forward width, for which the smallest multiple_of that gives it is taken.
    assert plan.model.hidden_dim == PARENT_MODEL.hidden_dim
    assert dataclasses.replace(plan.model, multiple_of=PARENT_MODEL.multiple_of) == PARENT_MODEL
    assert plan.train.max_steps == 10
    assert plan.init_from == {"run": None, "checkpoint": str(hf.resolve()), "step": None}
    with pytest.raises(UserError, match=r"the model.s shape differs from the parent.s \(dim: 32 != 64"):
        planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft"), "--init-from", str(hf),
                                     "--data", str(sft_file), "--dim", "64"), world_size=1)
    # Resumed before its first checkpoint, the run starts again from the folder.
    RunDir(tmp_path / "runs" / "sft").create(plan.config())
    resumed = planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft"), "--resume"), world_size=1)
    assert resumed.init_from == plan.init_from and str(hf.resolve()) in resumed.notes[0]


@pytest.mark.parametrize("case, expected", [
    ("no tokenizer", "base-hf: no tokenizer here"),
    ("another tokenizer", "the parent was trained with tokenizer chatglm"),
    ("no weights", "base-hf: has no model.safetensors"),
])
def test_a_hugging_face_parent_that_cannot_start_the_run_is_refused_in_one_line(tmp_path, sp_tokenizer,
                                                                               sp_tokenizer_dir, sft_file,
                                                                               chatglm_shaped_dir, case, expected):
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)
    tokenizer = {"no tokenizer": None, "another tokenizer": chatglm_shaped_dir}.get(case, sp_tokenizer_dir)
    hf = hf_parent(tmp_path / "exports" / "base-hf", parent, tokenizer)
    if case == "no weights":
        (hf / "model.safetensors").unlink()
    run = tmp_path / "runs" / "sft"
    done = babyllama_train(run, "--init-from", str(hf), "--data", str(sft_file), "--max_steps", "4",
                           "--warmup_iters", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"babyllama train: error: --init-from {hf}") and expected in line, line
    assert not run.exists()


@pytest.mark.parametrize("kind", ["fine-tuning", "pretraining", "fine-tuning, recorded without its data's kind"])
def test_resuming_with_data_of_the_other_kind_is_refused_in_one_line(tmp_path, sp_tokenizer, sft_file, corpus_tokens,
                                                                   kind):
    """A fine-tuning run resumed on pretraining text would train unmasked, and a pretraining run resumed on
    conversations would become a fine-tuning run without a parent: both are refused before MindSpore starts."""
    run = tmp_path / "runs" / "r"
    if kind.startswith("fine-tuning"):
        parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)
        flags, other = ["--init-from", str(parent), "--data", str(sft_file)], corpus_tokens
        expected = (f"babyllama train: error: {corpus_tokens}: a pretraining token file (text, no loss mask), but "
                    f"{run} fine-tunes on SFT token files (conversations with a loss mask); resume it with SFT files "
                    "(or without --data), or pretrain on this file in a run of its own")
    else:
        flags, other = ["--data", str(corpus_tokens), *SMALL_MODEL], sft_file
        expected = (f"babyllama train: error: {sft_file}: an SFT token file (conversations with a loss mask), but "
                    f"{run} pretrains on text; fine-tune on it in a run of its own: `babyllama train --run NEW "
                    f"--init-from {run} --data {sft_file}`")
    plan = planning.plan_training(parse("--run", str(run), *flags, "--max_steps", "4", "--warmup_iters", "1"),
                                  world_size=1)
    config = plan.config()
    if "without" in kind:  # as runs made before config.json said it
        del config["data"]["sft"]
    RunDir(run).create(config)
    done = babyllama_train(run, "--resume", "--data", str(other), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == expected
    assert not (run / "status.json").exists()


def test_init_from_is_repeated_for_a_launched_trainer(tmp_path, sft_file):
    from babyllama import train_command

    args = parse("--run", "r", "--init-from", "out/runs/base", "--data", str(sft_file), "--max_steps", "9")
    arguments = train_command.child_arguments(args)
    assert arguments[arguments.index("--init-from") + 1] == str(Path("out/runs/base").resolve())


# ---------------------------------------------------------------------------------------
# Fine-tuning runs (MindSpore, subprocesses)


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory, corpus_tokens) -> Path:
    """A short pretraining run on the sample corpus, the parent of the fine-tuning runs."""
    workdir = tmp_path_factory.mktemp("parent")
    run = workdir / "runs" / "base"
    done = babyllama_train(run, "--data", str(corpus_tokens), *SMALL_MODEL, "--max_steps", str(PARENT_STEPS),
                           "--eval_interval", "1000", "--save_interval", str(PARENT_STEPS), "--sample_tokens", "0",
                           cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    return run


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, parent_run, sft_file):
    """An uninterrupted fine-tuning run of the parent on the PAIRS."""
    workdir = tmp_path_factory.mktemp("sft")
    run = workdir / "runs" / "chat"
    done = babyllama_train(run, "--init-from", str(parent_run), "--data", str(sft_file), *SFT_FLAGS, cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    return run, done.stdout


def greedy_answer(loaded, tokenizer, question: str, limit: int = 24) -> str:
    from babyllama.decode import NumpyDecoder

    template = template_for(tokenizer)
    decoder = NumpyDecoder(loaded.cfg, loaded.weights)
    logits = decoder.prefill(template.prompt([{"role": "user", "content": question}]))
    answer: list[int] = []
    while len(answer) < limit:
        token = int(np.argmax(logits))
        if token in template.stop_ids:
            break
        answer.append(token)
        logits = decoder.decode(token)
    return tokenizer.decode(answer)


@pytest.mark.slow
def test_a_fine_tuned_model_answers_its_pairs_exactly(sft_run, parent_run, sp_tokenizer):
    from babyllama.checkpoint import load_model_for_inference

    run, output = sft_run
    assert "fine-tuning from" in output
    loaded = load_model_for_inference(run)
    for question, answer in PAIRS:
        assert greedy_answer(loaded, sp_tokenizer, question) == answer
    # The sample row is the chat answer to sample_question, as the checkpoint of its step gives it.
    samples = [r for r in rows_of(run) if r["kind"] == "sample"]
    assert [r["step"] for r in samples] == [0, 80, 160]
    assert samples[-1]["prompt"] == PAIRS[0][0] and samples[-1]["text"] == PAIRS[0][1]
    # The parent, before fine-tuning, does not answer.
    assert greedy_answer(load_model_for_inference(parent_run), sp_tokenizer, PAIRS[0][0]) != PAIRS[0][1]


@pytest.mark.slow
def test_a_fine_tuning_run_records_its_parent_and_the_template_and_starts_from_its_weights(
        sft_run, parent_run, sft_file, sp_tokenizer):
    from babyllama.checkpoint import load_model_for_inference
    from babyllama.evaluate import token_losses

    run, _ = sft_run
    parent_checkpoint = parent_run / "checkpoints" / f"step_{PARENT_STEPS:07d}"
    config = RunDir(run).read_config()
    assert config["init_from"] == {"run": str(parent_run.resolve()), "checkpoint": str(parent_checkpoint.resolve()),
                                   "step": PARENT_STEPS}
    assert config["model"] == RunDir(parent_run).read_config()["model"]
    for checkpoint in (run / "checkpoints" / "step_0000160", parent_checkpoint):
        recorded = json.loads((checkpoint / CONFIG_FILE).read_text(encoding="utf-8"))
        assert recorded["chat_template"] == template_for(sp_tokenizer).describe()
    # A fresh schedule: warm-up from 0 at step 1.
    rows = rows_of(run)
    first = next(r for r in rows if r["kind"] == "train")
    assert first["step"] == 1 and first["lr"] == 0.0
    # The evaluation at step 0 scores the parent's weights on the answer tokens of the held-out windows.
    parent = load_model_for_inference(parent_checkpoint)
    from babyllama.decode import NumpyDecoder

    decoder = NumpyDecoder(parent.cfg, parent.weights)
    dataset = SftDataset([sft_file], seq_len=parent.cfg.max_seq_len, val_fraction=config["train"]["val_fraction"])
    losses = []
    for x, y in dataset.val_batches(config["train"]["batch_size"], config["train"]["eval_iters"]):
        for row, targets in zip(x, y):
            trained = targets != IGNORE_ID
            losses += token_losses(decoder.score(row), np.where(trained, targets, 0))[trained].tolist()
    step0 = next(r for r in rows if r["kind"] == "eval" and r["step"] == 0)
    assert step0["val_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-4)
    assert step0["val_bpb"] is not None
    evals = [r["val_loss"] for r in rows if r["kind"] == "eval"]
    assert evals[-1] < 0.2 * evals[0]


@pytest.mark.slow
def test_a_stopped_and_resumed_fine_tuning_run_gives_the_uninterrupted_runs_losses(tmp_path, sft_run, parent_run,
                                                                                  sft_file):
    reference, _ = sft_run
    run = tmp_path / "runs" / "stopped"
    flags = [*SFT_FLAGS, "--max_steps", "1000", "--lr_decay_iters", str(SFT_STEPS), "--eval_interval", "1000",
             "--save_interval", "1000", "--sample_tokens", "0"]
    trainer = start_trainer(run, "--init-from", str(parent_run), "--data", str(sft_file), *flags, cwd=tmp_path)
    try:
        wait_for(lambda: trained_a_step(run), "the first step", log=run / "train.log")
        trainer.send_signal(signal.SIGTERM)
        output = communicate(trainer)
    finally:
        trainer.kill()
    assert trainer.returncode == 0, output
    stopped_at = RunDir(run).read_status()["step"]
    assert RunDir(run).read_status()["state"] == "stopped" and 1 <= stopped_at < SFT_STEPS
    resumed = babyllama_train(run, "--resume", "--max_steps", str(SFT_STEPS), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected = {s: loss for s, loss in train_losses(rows_of(reference)).items() if s > stopped_at}
    assert train_losses(rows_of(run)) == expected
    assert RunDir(run).read_config()["init_from"] == RunDir(reference).read_config()["init_from"]


@pytest.mark.slow
def test_eval_only_on_a_finished_run_evaluates_its_latest_checkpoint(tmp_path, parent_run):
    run = tmp_path / "runs" / "base"
    shutil.copytree(parent_run, run)
    evals = [r for r in rows_of(run) if r["kind"] == "eval"]
    done = babyllama_train(run, "--resume", "--eval_only", "true", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    again = [r for r in rows_of(run) if r["kind"] == "eval"]
    assert again[:-1] == evals and again[-1]["step"] == PARENT_STEPS
    assert again[-1]["val_loss"] == pytest.approx(evals[-1]["val_loss"])
    assert RunDir(run).read_status()["state"] == "finished"
    assert RunDir(run).latest_checkpoint().step == PARENT_STEPS


@pytest.mark.slow
def test_init_from_on_pretraining_text_continues_pretraining_and_says_so(tmp_path, parent_run, corpus_tokens):
    run = tmp_path / "runs" / "more"
    done = babyllama_train(run, "--init-from", str(parent_run), "--data", str(corpus_tokens), "--max_steps", "2",
                           "--warmup_iters", "1", "--eval_interval", "1000", "--sample_tokens", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"continuing pretraining from {RunDir(parent_run).latest_checkpoint().path} (step {PARENT_STEPS}) with a "
            "fresh schedule; the loss counts every token") in done.stdout
    assert "answer" not in done.stdout
    config = RunDir(run).read_config()
    assert config["data"]["sft"] is False and config["init_from"]["step"] == PARENT_STEPS
    assert config["train"]["val_fraction"] > 0
    listing = subprocess.run([sys.executable, "-m", "babyllama", "runs", "--root", str(run.parent)], capture_output=True,
                             text=True, env=trainer_env(), check=True).stdout
    assert f"continued pretraining from base@{PARENT_STEPS}" in listing
    from babyllama.runs.settings import run_lineage
    assert run_lineage(RunDir(run)) == f"continued pretraining from base@{PARENT_STEPS}"


@pytest.mark.slow
def test_runs_and_runs_show_name_the_parent(sft_run, parent_run):
    run, _ = sft_run
    root = run.parent
    listing = subprocess.run([sys.executable, "-m", "babyllama", "runs", "--root", str(root)], capture_output=True,
                             text=True, env=trainer_env(), check=True).stdout
    assert f"fine-tuned from base@{PARENT_STEPS}" in listing.splitlines()[1]
    shown = subprocess.run([sys.executable, "-m", "babyllama", "runs", "show", str(run)], capture_output=True,
                           text=True, env=trainer_env(), check=True).stdout
    assert f"parent      base at step {PARENT_STEPS}" in shown



@pytest.mark.slow
def test_two_msrun_workers_fine_tune_as_one_batch_weighted_by_their_trained_targets(tmp_path, parent_run, sft_file):
    run = RunDir(tmp_path / "runs" / "pair")
    # SFT_FLAGS' batches (seed 3, batch 4, context 64): the first step whose two shares hold different
    # numbers of trained targets is the last.
    dataset = SftDataset([sft_file], seq_len=64, val_fraction=0.05)

    def counts(step: int) -> list[int]:
        return [int((BatchSampler(dataset, 4, 3, rank, 2).batch(step)[1] != IGNORE_ID).sum()) for rank in (0, 1)]

    steps = next(step for step in range(1, 20) if len(set(counts(step - 1))) == 2)
    launch_detached(run, ["--init-from", str(parent_run), "--data", str(sft_file), *SFT_FLAGS, "--max_steps",
                          str(steps), "--warmup_iters", "1", "--eval_interval", "1000", "--save_interval", str(steps),
                          "--sample_tokens", "0"],
                    workers=2, env={"GLOG_v": "3"}, cwd=tmp_path)
    wait_for(lambda: run.state().state not in ("starting", "running", "stopping"), "the two workers to finish",
             timeout=2 * WAIT_S, every=0.5, log=run.log_path)
    status = run.read_status()
    assert status["state"] == "finished" and status["world_size"] == 2, (status, run.log_path.read_text())
    logs = [(run.msrun_log_dir / f"worker_{rank}.log").read_text(encoding="utf-8") for rank in (0, 1)]
    (_, _, loss0, digest0), = digests(logs[0])
    (_, _, loss1, digest1), = digests(logs[1])
    assert digest0 == digest1
    # The step's loss is the mean over both ranks' trained targets: each rank's mean weighted by its count.
    c0, c1 = counts(steps - 1)
    last = [r for r in rows_of(run.path) if r["kind"] == "train"][-1]
    assert last["step"] == steps
    assert last["loss"] == pytest.approx((loss0 * c0 + loss1 * c1) / (c0 + c1), rel=1e-5)
    assert last["loss"] != pytest.approx((loss0 + loss1) / 2, rel=1e-4)


@pytest.mark.slow
def test_the_fine_tuned_checkpoint_answers_its_pairs_through_chat_serve_and_its_hugging_face_export(sft_run,
                                                                                                   tmp_path):
    """The issue's end to end: the same checkpoint, asked each question in a conversation of its own,
    answers it exactly (greedy) through `babyllama chat` from a pipe, `serve --stdio` and transformers."""
    torch = pytest.importorskip("torch", reason="torch (the dev extra) runs transformers' Llama")
    from test_serve import ServerProcess
    from transformers import AutoTokenizer, LlamaForCausalLM

    run, _ = sft_run
    checkpoint = run / "checkpoints" / f"step_{SFT_STEPS:07d}"
    questions, answers = [q for q, _ in PAIRS], [a for _, a in PAIRS]

    lines = [line for question in questions for line in (question, "/reset")]
    chat = subprocess.run([sys.executable, "-m", "babyllama", "chat", "--ckpt", str(checkpoint), "--temperature", "0",
                           "--max-new-tokens", "24"], input="".join(f"{line}\n" for line in lines),
                          capture_output=True, text=True, encoding="utf-8", env=trainer_env(), timeout=WAIT_S)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.splitlines() == answers
    assert chat.stderr.count("stopped: eos") == len(PAIRS)

    server = ServerProcess(checkpoint)
    try:
        assert server.next_event()["event"] == "ready"
        for number, question in enumerate(questions):
            server.send({"op": "generate", "id": number, "messages": [{"role": "user", "content": question}],
                         "temperature": 0, "max_new_tokens": 24})
            texts, done = server.until_done(number)
            assert ("".join(texts), done["stopped"]) == (answers[number], "eos")
    finally:
        server.close()

    out = tmp_path / "hf"
    export = subprocess.run([sys.executable, "-m", "babyllama", "export", "--ckpt", str(checkpoint), "--format", "hf",
                             "--out", str(out)], capture_output=True, text=True, env=trainer_env(), timeout=WAIT_S)
    assert export.returncode == 0, export.stderr
    model = LlamaForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    for question, expected in PAIRS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                            add_generation_prompt=True)["input_ids"]
        with torch.no_grad():
            generated = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       max_new_tokens=24, do_sample=False)[0, len(ids):].tolist()
        assert generated[-1] == end
        assert tokenizer.decode(generated[:-1]) == expected


@pytest.mark.slow
def test_fine_tuning_from_the_parents_hugging_face_export_starts_from_the_same_weights(tmp_path, sft_run,
                                                                                        parent_run, sft_file):
    pytest.importorskip("torch", reason="the export's tokenizer conversion is checked with the dev extra")
    export = tmp_path / "base-hf"
    done = subprocess.run([sys.executable, "-m", "babyllama", "export", "--ckpt", str(parent_run), "--format", "hf",
                           "--out", str(export)], capture_output=True, text=True, env=trainer_env(), timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "from-hf"
    done = babyllama_train(run, "--init-from", str(export), "--data", str(sft_file), *SFT_FLAGS, "--max_steps", "1",
                           "--warmup_iters", "0", "--sample_tokens", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"fine-tuning from {export.resolve()} (a Hugging Face folder)" in done.stdout
    # The evaluation at step 0 scores the parent's weights, read back from the export, as the run from the
    # parent's own checkpoint scored them.
    reference, _ = sft_run
    step0 = [next(row["val_loss"] for row in rows_of(path) if row["kind"] == "eval" and row["step"] == 0)
             for path in (run, reference)]
    assert step0[0] == pytest.approx(step0[1], rel=1e-6)
    shown = subprocess.run([sys.executable, "-m", "babyllama", "runs", "show", str(run)], capture_output=True,
                           text=True, env=trainer_env(), check=True).stdout
    assert "parent      the Hugging Face folder /" in shown


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretraining", "fine-tuning"])
def test_val_fraction_0_trains_without_evaluating(tmp_path, sp_tokenizer, corpus_tokens, sft_file, stage):
    """No held-out windows: no eval row, the run finishes, for a fine-tuning run as for pretraining."""
    run = tmp_path / "runs" / stage
    if stage == "pretraining":
        flags = ["--data", str(corpus_tokens), *SMALL_MODEL]
    else:
        flags = ["--init-from", str(numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL)),
                 "--data", str(sft_file)]
    done = babyllama_train(run, *flags, "--val_fraction", "0", "--max_steps", "2", "--warmup_iters", "1",
                           "--eval_interval", "1", "--log_interval", "1", "--sample_tokens", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note: val_fraction 0 holds no window out: the run trains without evaluating" in done.stdout
    assert RunDir(run).read_status()["state"] == "finished"
    rows = rows_of(run)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert not [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in rows if r["kind"] == "sample"] == [0, 1, 2]
    # Evaluating alone has nothing to score: refused before MindSpore starts.
    done = babyllama_train(run.with_name("eval"), *flags, "--val_fraction", "0", "--eval_only", "true",
                           "--max_steps", "2", "--warmup_iters", "1", cwd=tmp_path)
    assert done.returncode == 2 and not run.with_name("eval").exists()
    assert done.stderr.strip().splitlines() == [
        "babyllama train: error: train.eval_only: there is nothing to evaluate, val_fraction 0 holds no window out; "
        "give a val_fraction above 0, or score the data with `babyllama eval`"]
