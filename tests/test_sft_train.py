"""Fine-tuning: `babyllama train --init-from PARENT --data sft.bin`, on SFT token files (ids, a loss
mask, a manifest of kind "sft") written here with the chat template, as `babyllama prepare` writes
them from conversations.

Slow tests share one pretrained parent and one uninterrupted fine-tuning run of it.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_checkpoints import write_run_with_checkpoint
from test_train import (
    SMALL_MODEL,
    babyllama_train,
    communicate,
    parse,
    rows_of,
    start_trainer,
    token_file,  # noqa: F401  (a fixture: the sample corpus prepared for pretraining)
    train_losses,
    trained_a_step,
    trainer_env,
    wait_for,
)

from babyllama import __version__, planning
from babyllama.chat_template import template_for
from babyllama.checkpoint import CONFIG_FILE
from babyllama.config import ModelConfig
from babyllama.data import IGNORE_ID
from babyllama.errors import UserError
from babyllama.runs import RunDir
from babyllama.sft_windows import SFTBatchSampler, SFTDataset, open_dataset

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


def write_sft_file(path: Path, tokenizer, conversations: list[list[dict]]) -> Path:
    """NAME.bin (ids), NAME.bin.mask (one byte a token, 1 = trained) and the manifest, as the SFT
    token-file contract says; each conversation is `template.encode`'s document."""
    template = template_for(tokenizer)
    ids: list[int] = []
    mask: list[int] = []
    for messages in conversations:
        more_ids, more_mask = template.encode(messages)
        ids += more_ids
        mask += more_mask
    path.parent.mkdir(parents=True, exist_ok=True)
    np.asarray(ids, np.uint16).tofile(path)
    np.asarray(mask, np.uint8).tofile(path.with_name(path.name + ".mask"))
    manifest = {
        "kind": "sft", "version": 1, "dtype": "uint16", "tokens": len(ids), "documents": len(conversations),
        "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.describe(),
        "skipped": {"too_short": 0, "malformed": 0, "examples": [], "cut_short": []}, "min_tokens": 0,
        "sources": [], "created": "2026-01-01T00:00:00Z", "babyllama_version": __version__,
        "mask": path.name + ".mask", "chat_template": template.describe(), "conversations": len(conversations),
        "trained_tokens": int(sum(mask)),
    }
    path.with_name(path.name + ".json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return path


def pairs_file(folder: Path, tokenizer, repeat: int = 60) -> Path:
    """The PAIRS, in a fixed shuffled order, `repeat` times."""
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(PAIRS)), repeat))
    return write_sft_file(folder / "pairs.bin", tokenizer, [conversation(*PAIRS[i]) for i in order])


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory, sp_tokenizer) -> Path:
    return pairs_file(tmp_path_factory.mktemp("sft"), sp_tokenizer)


# ---------------------------------------------------------------------------------------
# The data: masked targets, windows with a trained target (no MindSpore)


