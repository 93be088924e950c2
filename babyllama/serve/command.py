"""`babyllama serve`: a checkpoint loaded once, answering over `--stdio` (the app's JSON-line
protocol) or `--http [HOST:]PORT` (the OpenAI API)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from babyllama.decode import backend_words
from babyllama.errors import UserError
from babyllama.generate import (
    add_model_arguments,
    add_sampling_arguments,
    load_for_generation,
    sampling_params_from_args,
)
from babyllama.serve.engine import Model

DEFAULT_QUEUE = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    transport = parser.add_mutually_exclusive_group(required=True)
    transport.add_argument("--stdio", action="store_true",
                           help="speak the JSON-line protocol on stdin/stdout (the app's playground)")
    transport.add_argument("--http", metavar="[HOST:]PORT",
                           help="serve the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions) on "
                           "HOST (default 127.0.0.1: this machine only; 0.0.0.0 for every interface) and PORT "
                           "(0: any free one)")
    add_model_arguments(parser)
    http = parser.add_argument_group("--http")
    http.add_argument("--api-key", metavar="KEY",
                      help="require 'Authorization: Bearer KEY' on every request (401 without it)")
    http.add_argument("--queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                      help=f"requests that may wait behind the one generating; more get 429 (default {DEFAULT_QUEUE})")
    http.add_argument("--model-name", metavar="ID",
                      help="the model's id in the API (default: the run's name, RUN/step_N for one of its "
                      "checkpoints, else the folder's name)")
    add_sampling_arguments(parser)
    parser.epilog = ("The sampling flags are the defaults of requests that do not say; with --http a request "
                     "without a seed draws a new one (--seed serves --stdio).")


def run(args: argparse.Namespace) -> int:
    if args.stdio:
        return run_stdio(args)
    return run_http(args)


def run_stdio(args: argparse.Namespace) -> int:
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
    return Server(Model(loaded, tokenizer, decoder, defaults), protocol_out).serve(sys.stdin.buffer)


def run_http(args: argparse.Namespace) -> int:
    from babyllama.serve.http_server import LOOPBACK, HttpServer, bind, model_id_for, parse_address, serve

    defaults = sampling_params_from_args(args)
    if args.queue < 0:
        raise UserError(f"--queue must be 0 or more, got {args.queue}")
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key is empty; give the key clients must send, or leave --api-key out")
    host, port = parse_address(args.http)
    sock = bind(host, port)  # before loading: a port in use is said at once
    try:
        loaded, tokenizer, decoder = load_for_generation(args)
        model = Model(loaded, tokenizer, decoder, defaults)
        server = HttpServer(model, args.model_name or model_id_for(args.ckpt), args.api_key, args.queue)
        if host not in LOOPBACK and args.api_key is None:
            server.note(f"warning: listening on {host}, reachable from other machines, without --api-key")
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        chat = f"chat template {model.template.name}" if model.template else "no chat template"
        announce = (f"babyllama serve: {server.model_id} ({backend_words(decoder)}, {chat}, context "
                    f"{model.max_seq_len}) at "
                    f"http://{shown}:{bound_port}/v1")
        return asyncio.run(serve(server, sock, announce))
    finally:
        sock.close()
