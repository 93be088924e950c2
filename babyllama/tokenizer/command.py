"""`babyllama tokenizer train/info/encode`. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from babyllama.errors import UserError
from babyllama.tokenizer.loading import load_tokenizer
from babyllama.tokenizer.training import DEFAULT_MAX_LINES, DEFAULT_VOCAB_SIZE, check_output_folder, train_sentencepiece


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser(
        "train",
        help="train a SentencePiece BPE tokenizer (byte fallback) on corpora",
        description="Train a SentencePiece BPE tokenizer with byte fallback on corpora, in the formats "
        "`babyllama prepare` reads. Writes DIR/tokenizer.model and DIR/babyllama_tokenizer.json.",
    )
    train.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files, folders or globs")
    train.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder, e.g. out/tokenizers/NAME"
    )
    train.add_argument(
        "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, metavar="N", help="vocabulary size (default %(default)s)"
    )
    train.add_argument(
        "--format", default="auto", metavar="FMT", help="corpus format (default: auto, sniffed per file)"
    )
    train.add_argument(
        "--max-lines",
        type=int,
        default=DEFAULT_MAX_LINES,
        metavar="N",
        help="train on at most N lines, sampled uniformly from all that are read (default %(default)s)",
    )
    train.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    train.add_argument("--verbose", action="store_true", help="show SentencePiece's own training log")

    info = actions.add_parser("info", help="show a tokenizer's kind, vocabulary, eos id and fingerprint")
    info.add_argument("path", type=Path, metavar="PATH", help="tokenizer.model file or tokenizer folder")
    info.add_argument("--json", action="store_true", help="print it as one JSON object")

    encode = actions.add_parser("encode", help="print the token ids of a text")
    encode.add_argument("path", type=Path, metavar="PATH", help="tokenizer.model file or tokenizer folder")
    encode.add_argument("text", metavar="TEXT")


def run(args: argparse.Namespace) -> int:
    if args.action == "train":
        return _run_train(args)
    if args.action == "info":
        return _run_info(args)
    return _run_encode(args)


def _run_train(args: argparse.Namespace) -> int:
    from babyllama.corpora import read_documents

    check_output_folder(args.out, args.force)
    if args.max_lines < 1:
        raise UserError(f"--max-lines must be at least 1, not {args.max_lines}")
    texts = ("".join(document.segments) for document in read_documents(args.inputs, args.format))
    train_sentencepiece(
        texts,
        args.out,
        args.vocab_size,
        max_lines=args.max_lines,
        force=args.force,
        log=lambda message: print(message, file=sys.stderr, flush=True),
        verbose=args.verbose,
    )
    tokenizer = load_tokenizer(args.out)
    print(f"{args.out}: vocabulary {tokenizer.vocab_size:,}, eos {tokenizer.eos_id}, {tokenizer.fingerprint}")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    description = load_tokenizer(args.path).describe()
    if args.json:
        print(json.dumps(description, ensure_ascii=False))
        return 0
    labels = {"sha256": "fingerprint", "vocab_size": "vocabulary"}
    for key, value in description.items():
        print(f"{labels.get(key, key) + ':':<13}{value if value is not None else '-'}")
    return 0


def _run_encode(args: argparse.Namespace) -> int:
    print(" ".join(map(str, load_tokenizer(args.path).encode(args.text))))
    return 0
