"""What the Train screen's form means: `check_form` turns its text into a `RunPlan` or per-field messages.

Messages and warnings are keyed by the field they concern ("model.n_heads", "data", "name",
...). Plain Python, tested without a terminal. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from babyllama import config as cfg
from babyllama.data import TokenFile, counted_windows, is_sft_data, open_token_file, training_windows
from babyllama.errors import UserError
from babyllama.planning import Parent, fresh_schedule, new_run_problems, read_parent, train_arguments
from babyllama.runs import RunDir, run_name_problem

# Folders under data/ searched for token files: data/*.bin and data/*/*.bin.
TOKEN_FILE_DEPTH = 2
NO_TOKEN_FILES = "no token files in data/ yet: make one on the Corpora screen (key 1), then come back"
NO_PARENT = "no parent: the model starts from random weights (f on a run in the runs table fills this in)"


@dataclass(frozen=True)
class FieldSpec:
    """One ModelConfig or TrainConfig field as the form shows it."""

    section: str
    name: str
    kind: type
    optional: bool
    help: str
    choices: tuple[str, ...] | None

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def parse(self, text: str):
        """The typed text as the field's value; ValueError with a short reason when it is not one."""
        text = text.strip()
        if self.optional and text.lower() in ("", "none"):
            return None
        if self.kind is int:
            try:
                return int(text.replace("_", ""))
            except ValueError:
                hint = " (or empty for none)" if self.optional else ""
                raise ValueError(f"{self.name} must be a whole number{hint}") from None
        if self.kind is float:
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{self.name} must be a number, e.g. 3e-4") from None
        if self.kind is bool:
            raise TypeError("booleans come from a switch, not text")
        if self.choices is not None and text not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}")
        return text

    def format(self, value) -> str:
        """A value as the form spells it: as the trainer's `--field=value` flag does, None left empty."""
        return "" if value is None else cfg.format_value(value)


def field_specs(section: str) -> list[FieldSpec]:
    specs = []
    for f in dataclasses.fields(cfg.SECTIONS[section]):
        kind, optional = cfg.field_type(f)
        choices = f.metadata.get("choices")
        specs.append(FieldSpec(section, f.name, kind, optional, f.metadata["help"], tuple(choices) if choices else None))
    return specs


FIELDS: dict[str, FieldSpec] = {spec.key: spec for section in cfg.SECTIONS for spec in field_specs(section)}


def field_values(model: cfg.ModelConfig, train: cfg.TrainConfig) -> dict[str, object]:
    """Every field's value, keyed "model.dim" etc."""
    return {f"{section}.{name}": value
            for section, values in cfg.config_to_dict(model, train).items() for name, value in values.items()}


def preset_values(name: str) -> dict[str, object]:
    """Every field's value in a preset, keyed "model.dim" etc."""
    return field_values(*cfg.preset(name))


def parent_values(parent: Parent) -> dict[str, object]:
    """Every field's value of a run fine-tuned from `parent`, as `babyllama train --init-from` takes
    them without flags: the parent's model and training settings, a schedule of its own."""
    return field_values(parent.model, fresh_schedule(parent.train))


# Token files


@dataclass(frozen=True)
class TokenFileEntry:
    """A .bin under data/, readable or not (then `problem` says why)."""

    path: Path
    token_file: TokenFile | None
    problem: str | None

    @property
    def tokenizer_path(self) -> str | None:
        tokenizer = self.token_file.tokenizer if self.token_file else None
        path = tokenizer.get("path") if tokenizer else None
        return path if isinstance(path, str) else None

    @property
    def is_sft(self) -> bool:
        """An SFT token file (conversations with a loss mask), for fine-tuning."""
        return self.token_file is not None and self.token_file.mask_path is not None


