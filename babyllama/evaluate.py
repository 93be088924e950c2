"""`babyllama eval`: a checkpoint's mean loss and perplexity over token files, or with `--task` its
C-Eval or CMMLU score (`babyllama.mcq`, to which `run` hands the command).

`mean_loss` and `validation_loss` are shared with the trainer, which passes its compiled loss
where this command passes `NumpyScorer`. What is measured and which windows:
docs/ARCHITECTURE.md, "Evaluating".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babyllama.config import BENCH_TASKS, TrainConfig
from babyllama.data import IGNORE_ID
from babyllama.errors import UserError
from babyllama.events import Emit, Throttle, add_progress_argument, report_or_events

SPLITS = ("all", "val")
DEFAULT_TOKENS = 32_768

BatchLoss = Callable[[np.ndarray, np.ndarray], float]
# Called after each batch with the windows and tokens scored so far.
Progress = Callable[[int, int], None]


@dataclass
class LossResult:
    loss: float  # mean -log p(target) over every scored token, natural log
    tokens: int
    windows: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf


def mean_loss(batch_loss: BatchLoss, batches: Iterable[tuple[np.ndarray, np.ndarray]],
              progress: Progress | None = None) -> LossResult:
    """The token-weighted mean of `batch_loss(x, y)` (a batch's mean loss) over (x, y) batches of (rows, seq).
    Targets equal to IGNORE_ID (an SFT batch's untrained ones) are not scored: a batch weighs its others."""
    total = 0.0
    tokens = windows = 0
    for x, y in batches:
        scored = int(np.count_nonzero(y != IGNORE_ID))
        total += float(batch_loss(x, y)) * scored
        tokens += scored
        windows += y.shape[0]
        if progress is not None:
            progress(windows, tokens)
    if tokens == 0:
        raise UserError("no windows to evaluate")
    return LossResult(total / tokens, tokens, windows)


def validation_loss(batch_loss: BatchLoss, dataset, batch_size: int, n_batches: int | None,
                    progress: Progress | None = None) -> LossResult:
    """Mean loss over the first `n_batches` of the dataset's fixed validation batches (the trainer's eval)."""
    return mean_loss(batch_loss, dataset.val_batches(batch_size, n_batches), progress)


def spread_batches(dataset, batch_size: int, n_windows: int):
    """`n_windows` of the dataset's training windows, evenly spread over all of them, in batches
    (an SFT dataset's with IGNORE_ID where the loss mask is 0)."""
    picks = dataset.spread_train_indices(n_windows)
    for start in range(0, len(picks), batch_size):
        yield dataset.train_batch(picks[start:start + batch_size])


def token_losses(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] for each row of logits (n, vocab) and target (n,), in float64."""
    peak = logits.max(axis=-1, keepdims=True)
    log_total = np.log(np.exp(logits - peak).sum(axis=-1, dtype=np.float64)) + peak[:, 0]
    return log_total - logits[np.arange(len(targets)), targets]


class NumpyScorer:
    """batch_loss(x, y) on the numpy decoder: each window run from position 0, every position scored
    but those whose target is IGNORE_ID (an SFT batch's questions and template)."""

    def __init__(self, cfg, weights):
        from babyllama.decode import NumpyDecoder

        self.decoder = NumpyDecoder(cfg, weights)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        total, scored = 0.0, 0
        for row, targets in zip(x, y):
            keep = targets != IGNORE_ID
            if keep.any():
                total += float(token_losses(self.decoder.score(row)[keep], targets[keep]).sum())
                scored += int(keep.sum())
        return total / scored if scored else 0.0


# ---------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Mean loss and perplexity of a checkpoint over token files, on a deterministic set of windows "
        "(the trainer's validation loss is the same computation); on SFT token files, over the answer tokens "
        "only; or, with --task, its C-Eval or CMMLU accuracy."
    )
    parser.add_argument("--ckpt", required=True, type=Path, metavar="PATH",
                        help="a run directory (its latest checkpoint), a checkpoint folder or an exported "
                        "Hugging Face folder")
    parser.add_argument("--data", required=True, nargs="+", type=Path, metavar="FILE.bin",
                        help="token files or folders of them, made with the model's tokenizer; with --task, "
                        "the benchmark's folder")
    parser.add_argument("--split", choices=SPLITS, default="all",
                        help="all: windows spread over the whole files (default); val: the trainer's "
                        "held-out validation windows")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--tokens", type=int, metavar="N",
                        help=f"score about N tokens, 0 = every window (default: {DEFAULT_TOKENS:,} for "
                        "--split all; the run's eval_iters batches for --split val)")
    budget.add_argument("--batches", type=int, metavar="N",
                        help="score N batches of --batch-size windows instead (fewer when the data has fewer)")
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help="windows a batch (default: the run's batch_size); with --split val it "
                        "decides which windows, as in the trainer")
    parser.add_argument("--seq-len", type=int, metavar="L",
                        help="tokens scored a window (default and maximum: the model's max_seq_len)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_progress_argument(parser)
    bench = parser.add_argument_group("benchmarks", "multiple-choice accuracy by the log-likelihood of the answer "
                                      "letter, in lm-evaluation-harness's prompt format")
    bench.add_argument("--task", choices=BENCH_TASKS,
                       help="score a benchmark instead: --data is its folder as published (C-Eval: dev/ and "
                       "val/; CMMLU: dev/ and test/)")
    bench.add_argument("--shots", type=int, default=0, metavar="K",
                       help="examples before each question, the first K of the subject's dev split (default 0)")
    bench.add_argument("--subjects", nargs="+", metavar="NAME", help="only these subjects (file names' stems)")
    bench.add_argument("--questions", type=int, metavar="N",
                       help="only N questions, spread over the subjects (the trainer's bench_questions subset)")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")


def _check_tokenizer(loaded, dataset) -> None:
    model_sha = (loaded.config.get("tokenizer") or {}).get("sha256")
    data_sha = (dataset.tokenizer or {}).get("sha256")
    if model_sha and data_sha and model_sha != data_sha:
        raise UserError(
            f"{dataset.files[0].path}: made with tokenizer {dataset.files[0].describe_tokenizer()}, but the "
            f"model at {loaded.checkpoint} was trained with {(loaded.config.get('tokenizer') or {}).get('name')} "
            f"({model_sha[:19]}…); evaluate on token files prepared with the model's tokenizer"
        )


def _check_chat_template(loaded, dataset) -> None:
    """An SFT file's conversations must be in the chat template the model reads: the one its
    checkpoint records, else its tokenizer's (unknown when that does not load: nothing to compare)."""
    from babyllama.chat_template import check_recorded
    from babyllama.checkpoint import CONFIG_FILE
    from babyllama.tokenizer import load_tokenizer

    model_template = loaded.config.get("chat_template")
    check_recorded(model_template, str(loaded.checkpoint / CONFIG_FILE))
    if model_template is None and loaded.tokenizer_path:
        try:
            tokenizer = load_tokenizer(loaded.tokenizer_path)
        except UserError:
            return
        model_template = loaded.chat_template(tokenizer).describe()  # a tokenizer without one is refused
    if model_template is None:
        return
    for token_file in dataset.files:
        theirs = token_file.manifest["chat_template"]
        if theirs != model_template:
            raise UserError(
                f"{token_file.path}: conversations in the chat template {theirs.get('name')!r} (ids "
                f"{theirs.get('special_ids')}), but the model at {loaded.checkpoint} reads "
                f"{model_template.get('name')!r} (ids {model_template.get('special_ids')}); evaluate on "
                "conversations prepared with the model's tokenizer"
            )


def evaluate_checkpoint(args: argparse.Namespace, emit: Emit | None = None) -> dict:
    """What `babyllama eval` reports, as plain data; `emit` gets the start and progress events.
    On SFT token files only the answer tokens (mask 1) are scored, as the trainer's validation loss."""
    from babyllama.checkpoint import load_model_for_inference
    from babyllama.data import SftDataset, TokenDataset, is_sft_data
    from babyllama.measures import bits_per_byte

    given = [name for name in ("shots", "subjects", "questions") if getattr(args, name) not in (None, 0)]
    if given:
        raise UserError(f"{', '.join('--' + name for name in given)} go with --task ceval or --task cmmlu")
    if args.tokens is not None and args.tokens < 0:
        raise UserError(f"--tokens must be 0 (every window) or more, got {args.tokens}")
    _positive("--batch-size", args.batch_size)
    _positive("--seq-len", args.seq_len)
    _positive("--batches", args.batches)
    loaded = load_model_for_inference(args.ckpt)
    cfg = loaded.cfg
    seq_len = args.seq_len or cfg.max_seq_len
    if seq_len > cfg.max_seq_len:
        raise UserError(f"--seq-len {seq_len} is longer than the model's context ({cfg.max_seq_len})")
    # A Hugging Face folder, or a checkpoint without its training settings, gets the defaults.
    train = {**vars(TrainConfig()), **(loaded.config.get("train") or {})}
    batch_size = args.batch_size or train["batch_size"]
    val_fraction = train["val_fraction"] if args.split == "val" else 0.0
    sft = is_sft_data(args.data)
    reader = SftDataset if sft else TokenDataset
    dataset = reader(args.data, seq_len=seq_len, val_fraction=val_fraction, vocab_size=cfg.vocab_size)
    _check_tokenizer(loaded, dataset)
    if sft:
        _check_chat_template(loaded, dataset)
    scorer = NumpyScorer(cfg, loaded.weights)
    if args.split == "val":
        if args.batches is not None:
            n_batches = args.batches
        elif args.tokens is None:
            n_batches = train["eval_iters"]
        else:
            n_batches = math.ceil(args.tokens / (batch_size * seq_len)) if args.tokens else None
        total_windows = dataset.val_batch_count(batch_size, n_batches) * batch_size if dataset.val_windows else 0
    else:
        if args.batches is not None:
            n_windows = args.batches * batch_size
        else:
            tokens = DEFAULT_TOKENS if args.tokens is None else args.tokens
            n_windows = math.ceil(tokens / seq_len) if tokens else dataset.train_windows
        total_windows = min(n_windows, dataset.train_windows)
    progress = None
    if emit is not None:
        emit({"event": "start", "checkpoint": str(loaded.checkpoint), "data": [str(f.path) for f in dataset.files],
              "split": args.split, "sft": sft, "seq_len": seq_len, "batch_size": batch_size,
              "total_windows": total_windows})
        progress = _progress_events(emit, total_windows)
    began = time.perf_counter()
    if args.split == "val":
        result = validation_loss(scorer, dataset, batch_size, n_batches, progress)
        n_bytes = _text_bytes(loaded, dataset, dataset.val_indices(batch_size, n_batches), validation=True)
    else:
        result = mean_loss(scorer, spread_batches(dataset, batch_size, n_windows), progress)
        n_bytes = _text_bytes(loaded, dataset, dataset.spread_train_indices(n_windows), validation=False)
    seconds = time.perf_counter() - began
    return {
        "checkpoint": str(loaded.checkpoint),
        "data": [str(f.path) for f in dataset.files],
        "split": args.split,
        "sft": sft,  # then only answer tokens are scored: "tokens" counts them
        "seq_len": seq_len,
        "batch_size": batch_size,
        "loss": result.loss,
        "perplexity": result.perplexity,
        "bpb": None if n_bytes is None else bits_per_byte(result.loss, n_bytes / result.tokens),
        "tokens": result.tokens,
        "bytes": n_bytes,
        "windows": result.windows,
        "seconds": round(seconds, 3),
    }


def _text_bytes(loaded, dataset, indices, validation: bool) -> int | None:
    """The bytes of the text the scored tokens decode to (measures.TextBytes), with the tokenizer the
    token files' manifest names, else the checkpoint's; None when neither loads."""
    from babyllama.measures import TextBytes, windows_bytes
    from babyllama.tokenizer import load_tokenizer

    for path in ((dataset.tokenizer or {}).get("path"), loaded.tokenizer_path):
        if not path:
            continue
        try:
            tokenizer = load_tokenizer(path)
        except UserError:
            continue
        return windows_bytes(TextBytes(tokenizer, dataset.eos_id), dataset, indices, validation)
    return None


def _progress_events(emit: Emit, total_windows: int) -> Progress:
    throttle = Throttle()
    began = time.perf_counter()

    def progress(windows: int, tokens: int) -> None:
        if throttle.due(last=windows >= total_windows):
            emit({"event": "progress", "windows": windows, "total_windows": total_windows, "tokens": tokens,
                  "elapsed_s": round(time.perf_counter() - began, 3)})

    return progress


def run(args: argparse.Namespace) -> int:
    if args.task is not None:
        from babyllama.mcq.command import run as run_benchmark

        return run_benchmark(args)
    report = report_or_events(args.progress, lambda emit: evaluate_checkpoint(args, emit))
    if report is None:
        return 0
    if args.json:
        print(json.dumps(report, ensure_ascii=False), flush=True)
        return 0
    print(f"{report['checkpoint']} on {', '.join(report['data'])} ({report['split']} windows of {report['seq_len']})")
    scored = "answer tokens (questions not scored)" if report["sft"] else "tokens"
    print(f"loss {report['loss']:.4f}  perplexity {report['perplexity']:.2f}  over {report['tokens']:,} {scored} "
          f"in {report['windows']:,} windows  [{report['seconds']:.1f} s]")
    if report["bpb"] is None:
        print("bits per byte unknown: neither the token files nor the checkpoint name a tokenizer that loads")
    else:
        text = "answer text" if report["sft"] else "text"
        print(f"bits per byte {report['bpb']:.4f}  ({report['bytes']:,} bytes of {text})")
    sys.stdout.flush()
    return 0
