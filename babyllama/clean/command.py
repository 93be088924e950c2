"""`babyllama clean`. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from babyllama.clean.pipeline import DEFAULT_MEMORY_BYTES, EXAMPLES, clean
from babyllama.clean.report import describe_examples, make_report
from babyllama.clean.scan import DEFAULT_CHUNK_BYTES
from babyllama.clean.settings import CleanSettings, flag
from babyllama.clean.work import CleanPaths
from babyllama.corpora import FORMAT_HELP, expand_inputs
from babyllama.errors import UserError

SETTING_HELP = {
    "min_chars": "drop documents with fewer characters, whitespace left out",
    "max_chars": "drop documents with more characters",
    "min_cjk": "drop documents whose share of CJK ideographs (a Latin word counting as one character) is lower (0: off)",
    "max_repeated_lines": "drop documents whose share of lines repeating an earlier line is higher (1: off)",
    "ngram_chars": "the n of --max-repeated-ngrams, in characters",
    "max_repeated_ngrams": "drop documents whose share of characters inside repeated n-grams is higher (1: off)",
    "max_repeated_chars": "drop documents whose share of characters in runs of 4+ of one character is higher (1: off)",
    "max_urls": "drop documents whose share of characters in URLs is higher (1: off)",
    "max_digits": "drop documents whose share of digits is higher (1: off)",
    "max_punctuation": "drop documents whose share of punctuation and symbols is higher (1: off)",
    "threshold": "near duplicates: estimated Jaccard similarity of character shingles at or above this",
    "shingle_chars": "near duplicates: characters per shingle",
    "num_perm": "near duplicates: MinHash permutations",
    "seed": "near duplicates: MinHash seed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files, folders or globs")
    parser.add_argument("--format", default="auto", metavar="FMT", help=FORMAT_HELP + "; default: auto")
    parser.add_argument("--out", required=True, type=Path, metavar="data/NAME.clean.jsonl",
                        help='the JSON lines file to write, a {"text"} a line (prepare reads it with --format c4)')
    defaults = CleanSettings()
    for name, help_text in SETTING_HELP.items():
        default = getattr(defaults, name)
        parser.add_argument(f"--{flag(name)}", type=type(default), default=default, metavar="N",
                            help=f"{help_text} (default: {default:g})")
    parser.add_argument("--no-dedup", action="store_true", help="filters only: keep duplicates")
    parser.add_argument("--explain", type=int, default=0, metavar="N",
                        help="print up to N removed documents for each rule, with what was measured (an "
                        "existing --out with the same settings is explained without running again)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes for the scan (default: one per core; 1 runs in this process)")
    parser.add_argument("--chunk-mb", type=float, default=DEFAULT_CHUNK_BYTES / 2**20, metavar="MB",
                        help="raw input per unit of work and of resumption (default: %(default)g)")
    parser.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_BYTES / 2**20, metavar="MB",
                        help="what each pass of the duplicate search holds at most; more passes below it "
                        "(default: %(default)g)")
    parser.add_argument("--progress", choices=["auto", "bar", "lines", "jsonl", "none"], default="auto",
                        help="auto: a live line on a terminal, else a line every few seconds; jsonl: JSON "
                        "events on stdout; none: warnings only")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--restart", action="store_true", help="ignore an unfinished run's progress and start over")


def settings_from(args: argparse.Namespace) -> CleanSettings:
    values = {name: getattr(args, name) for name in SETTING_HELP}
    return CleanSettings(**values, dedup=not args.no_dedup).validate()


def existing_manifest(out: Path, inputs: list[str], settings: CleanSettings) -> dict | None:
    """The manifest of an existing --out made from the same input files with the same settings, or
    None; an error naming what differs when it was made otherwise."""
    try:
        manifest = json.loads(CleanPaths(out).manifest.read_text(encoding="utf-8"))
        files = [str(path) for path in expand_inputs(inputs)]
    except (OSError, ValueError, UserError):
        return None
    if not out.exists() or not isinstance(manifest, dict) or not isinstance(manifest.get("settings"), dict):
        return None
    wanted = settings.as_dict()
    differ = [f"--{flag(name)} {manifest['settings'].get(name)} (now {value})"
              for name, value in wanted.items() if manifest["settings"].get(name) != value]
    if [i.get("path") for i in manifest.get("inputs", [])] != files:
        differ.append("other inputs")
    if differ:
        raise UserError(f"{out} was made with {', '.join(differ)}, so --explain cannot show what these settings "
                        "remove; run with the same settings, or add --force to clean again with these")
    return manifest


def run(args: argparse.Namespace) -> int:
    if args.chunk_mb <= 0 or args.memory_mb <= 0:
        raise UserError("--chunk-mb and --memory-mb must be positive")
    if args.explain < 0:
        raise UserError("--explain N needs N of 0 or more")
    settings = settings_from(args)
    if args.explain and not args.force and (manifest := existing_manifest(args.out, args.inputs, settings)):
        print(describe_examples(manifest, args.explain))
        return 0
    report = make_report(args.progress)
    try:
        manifest = clean(args.inputs, args.format, args.out, settings, workers=args.workers, progress=report,
                         chunk_bytes=max(1, int(args.chunk_mb * 2**20)),
                         memory_bytes=int(args.memory_mb * 2**20),
                         examples=max(EXAMPLES, args.explain), resume=not args.restart, force=args.force)
    except KeyboardInterrupt:
        report({"event": "error", "message": "interrupted"})
        if CleanPaths(args.out).journal.exists():
            print("babyllama clean: progress is kept; run the same command again to resume", file=sys.stderr)
        raise
    except UserError as e:
        report({"event": "error", "message": str(e)})
        raise
    if args.explain:
        print(describe_examples(manifest, args.explain), file=sys.stderr if args.progress == "jsonl" else sys.stdout)
    return 0
