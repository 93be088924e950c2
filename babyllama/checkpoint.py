"""Checkpoints: the folder `babyllama train` writes, and everything that reads one.

File names and format, save and load for training, `checkpoint_problem`, finding checkpoints,
and `load_model_for_inference` (a checkpoint or, through babyllama.hf, a Hugging Face folder) with
the chat template a loaded model answers in.
Format: docs/ARCHITECTURE.md, "Checkpoints".
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from babyllama.config import ModelConfig, expected_weight_names, model_config_from_dict, param_count
from babyllama.errors import UserError, describe_failure
from babyllama.files import atomic_write_json, fsync_dir
from babyllama.hf import is_hf_folder, read_hf_folder

# A run keeps its checkpoints in RUN/checkpoints/: step_NNNNNNN folders and `latest`, the newest's name.
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
CHECKPOINT_NAME = re.compile(r"step_(\d{7,})")
# What a checkpoint folder holds when babyllama.train has written it completely.
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "state.json", "config.json")
WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE = CHECKPOINT_FILES
CHECKPOINT_FORMAT = 1


class Checkpoint(NamedTuple):
    step: int
    path: Path


def read_checkpoint_state(checkpoint: Path) -> tuple[dict, dict]:
    """(state.json, config.json) of a checkpoint folder, checked enough to resume from."""
    documents = []
    for name in (STATE_FILE, CONFIG_FILE):
        path = checkpoint / name
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise UserError(f"{path} is missing: {checkpoint} is not a babyllama checkpoint") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    state, config = documents
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("step"), int):
        raise UserError(f"{checkpoint / STATE_FILE}: not a checkpoint state this babyllama reads (format {CHECKPOINT_FORMAT})")
    return state, config


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(folder: Path, trainer, state: dict, config: dict) -> None:
    """Write a complete checkpoint of `trainer` into the new folder `folder`, every file fsynced."""
    import mindspore as ms

    folder.mkdir(parents=True)
    weight_names = {p.name for p in trainer.model.trainable_params()}
    params = trainer.parameters_for_checkpoint()
    # MindSpore logs a CRITICAL line of its own before it raises; the failure is said once, by the caller.
    logging.disable(logging.CRITICAL)
    try:
        ms.save_checkpoint([p for p in params if p.name in weight_names], str(folder / WEIGHTS_FILE),
                           format="safetensors")
        ms.save_checkpoint([p for p in params if p.name not in weight_names], str(folder / OPTIMIZER_FILE),
                           format="safetensors")
    finally:
        logging.disable(logging.NOTSET)
    atomic_write_json(folder / STATE_FILE, state)
    atomic_write_json(folder / CONFIG_FILE, config)
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
        _fsync_file(folder / name)
    fsync_dir(folder)


def load_checkpoint(trainer, checkpoint: Path) -> None:
    """Weights, moments, update count and dropout counters of a checkpoint into `trainer`."""
    import mindspore as ms

    from babyllama.dropout import DRAWS_SUFFIX

    params = {}
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
        path = checkpoint / name
        try:
            params.update(ms.load_checkpoint(str(path), format="safetensors"))
        except Exception as e:  # MindSpore reports unreadable files with several exception types
            raise UserError(f"{path}: cannot be read ({describe_failure(e)}); delete {checkpoint} to resume from the "
                            "one before it") from None
    not_loaded, _ = ms.load_param_into_net(trainer.checkpoint_cell, params)
    # Accumulation buffers are zero between steps; counters are new when dropout was just turned on.
    missing = [n for n in not_loaded if not n.startswith("grad_accum.") and not n.endswith(DRAWS_SUFFIX)]
    if missing:
        raise UserError(f"{checkpoint}: lacks {len(missing)} parameter(s) of the model, e.g. {', '.join(missing[:3])}")


def load_weights(trainer, checkpoint: Path) -> None:
    """Only the weights of a checkpoint (or of a Hugging Face folder) into `trainer`: a fine-tuning run's
    start (`--init-from`), whose optimizer state, step count and dropout counters stay new."""
    import mindspore as ms

    from babyllama.dropout import DRAWS_SUFFIX

    if is_hf_folder(checkpoint):
        _, weights, _ = read_hf_folder(checkpoint)
        params = {name: ms.Parameter(ms.Tensor(w), name=name) for name, w in weights.items()}
    else:
        path = checkpoint / WEIGHTS_FILE
        try:
            params = ms.load_checkpoint(str(path), format="safetensors")
        except Exception as e:  # MindSpore reports unreadable files with several exception types
            raise UserError(f"{path}: cannot be read ({describe_failure(e)})") from None
    not_loaded, _ = ms.load_param_into_net(trainer.model, params)
    missing = [n for n in not_loaded if not n.endswith(DRAWS_SUFFIX)]
    if missing:
        raise UserError(f"{checkpoint}: lacks {len(missing)} weight(s) of the model, e.g. {', '.join(missing[:3])}")


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why the checkpoint folder `checkpoint` cannot be resumed from, or None when it is complete.

    A file of CHECKPOINT_FILES missing, a safetensors file cut short or damaged (its header
    says how long the file must be; the tensors are not read), or a JSON file that does not
    hold an object. Cheap enough to run on every listing.
    """
    from safetensors import SafetensorError, safe_open

    for name in CHECKPOINT_FILES:
        path = checkpoint / name
        if not path.is_file():
            return f"{path} is missing"
        try:
            if name.endswith(".safetensors"):
                with safe_open(str(path), framework="numpy"):
                    pass
            elif not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
                return f"{path} does not hold a JSON object"
        except json.JSONDecodeError as e:
            return f"{path}:{e.lineno}: not valid JSON ({e.msg})"
        except (OSError, UnicodeDecodeError, SafetensorError) as e:
            return f"{path} cannot be read ({e})"
    return None