def test_sft_batches_mask_untrained_targets_and_skip_windows_without_one(tmp_path, sp_tokenizer):
    # A long first answer-free stretch: the system turn of the first conversation fills whole windows.
    long_system = {"role": "system", "content": "天下大势，分久必合，合久必分。" * 20}
    path = write_sft_file(tmp_path / "one.bin", sp_tokenizer,
                          [[long_system, *conversation(*PAIRS[0])]] + [conversation(*p) for p in PAIRS] * 6)
    ids = np.fromfile(path, np.uint16).astype(np.int64)
    mask = np.fromfile(path.with_name("one.bin.mask"), np.uint8)
    seq = 16
    dataset = open_dataset([path], seq, 0.1)
    assert isinstance(dataset, SFTDataset)
    windows = (len(ids) - 1) // seq
    with_trained = [w for w in range(windows) if mask[w * seq + 1:(w + 1) * seq + 1].any()]
    assert 0 < len(with_trained) < windows  # the system turn's windows are left out
    assert dataset.train_windows + dataset.val_windows == len(with_trained)
    sampler = SFTBatchSampler(dataset, 4, seed=1)
    seen = set()
    for step in range(20):
        x, y = sampler.batch(step)
        for row, start in zip(range(4), dataset.window_starts(sampler.train_indices(step))[1].tolist()):
            seen.add(start // seq)
            np.testing.assert_array_equal(x[row], ids[start:start + seq])
            targets = ids[start + 1:start + seq + 1]
            trained = mask[start + 1:start + seq + 1] == 1
            np.testing.assert_array_equal(y[row], np.where(trained, targets, IGNORE_ID))
            assert trained.any()
    assert seen <= set(with_trained)
    for x, y in dataset.val_batches(2):
        assert (y != IGNORE_ID).any(axis=1).all()


def test_sft_and_pretraining_files_are_not_mixed(sft_file, token_file):
    with pytest.raises(UserError, match=f"is an SFT token file but {token_file} is not"):
        open_dataset([sft_file, token_file], 16, 0.1)


# ---------------------------------------------------------------------------------------
# Planning a fine-tuning run: refusals in one line (no MindSpore)


def numpy_parent(folder: Path, tokenizer, cfg: ModelConfig, recorded: dict | None = None) -> Path:
    """A run directory with one complete checkpoint of a random model (numpy only), recording
    `tokenizer` (or the `recorded` description)."""
    checkpoint = write_run_with_checkpoint(folder, 5, cfg, recorded or tokenizer.describe(),
                                           train={"batch_size": 4, "learning_rate": 1e-3})
    from safetensors.numpy import save_file

    save_file({"optimizer_step": np.zeros((), np.float32)}, str(checkpoint / "optimizer.safetensors"))
    (checkpoint / "state.json").write_text(json.dumps({"format": 1, "step": 5}), encoding="utf-8")
    config = json.loads((checkpoint / CONFIG_FILE).read_text(encoding="utf-8"))
    config["train"] = {"batch_size": 4, "learning_rate": 1e-3}
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
    config = plan.config()
    assert config["init_from"] == {"run": str(parent.resolve()),
                                   "checkpoint": str((parent / "checkpoints" / "step_0000005").resolve()), "step": 5}
    assert config["chat_template"] == template_for(sp_tokenizer).describe()
    # A dropout change shapes no parameter: allowed.
    planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft2"), "--init-from", str(parent),
                                 "--data", str(sft_file), "--dropout", "0.1"), world_size=1)


def test_a_pretraining_plan_records_the_tokenizers_chat_template(tmp_path, sp_tokenizer, token_file):
    plan = planning.plan_training(parse("--run", str(tmp_path / "runs" / "pre"), "--data", str(token_file),
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


def test_fine_tuning_refuses_data_of_another_tokenizer(tmp_path, sp_tokenizer, sft_file):
    other = {**sp_tokenizer.describe(), "name": "other", "sha256": "sha256:" + "0" * 64}
    parent = numpy_parent(tmp_path / "runs" / "base", sp_tokenizer, PARENT_MODEL, recorded=other)
    with pytest.raises(UserError, match=r"the parent was trained with tokenizer other \(sha256:0000.*the data's is "
                                        r"sanguo .*prepare the data with the parent's tokenizer") as refused:
        planning.plan_training(parse("--run", str(tmp_path / "runs" / "sft"), "--init-from", str(parent),
                                     "--data", str(sft_file)), world_size=1)
    assert "\n" not in str(refused.value)


def test_init_from_is_repeated_for_a_launched_trainer(tmp_path, sft_file):
    from babyllama import train_command

    args = parse("--run", "r", "--init-from", "out/runs/base", "--data", str(sft_file), "--max_steps", "9")
    arguments = train_command.child_arguments(args)
    assert arguments[arguments.index("--init-from") + 1] == str(Path("out/runs/base").resolve())
