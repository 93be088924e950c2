"""`babyllama <command>`: one subcommand per stage of the pipeline.

Each command lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so `--help`
and light commands never pay for MindSpore or transformers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from babyllama import __version__
from babyllama.errors import UserError
from babyllama.files import out_of_space

# command -> (module, one-line help)
COMMANDS = {
    "sample": ("babyllama.sample", "download the sample corpus (三国演义) into data/sample/"),
    "tokenizer": ("babyllama.tokenizer.command", "train or inspect a tokenizer"),
    "clean": ("babyllama.clean.command", "filter low-quality documents and remove duplicates (exact and near) from corpora"),
    "prepare": ("babyllama.prepare.command", "tokenize corpora into a token file (.bin + manifest)"),
    "train": ("babyllama.train_command", "train a model on token files, keeping a run directory (out/runs/NAME)"),
    "runs": ("babyllama.runs.command", "list, inspect and stop training runs"),
    "generate": ("babyllama.generate", "continue prompts with a checkpoint, streaming the text"),
    "chat": ("babyllama.chat", "chat with a checkpoint in the terminal, in its chat template, streaming the answers"),
    "serve": ("babyllama.serve.command", "load a checkpoint once and answer requests: JSON lines (--stdio) or the "
              "OpenAI API over HTTP (--http)"),
    "eval": ("babyllama.evaluate", "mean loss and perplexity of a checkpoint over token files"),
    "export": ("babyllama.export", "export a checkpoint as a Hugging Face Llama folder or a llama2.c model.bin"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="babyllama",
        description="Pretrain a small Chinese Llama2 on MindSpore: corpora -> token files -> "
        "training -> checkpoints -> generation.",
    )
    parser.add_argument("--version", action="version", version=f"babyllama {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _parse_and_run(argv)
        finally:
            # Inside the try: output still buffered (a short table, --help) meets a closed pipe here.
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our output went away (`babyllama runs | head -1`): stop quietly with
        # the status of a process that SIGPIPE ended, as Unix tools do. Python flushes stdout
        # again at exit, so it is pointed at /dev/null first (the Python docs' SIGPIPE recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


def _parse_and_run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args) or 0
    except UserError as e:
        print(f"babyllama {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not out_of_space(e):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"babyllama {args.command}: error: {e.strerror}{where}; free some space and run it again",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"babyllama {args.command}: interrupted", file=sys.stderr)
        return 130