def remove_unfinished_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Delete the folders of checkpoints that were never published (a write killed or failed), and
    the replaced ones a publish did not get to delete. Returns what was deleted."""
    if not checkpoints_dir.is_dir():
        return []
    doomed = [Path(e.path) for e in os.scandir(checkpoints_dir) if e.is_dir() and e.name.startswith(".step_")]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def list_checkpoints(checkpoints_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for entry in os.scandir(checkpoints_dir):
        match = CHECKPOINT_NAME.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append(Checkpoint(int(match.group(1)), Path(entry.path)))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: Path) -> Checkpoint | None:
    """The one `latest` names, or the newest complete one if `latest` is missing or stale."""
    try:
        name = (checkpoints_dir / LATEST_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        name = ""
    match = CHECKPOINT_NAME.fullmatch(name)
    if match and (checkpoints_dir / name).is_dir():
        return Checkpoint(int(match.group(1)), checkpoints_dir / name)
    complete = list_checkpoints(checkpoints_dir)
    return complete[-1] if complete else None


# ---------------------------------------------------------------------------------------
# For inference: the model's config and weights, from a run, a checkpoint or a Hugging Face folder


@dataclass
class LoadedModel:
    """A checkpoint's model config and float32 weights under the model's parameter names."""

    cfg: ModelConfig
    weights: dict[str, np.ndarray]
    checkpoint: Path
    config: dict  # the checkpoint's config.json

    @property
    def tokenizer_path(self) -> str | None:
        return (self.config.get("tokenizer") or {}).get("path")

    def chat_template(self, tokenizer):
        """The chat template of this model with `tokenizer`: the one its config.json records, checked
        against the tokenizer, else the tokenizer's own. A UserError says why there is none (the
        tokenizer has no chat tokens, or is not the one the record names): chat, serve and export ask here."""
        from babyllama.chat_template import check_template, template_for  # the app lists runs without tokenizers

        recorded = self.config.get("chat_template")
        if recorded is not None:
            return check_template(recorded, tokenizer, str(self.checkpoint / CONFIG_FILE))
        return template_for(tokenizer)

    def describe(self) -> dict:
        return {
            "checkpoint": str(self.checkpoint),
            "model": {**vars(self.cfg), "head_dim": self.cfg.head_dim, "hidden_dim": self.cfg.hidden_dim},
            "parameters": param_count(self.cfg),
            "preset": self.config.get("preset"),
            "tokenizer": self.config.get("tokenizer"),
        }


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder `path` names: itself, or a run directory's latest checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; give a run directory (out/runs/NAME) or a checkpoint folder")
    if (path / WEIGHTS_FILE).is_file():
        return path
    checkpoints_dir = path / CHECKPOINTS_DIR
    if checkpoints_dir.is_dir():
        latest = latest_checkpoint(checkpoints_dir)
        if latest is None:
            raise UserError(f"{path}: the run has no complete checkpoint yet; wait for the first save")
        return latest.path
    raise UserError(
        f"{path}: neither a checkpoint folder (no {WEIGHTS_FILE}) nor a run directory (no checkpoints/); "
        "give out/runs/NAME or out/runs/NAME/checkpoints/step_N"
    )


def load_model_for_inference(path: str | Path) -> LoadedModel:
    """Config and weights of the checkpoint at `path`: a run directory, a checkpoint folder, or a
    Hugging Face Llama folder (`babyllama export --format hf`'s, or another Llama of a shape we have)."""
    from safetensors.numpy import load_file

    if is_hf_folder(path):
        cfg, weights, config = read_hf_folder(path)
        return LoadedModel(cfg, weights, Path(path), config)
    checkpoint = find_checkpoint(path)
    config_path = checkpoint / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{config_path} is missing: {checkpoint} is not a complete babyllama checkpoint") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{config_path}: has no \"model\" section; is this a babyllama checkpoint?")
    cfg = model_config_from_dict(config["model"], source=str(config_path))
    weights_path = checkpoint / WEIGHTS_FILE
    try:
        stored = load_file(str(weights_path))
    except Exception as e:  # safetensors reports a damaged file with several exception types
        raise UserError(f"{weights_path}: cannot be read as safetensors ({e})") from None
    weights = {}
    for name in expected_weight_names(cfg):
        if name not in stored:
            raise UserError(f"{weights_path}: lacks {name}; the checkpoint does not match its config.json")
        weights[name] = np.ascontiguousarray(stored[name], dtype=np.float32)
    embedding = weights["tok_embeddings.weight"]
    if embedding.shape != (cfg.vocab_size, cfg.dim):
        raise UserError(f"{weights_path}: tok_embeddings.weight is {embedding.shape}, config.json says "
                        f"({cfg.vocab_size}, {cfg.dim})")
    return LoadedModel(cfg, weights, checkpoint, config)