def find_token_files(data_dir: Path) -> list[TokenFileEntry]:
    """Token files in data/ and its subfolders (hidden ones skipped), sorted by path."""
    found = []
    for folder, dirs, files in os.walk(data_dir):
        depth = len(Path(folder).relative_to(data_dir).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth + 1 < TOKEN_FILE_DEPTH else []
        found += [Path(folder) / name for name in files if name.endswith(".bin") and not name.startswith(".")]
    entries = []
    for path in sorted(found):
        try:
            # Each file with the reader of its kind: an SFT file is not a broken pretraining one.
            entries.append(TokenFileEntry(path, open_token_file(path, sft=is_sft_data(path)), None))
        except UserError as e:
            entries.append(TokenFileEntry(path, None, str(e)))
    return entries


# The form and its checks


@dataclass
class RunForm:
    """The form's contents as typed: text for text fields, bools for switches."""

    token_files: list[TokenFile]
    tokenizer: str
    preset: str
    fields: dict[str, str | bool]
    name: str
    workers: str
    # Readable token files the form lists; 0 means the project has none yet.
    token_files_found: int | None = None
    # The run or checkpoint a fine-tuning run starts from (`--init-from`); empty for none.
    init_from: str = ""


@dataclass
class RunPlan:
    """A checked form: where the run goes and what the trainer is told."""

    run: RunDir
    args: list[str]
    workers: int
    model: cfg.ModelConfig
    train: cfg.TrainConfig


@dataclass
class FormCheck:
    plan: RunPlan | None
    errors: dict[str, str] = field(default_factory=dict)
    # Allowed but probably not meant, keyed like errors; they do not block a launch.
    warnings: dict[str, str] = field(default_factory=dict)
    # Either config on its own when it is valid, for the live numbers beside the form.
    model: cfg.ModelConfig | None = None
    train: cfg.TrainConfig | None = None
    workers: int = 1
    # The fine-tuning parent `init_from` names, when it reads as a complete checkpoint.
    parent: Parent | None = None


def _build(section: str, form: RunForm, errors: dict[str, str]):
    values = {}
    for spec in (s for s in FIELDS.values() if s.section == section):
        raw = form.fields.get(spec.key, "")
        if isinstance(raw, bool):
            values[spec.name] = raw
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError as e:
            errors[spec.key] = str(e)
    if any(key.startswith(f"{section}.") for key in errors):
        return None
    config = cfg.SECTIONS[section](**values)
    try:
        config.validate()
    except UserError as e:
        errors[e.field or section] = str(e)
        return None
    return config


def check_form(form: RunForm, runs_dir: Path, root: Path) -> FormCheck:
    """Every problem of the form, each keyed by its field, and the plan when there is none."""
    errors: dict[str, str] = {}
    model = _build("model", form, errors)
    train = _build("train", form, errors)
    check = FormCheck(None, errors, model=model, train=train)

    files = form.token_files
    if not files and form.token_files_found == 0:
        errors["data"] = NO_TOKEN_FILES
    elif not files:
        errors["data"] = "choose at least one token file (space)"
    tokenizer = form.tokenizer.strip()
    tokenizer_path = (root / tokenizer) if tokenizer else None
    # Until files are chosen there is no tokenizer to ask for: choosing them suggests it.
    if not tokenizer and files:
        errors["tokenizer"] = "give the tokenizer the token files were made with (a file or folder)"
    init_from = form.init_from.strip()
    init_from_path = (root / init_from) if init_from else None
    if init_from_path is not None:
        try:
            check.parent = read_parent(init_from_path)
        except UserError as e:
            errors["init_from"] = str(e)
    elif files and all(f.mask_path is not None for f in files):
        check.warnings["init_from"] = NO_PARENT
    for problem in new_run_problems(files, model, tokenizer_path, check.parent):
        errors.setdefault(problem.field, str(problem))

    name = form.name.strip()
    name_problem = run_name_problem(name)
    if name_problem is not None:
        errors["name"] = name_problem
    elif RunDir(runs_dir / name).exists():
        errors["name"] = f"{name} is taken: {shown_path(runs_dir / name, root)} holds a run; choose another name"

    try:
        check.workers = int(form.workers.strip())
        if check.workers < 1:
            raise ValueError
    except ValueError:
        errors["workers"] = "workers must be a whole number, at least 1 (1 runs without msrun)"

    if train is not None:
        check.warnings.update(interval_warnings(train))
    if errors:
        return check
    assert model is not None and train is not None and tokenizer_path is not None
    base = preset_values(form.preset)
    changed = {FIELDS[key].name: value for key, value in field_values(model, train).items() if value != base[key]}
    args = train_arguments(data=[f.path for f in files], tokenizer=tokenizer_path, preset=form.preset, fields=changed,
                           init_from=init_from_path)
    check.plan = RunPlan(RunDir(runs_dir / name), args, check.workers, model, train)
    return check


def interval_warnings(train: cfg.TrainConfig) -> dict[str, str]:
    """Intervals longer than the run: allowed (the trainer also evaluates and saves at the
    end), but most likely a max_steps lowered without them."""
    warnings = {}
    if train.max_steps and train.save_interval > train.max_steps:
        warnings["train.save_interval"] = (
            f"save_interval {train.save_interval:,} is beyond max_steps {train.max_steps:,}: "
            "no checkpoint before the end"
        )
    if train.max_steps and train.eval_interval > train.max_steps:
        warnings["train.eval_interval"] = (
            f"eval_interval {train.eval_interval:,} is beyond max_steps {train.max_steps:,}: "
            "validation only at the start and the end"
        )
    return warnings


def shown_path(path: Path, root: Path) -> str:
    """`path` relative to the project when it is inside it, as the form shows paths."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def default_run_name(preset: str, now: float, runs_dir: Path, dated: bool = True) -> str:
    """preset-YYYYmmdd-HHMM (`preset` alone when not `dated`), with -2, -3 ... when a run of that name exists."""
    stem = f"{preset}-{time.strftime('%Y%m%d-%H%M', time.localtime(now))}" if dated else preset
    name, n = stem, 1
    while RunDir(runs_dir / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


# Numbers shown beside the form


def epochs_of(model: cfg.ModelConfig, train: cfg.TrainConfig, files: list[TokenFile], workers: int) -> float | None:
    """How many passes over the training windows of `files` max_steps makes: of SFT files, over the
    windows that hold an answer token, the only ones a fine-tuning run draws."""
    if not train.max_steps:
        return None
    try:
        windows = training_windows([_counted_windows(f, model.max_seq_len) for f in files], train.val_fraction)
    except UserError:  # a mask gone since the file was listed: the listing will say so
        return None
    if windows <= 0:
        return None
    return train.max_steps * train.batch_size * train.grad_accum * workers / windows


# SFT files' counted windows by (mask, tokens, seq_len): each is a pass over the mask.
_SFT_WINDOWS: dict[tuple[Path, int, int], int] = {}
SFT_WINDOWS_KEPT = 64


def _counted_windows(token_file: TokenFile, seq_len: int) -> int:
    """counted_windows, an SFT file's kept while the form is edited."""
    if token_file.mask_path is None:
        return counted_windows(token_file, seq_len)
    key = (token_file.mask_path, token_file.n_tokens, seq_len)
    if key not in _SFT_WINDOWS:
        if len(_SFT_WINDOWS) >= SFT_WINDOWS_KEPT:
            _SFT_WINDOWS.clear()
        _SFT_WINDOWS[key] = counted_windows(token_file, seq_len)
    return _SFT_WINDOWS[key]
