"""`babyllama serve`: a checkpoint loaded once, answering over `--stdio` (the app's JSON-line protocol)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from babyllama.errors import UserError
from babyllama.generate import (
    add_model_arguments,
    add_sampling_arguments,
    load_for_generation,
    sampling_params_from_args,
)
from babyllama.serve.engine import Model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stdio", action="store_true", required=True,
                        help="speak the JSON-line protocol on stdin/stdout (the only transport)")
    add_model_arguments(parser)
    add_sampling_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from babyllama.serve.stdio import Server

    defaults = sampling_params_from_args(args)
    # The protocol owns the real stdout; whatever else prints (libraries, warnings) goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        loaded, tokenizer, decoder = load_for_generation(args)
    except UserError as e:
        protocol_out.write(json.dumps({"event": "error", "message": str(e)}, ensure_ascii=False) + "\n")
        protocol_out.flush()
        raise
    return Server(Model(loaded, tokenizer, decoder, args.backend, defaults), protocol_out).serve(sys.stdin.buffer)
