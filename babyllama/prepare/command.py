"""`babyllama prepare`. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from babyllama.corpora import FORMAT_HELP
from babyllama.errors import UserError
from babyllama.prepare.chunks import DEFAULT_CHUNK_BYTES
from babyllama.prepare.pipeline import prepare
from babyllama.prepare.progress import make_report
from babyllama.prepare.token_file import OutputPaths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files, folders or globs")
    parser.add_argument("--tokenizer", required=True, metavar="PATH", help="tokenizer.model file or tokenizer folder")
    parser.add_argument("--format", default="auto", metavar="FMT", help=FORMAT_HELP + "; default: auto")
    parser.add_argument("--out", required=True, type=Path, metavar="data/NAME.bin", help="the token file to write")
    parser.add_argument(
        "--min-tokens", type=int, default=6, metavar="N",
        help="drop documents with fewer ids than this, eos included (default: 6, the seed's rule)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="encoding threads, or processes for tokenizers other than SentencePiece "
        "(default: one per core; 1 encodes in the main thread)",
    )
    parser.add_argument(
        "--chunk-mb", type=float, default=DEFAULT_CHUNK_BYTES / 2**20, metavar="MB",
        help="raw input per unit of work and of resumption (default: %(default)g)",
    )
    parser.add_argument(
        "--progress", choices=["auto", "bar", "lines", "jsonl", "none"], default="auto",
        help="auto: a live bar on a terminal, else a line every few seconds; jsonl: JSON events on stdout; "
        "none: warnings only",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--restart", action="store_true", help="ignore an unfinished run's progress and start over")


def run(args: argparse.Namespace) -> int:
    if args.chunk_mb <= 0:
        raise UserError("--chunk-mb must be positive")
    report = make_report(args.progress)
    try:
        prepare(
            args.inputs,
            args.format,
            args.tokenizer,
            args.out,
            min_tokens=args.min_tokens,
            workers=args.workers,
            progress=report,
            chunk_bytes=max(1, int(args.chunk_mb * 2**20)),
            resume=not args.restart,
            force=args.force,
        )
    except KeyboardInterrupt:
        report({"event": "error", "message": "interrupted"})
        if OutputPaths(args.out).journal.exists():
            print("babyllama prepare: progress is kept; run the same command again to resume", file=sys.stderr)
        raise
    except UserError as e:
        report({"event": "error", "message": str(e)})
        raise
    return 0
