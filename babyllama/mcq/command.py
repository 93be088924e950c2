"""`babyllama eval --task ceval|cmmlu`: a checkpoint's benchmark score, as text, JSON or progress
events (`babyllama.evaluate` parses the arguments and hands the command here)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

from babyllama.errors import UserError
from babyllama.events import Emit, Throttle, report_or_events
from babyllama.mcq.questions import TASKS, fixed_subset, load_subjects
from babyllama.mcq.scoring import Progress, report, score_questions

# Options of `babyllama eval` that mean something for token files only.
TOKEN_FILE_OPTIONS = ("tokens", "batches", "batch_size", "seq_len")


def check_arguments(args: argparse.Namespace) -> Path:
    """The benchmark folder; UserError for options that do not go with --task."""
    given = [f"--{name.replace('_', '-')}" for name in TOKEN_FILE_OPTIONS if getattr(args, name) is not None]
    if args.split != "all":
        given.append("--split")
    if given:
        raise UserError(f"--task {args.task} does not take {', '.join(given)} (those are for token files)")
    if len(args.data) != 1:
        raise UserError(f"--task {args.task} takes one --data folder, got {len(args.data)}")
    if args.shots < 0:
        raise UserError(f"--shots must be 0 or more, got {args.shots}")
    if args.questions is not None and args.questions < 1:
        raise UserError(f"--questions must be at least 1, got {args.questions}")
    return args.data[0]


def load_tokenizer_of(loaded):
    """The tokenizer the checkpoint's config names."""
    from babyllama.checkpoint import CONFIG_FILE
    from babyllama.tokenizer import load_tokenizer

    if loaded.tokenizer_path is None:
        raise UserError(f"{loaded.checkpoint / CONFIG_FILE}: names no tokenizer; the benchmark's text needs one")
    try:
        tokenizer = load_tokenizer(loaded.tokenizer_path)
    except UserError as e:
        raise UserError(f"{e} (the tokenizer named by {loaded.checkpoint / CONFIG_FILE})") from None
    if tokenizer.vocab_size > loaded.cfg.vocab_size:
        raise UserError(f"{tokenizer.path}: vocabulary {tokenizer.vocab_size} is larger than the model's "
                        f"{loaded.cfg.vocab_size}")
    return tokenizer


def benchmark_checkpoint(args: argparse.Namespace, emit: Emit | None = None) -> dict:
    """What `babyllama eval --task` reports, as plain data; `emit` gets the start and progress events."""
    from babyllama.checkpoint import load_model_for_inference
    from babyllama.decode import NumpyDecoder

    folder = check_arguments(args)
    task = TASKS[args.task]
    subjects = load_subjects(task, folder, args.subjects, args.shots)
    if args.questions is not None:
        subjects = fixed_subset(subjects, args.questions)
    loaded = load_model_for_inference(args.ckpt)
    tokenizer = load_tokenizer_of(loaded)
    decoder = NumpyDecoder(loaded.cfg, loaded.weights)
    total = sum(len(s.questions) for s in subjects)
    progress = None
    if emit is not None:
        emit({"event": "start", "checkpoint": str(loaded.checkpoint), "task": task.name, "data": str(folder),
              "shots": args.shots, "subjects": len(subjects), "total_questions": total})
        progress = _progress_events(emit, total)
    began = time.perf_counter()
    scored = score_questions(decoder, tokenizer, task, subjects, args.shots, progress)
    return {"checkpoint": str(loaded.checkpoint), "data": str(folder), "seq_len": loaded.cfg.max_seq_len,
            **report(task, subjects, scored, args.shots), "seconds": round(time.perf_counter() - began, 3)}


def _progress_events(emit: Emit, total: int) -> Progress:
    throttle = Throttle()
    began = time.perf_counter()

    def progress(questions: int, correct: int) -> None:
        if throttle.due(last=questions >= total):
            emit({"event": "progress", "questions": questions, "total_questions": total, "correct": correct,
                  "elapsed_s": round(time.perf_counter() - began, 3)})

    return progress


def format_report(result: dict) -> list[str]:
    """The text report, at most 80 columns wide."""
    task = TASKS[result["task"]]
    shots = "zero-shot" if result["shots"] == 0 else f"{result['shots']}-shot"
    lines = [f"{task.title} ({task.eval_split}), {shots}: {result['checkpoint']}", "",
             f"{'subject':<44}{'questions':>10}{'accuracy':>10}"]
    for name, entry in result["per_subject"].items():
        lines.append(f"{name:<44}{entry['questions']:>10,}{entry['accuracy']:>10.1%}")
    if result["per_category"]:
        lines += ["", f"{'category':<44}{'questions':>10}{'accuracy':>10}"]
        for name, entry in result["per_category"].items():
            lines.append(f"{name:<44}{entry['questions']:>10,}{entry['accuracy']:>10.1%}")
    lines += ["", f"{'all':<44}{result['questions']:>10,}{result['accuracy']:>10.1%}",
              f"average of the {result['subjects']} subjects {result['subject_average']:.1%}; "
              f"guessing scores {result['chance']:.0%}"]
    notes = []
    if result["fewer_shots"]:
        notes.append(f"note: {result['fewer_shots']:,} questions had fewer than {result['shots']} examples, to fit "
                     f"the model's {result['seq_len']} tokens")
    if result["cut"]:
        notes.append(f"note: {result['cut']:,} questions were cut from the left to fit {result['seq_len']} tokens "
                     "with no example")
    return lines + [line for note in notes for line in textwrap.wrap(note, 80, subsequent_indent="  ")]


def run(args: argparse.Namespace) -> int:
    result = report_or_events(args.progress, lambda emit: benchmark_checkpoint(args, emit))
    if result is None:
        return 0
    if args.json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
        return 0
    print("\n".join(format_report(result)))
    sys.stdout.flush()
    return 0
