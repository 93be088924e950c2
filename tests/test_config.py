"""Configs: validation, presets, files, command-line flags and the derived numbers."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from babyllama import config
from babyllama.config import ModelConfig, TrainConfig, config_to_dict
from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, atomic_write_json


def test_hidden_dim_follows_the_llama_rule():
    assert ModelConfig(dim=288, multiple_of=32).hidden_dim == 768
    assert ModelConfig(dim=512, multiple_of=32).hidden_dim == 1376
    assert ModelConfig(dim=4096, multiple_of=256).hidden_dim == 11008  # Llama-2-7B
    assert ModelConfig(dim=2048, multiple_of=256).hidden_dim == 5632  # TinyLlama


def test_param_count_of_the_reference_shapes():
    # llama2.c's stories15M shape at the two vocabularies of the benchmark.
    assert config.param_count(ModelConfig(vocab_size=8000, dim=288, n_layers=6, n_heads=6)) == 8_279_712
    assert config.param_count(ModelConfig(vocab_size=64794, dim=288, n_layers=6, n_heads=6)) == 24_636_384


def test_presets_table_in_the_docs_matches_param_count():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \|(?: \d+ \|){4} (\d+) \| \d+ \| ([\d.]+) M \| ([\d.]+) M \| ([\d.]+) M \|$",
                      doc, re.M)
    assert {name for name, *_ in rows} == set(config.PRESETS)
    for name, hidden, non_embedding, at_8000, at_64794 in rows:
        model, _ = config.preset(name)
        assert model.hidden_dim == int(hidden)
        assert f"{config.non_embedding_param_count(model) / 1e6:.1f}" == non_embedding
        assert f"{config.param_count(dataclasses.replace(model, vocab_size=8000)) / 1e6:.1f}" == at_8000
        assert f"{config.param_count(dataclasses.replace(model, vocab_size=64794)) / 1e6:.1f}" == at_64794


def test_presets_are_valid_and_independent_copies():
    for name in config.PRESETS:
        model, train = config.preset(name)
        model.validate()
        train.validate()
    model, _ = config.preset("tiny")
    model.dim = 1
    assert config.preset("tiny")[0].dim == 256
    assert config.preset("base")[0] == ModelConfig(dim=512, n_layers=8, n_heads=8, max_seq_len=512)
    with pytest.raises(UserError, match="unknown preset 'huge'.*tiny"):
        config.preset("huge")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_heads": 5}, r"model.n_heads \(5\) must divide model.dim \(288\)"),
        ({"dim": 18, "n_heads": 6}, r"dim / model.n_heads = 3 must be even"),
        ({"n_kv_heads": 4}, r"model.n_kv_heads \(4\) must divide model.n_heads \(6\)"),
        ({"vocab_size": 0}, r"model.vocab_size must be positive"),
        ({"n_layers": -1}, r"model.n_layers must be positive"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    ],
)
def test_model_validation_names_the_field(changes, message):
    with pytest.raises(UserError, match=message):
        ModelConfig(**changes).validate()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"min_lr": 1e-3, "learning_rate": 1e-4}, r"train.min_lr \(0.001\) must be between 0 and train.learning_rate"),
        ({"warmup_iters": 500, "lr_decay_iters": 400}, r"train.warmup_iters \(500\) must be less than train.lr_decay_iters"),
        ({"warmup_iters": 3000, "max_steps": 2000}, r"less than train.max_steps \(2000\)"),
        ({"max_steps": 0, "epochs": 0.0}, r"exactly one of train.max_steps and train.epochs"),
        ({"max_steps": 10, "epochs": 1.0}, r"exactly one of train.max_steps and train.epochs"),
        ({"batch_size": 0}, r"train.batch_size must be positive"),
        ({"dtype": "float64"}, r"train.dtype must be one of float32, bfloat16, float16, auto"),
        ({"beta2": 1.0}, r"train.beta2 must be in \[0, 1\)"),
        ({"on_divergence": "ignore"}, r"train.on_divergence must be one of rollback, skip, stop, got 'ignore'"),
        ({"spike_window": -1}, r"train.spike_window must not be negative"),
        ({"spike_threshold": 0.0}, r"train.spike_threshold must be positive"),
        ({"rollback_after": 0}, r"train.rollback_after must be positive"),
        ({"rollback_after": 30, "rollback_window": 20},
         r"train.rollback_after must not exceed train.rollback_window \(20\), got 30"),
        ({"rollback_lr_scale": 1.5}, r"train.rollback_lr_scale must be in \(0, 1\], got 1.5"),
    ],
)
def test_train_validation_names_the_field(changes, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**changes).validate()


def test_no_decay_lifts_the_warmup_constraint():
    TrainConfig(decay_lr=False, warmup_iters=5000, max_steps=100).validate()


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def to_toml(model: ModelConfig, train: TrainConfig) -> str:
    lines = []
    for section, values in config_to_dict(model, train).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def save_config(path: Path, model: ModelConfig, train: TrainConfig) -> None:
    """TOML for a .toml path, JSON otherwise; written atomically."""
    path = Path(path)
    if path.suffix == ".toml":
        atomic_write_bytes(path, to_toml(model, train).encode("utf-8"))
    else:
        atomic_write_json(path, config_to_dict(model, train))


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    model = ModelConfig(vocab_size=2000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, norm_eps=1e-6)
    train = TrainConfig(batch_size=3, learning_rate=2.5e-4, min_lr=1e-5, decay_lr=False, max_steps=0,
                        epochs=1.5, sample_prompt='他说："你好"\n\\', dtype="float32")
    path = tmp_path / f"run{suffix}"
    save_config(path, model, train)
    assert config.load_config(path) == (model, train)
    assert not list(tmp_path.glob(".*tmp*"))


def test_none_is_written_by_leaving_the_key_out(tmp_path):
    path = tmp_path / "c.toml"
    save_config(path, ModelConfig(), TrainConfig())
    assert "n_kv_heads" not in path.read_text()
    assert config.load_config(path)[0].n_kv_heads is None


def test_partial_file_fills_from_base(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nn_layers = 2\n\n[train]\nlearning_rate = 1e-3\nmin_lr = 1e-4\n")
    model, train = config.load_config(path, base=config.preset("tiny"))
    assert (model.dim, model.n_layers) == (256, 2)
    assert (train.learning_rate, train.warmup_iters) == (1e-3, 50)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\ndimm = 3\n", r"c.toml: \[model\]: unknown field 'dimm'"),
        ("[model]\ndim = 'wide'\n", r"c.toml: \[model\]: dim must be int, got 'wide'"),
        ("[model]\ndim = 100\nn_heads = 3\n", r"c.toml: \[model\]: model.n_heads \(3\) must divide"),
        ("[optim]\nlr = 1\n", r"c.toml: unknown section\(s\) optim"),
        ("[model\n", r"c.toml: not valid TOML"),
        ("[train]\nbatch_size = true\n", r"batch_size must be int, got True"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        config.load_config(path)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"model": {\n"dim": 64,\n}}')
    with pytest.raises(UserError, match=r"c.json:3: not valid JSON"):
        config.load_config(path)


def test_integers_are_accepted_for_float_fields(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"weight_decay": 0, "epochs": 2, "max_steps": 0}}))
    _, train = config.load_config(path)
    assert train.weight_decay == 0.0 and isinstance(train.weight_decay, float)
    assert train.epochs == 2.0


def _parse(argv):
    parser = argparse.ArgumentParser()
    config.add_config_arguments(parser)
    return parser.parse_args(argv)


def test_flags_cover_every_field_and_are_typed():
    args = _parse(["--dim", "128", "--n-kv-heads", "2", "--norm_eps", "1e-6", "--decay_lr", "false",
                   "--dtype", "float32", "--sample-prompt", "从前"])
    assert vars(args) == {"dim": 128, "n_kv_heads": 2, "norm_eps": 1e-6, "decay_lr": False,
                          "dtype": "float32", "sample_prompt": "从前"}
    parser = argparse.ArgumentParser()
    config.add_config_arguments(parser)
    dests = {a.dest for a in parser._actions}
    for cls in (ModelConfig, TrainConfig):
        assert {f.name for f in dataclasses.fields(cls)} <= dests


def test_bad_flag_values_are_refused(capsys):
    for argv in (["--dim", "wide"], ["--dtype", "float64"], ["--decay_lr", "maybe"]):
        with pytest.raises(SystemExit):
            _parse(argv)
    assert "invalid choice: 'float64'" in capsys.readouterr().err


def test_overrides_change_only_given_fields():
    model, train = config.preset("tiny")
    new_model, new_train = config.apply_overrides(model, train, _parse(["--n_layers", "2", "--n_kv_heads", "none",
                                                                        "--learning_rate", "5e-4"]))
    assert new_model == dataclasses.replace(model, n_layers=2)
    assert new_train == dataclasses.replace(train, learning_rate=5e-4)


def test_epochs_flag_replaces_max_steps_and_back():
    model, train = config.preset("tiny")
    _, by_epochs = config.apply_overrides(model, train, _parse(["--epochs", "2"]))
    assert (by_epochs.max_steps, by_epochs.epochs) == (0, 2.0)
    _, by_steps = config.apply_overrides(model, by_epochs, _parse(["--max-steps", "300"]))
    assert (by_steps.max_steps, by_steps.epochs) == (300, 0.0)


def test_overrides_are_validated():
    with pytest.raises(UserError, match="model.n_heads"):
        config.apply_overrides(ModelConfig(), TrainConfig(), _parse(["--n_heads", "7"]))


def test_resolve_steps_from_epochs_and_decay_default():
    train = TrainConfig(max_steps=0, epochs=1.5, warmup_iters=10)
    resolved = config.resolve_steps(train, steps_per_epoch=101)
    assert (resolved.max_steps, resolved.epochs, resolved.lr_decay_iters) == (152, 0.0, 152)
    fixed = config.resolve_steps(TrainConfig(max_steps=3000, lr_decay_iters=2000), steps_per_epoch=7)
    assert (fixed.max_steps, fixed.lr_decay_iters) == (3000, 2000)


def test_tokens_per_step_counts_accumulation_and_workers():
    model = ModelConfig(max_seq_len=256)
    assert config.tokens_per_step(model, TrainConfig(batch_size=8, grad_accum=4), world_size=2) == 8 * 4 * 2 * 256


def test_model_differences_name_the_fields():
    assert config.model_differences(ModelConfig(), ModelConfig()) == []
    assert config.model_differences(ModelConfig(dim=288), ModelConfig(dim=512, vocab_size=8000)) == [
        "vocab_size: 64794 != 8000", "dim: 288 != 512"]


def test_memory_estimate_grows_with_vocabulary_and_batch():
    small_vocab = config.estimate_memory(ModelConfig(vocab_size=8000), TrainConfig())
    big_vocab = config.estimate_memory(ModelConfig(vocab_size=64794), TrainConfig())
    assert big_vocab["logits"] > 8 * small_vocab["logits"]
    assert big_vocab["optimizer"] == 8 * config.param_count(ModelConfig(vocab_size=64794))
    assert small_vocab["total"] == sum(v for k, v in small_vocab.items() if k != "total")
    double = config.estimate_memory(ModelConfig(vocab_size=8000), TrainConfig(batch_size=16))
    assert double["activations"] == 2 * small_vocab["activations"]


def test_summary_mentions_the_numbers_a_user_checks():
    model, train = config.preset("tiny")
    text = config.summary(model, train, world_size=2)
    assert f"{config.param_count(model):,} parameters" in text
    assert f"{config.tokens_per_step(model, train, 2):,} tokens per step" in text
    assert "GiB" in text
