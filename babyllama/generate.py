"""`babyllama generate`: continue prompts with a checkpoint, streaming the text as it comes.

The generation loop (`generate_pieces`, also used by serve, chat and the trainer's samples) and the
command; choosing each token is `sampling`'s. See docs/ARCHITECTURE.md, "Generating text".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from babyllama.checkpoint import CONFIG_FILE, load_model_for_inference
from babyllama.config import utf8_text
from babyllama.decode import BACKENDS, backend_words, make_decoder
from babyllama.errors import UserError
from babyllama.export_gguf import GGUF_TYPES
from babyllama.sampling import SamplingParams, choose_token

SEED_PROMPTS = (
    "床前明月光，疑是地上霜。举头望明月，",
    "请你讲一个童话故事：",
    "《小王子》是一本畅销童话书，它讲述了：",
)


# ---------------------------------------------------------------------------------------
# The generation loop


class Piece(NamedTuple):
    """Text given out while generating, and how many tokens have been generated so far.

    Tokens and pieces do not match one to one: a character made of several byte tokens comes
    out once all of them have, and SentencePiece may give no text for a token."""

    text: str
    tokens: int


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    stopped: str  # "eos", "length" (max_new_tokens), "context" (max_seq_len is full) or "cancelled"
    prompt_tokens: int
    seconds: float
    ttft_s: float | None  # from the start to the first token chosen

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0


def prompt_room(max_seq_len: int, max_new_tokens: int) -> int:
    """How many ids a prompt may have: the context less room for new tokens (at most half of it)."""
    return max_seq_len - min(max_new_tokens, max_seq_len // 2)


def prompt_ids(tokenizer, prompt: str, max_seq_len: int, max_new_tokens: int,
               warn: Callable[[str], None] | None = None) -> list[int]:
    """The prompt's ids, cut from the left to leave room for new tokens (see the module docstring)."""
    ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
    keep = prompt_room(max_seq_len, max_new_tokens)
    if len(ids) > keep:
        if warn is not None:
            warn(f"the prompt has {len(ids)} tokens; the context holds {max_seq_len}: "
                 f"keeping its last {keep} to leave room for new tokens")
        ids = ids[-keep:]
    return ids


def generate_pieces(decoder, tokenizer, prompt: str | Sequence[int], params: SamplingParams,
                    rng: np.random.Generator | None = None, should_stop: Callable[[], bool] | None = None,
                    warn: Callable[[str], None] | None = None,
                    stop_ids: Collection[int] = ()) -> Generator[Piece, None, Generation]:
    """Yield Pieces as they are generated; the generator's return value is the Generation.

    `prompt` is text, or ids that already leave room in the context (a chat template's prompt).
    `should_stop` is checked before each token: True stops with "cancelled". The end-of-text id
    and any of `stop_ids` (a chat template's end of an answer) stop with "eos", unwritten.
    """
    began = time.perf_counter()
    rng = rng if rng is not None else np.random.default_rng(params.seed)
    if isinstance(prompt, str):
        ids = prompt_ids(tokenizer, prompt, decoder.max_seq_len, params.max_new_tokens, warn)
    else:
        ids = list(prompt)
    room = decoder.max_seq_len - len(ids)
    if not ids or room < 1:
        raise ValueError(f"the prompt has {len(ids)} ids; it must have at least one and leave room in the "
                         f"{decoder.max_seq_len}-token context")
    budget = min(params.max_new_tokens, room)
    stream = tokenizer.incremental_decoder()
    seen = list(ids)
    generated: list[int] = []
    pieces: list[str] = []
    ttft = None
    stopped = "length" if params.max_new_tokens <= room else "context"
    logits = decoder.prefill(ids)
    while len(generated) < budget:
        if should_stop is not None and should_stop():
            stopped = "cancelled"
            break
        token = choose_token(logits, params, rng, seen if params.repetition_penalty != 1.0 else ())
        if ttft is None:
            ttft = time.perf_counter() - began
        if token == tokenizer.eos_id or token in stop_ids:
            stopped = "eos"
            break
        generated.append(token)
        seen.append(token)
        piece = stream.push(token)
        if piece:
            pieces.append(piece)
            yield Piece(piece, len(generated))
        if len(generated) < budget:
            logits = decoder.decode(token)
    rest = stream.flush()
    if rest:
        pieces.append(rest)
        yield Piece(rest, len(generated))
    return Generation("".join(pieces), generated, stopped, len(ids), time.perf_counter() - began, ttft)


def each_piece(pieces, use) -> Generation:
    """Hand every piece `generate_pieces` streams to `use`; the Generation it ends with."""
    while True:
        try:
            piece = next(pieces)
        except StopIteration as done:
            return done.value
        use(piece)


def generate(decoder, tokenizer, prompt: str | Sequence[int], params: SamplingParams, **kwargs) -> Generation:
    """The whole continuation at once (generate_pieces without the streaming)."""
    return each_piece(generate_pieces(decoder, tokenizer, prompt, params, **kwargs), lambda piece: None)


# ---------------------------------------------------------------------------------------
# Command line


def _write_out(piece: Piece) -> None:
    sys.stdout.write(piece.text)
    sys.stdout.flush()


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SamplingParams()
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, metavar="N",
                        help=f"stop after N new tokens (default {defaults.max_new_tokens}); the model's context "
                        "(max_seq_len, prompt included) may stop it sooner")
    parser.add_argument("--temperature", type=float, default=defaults.temperature, metavar="T",
                        help=f"0 = greedy (default {defaults.temperature})")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, metavar="K",
                        help="sample among the K most likely tokens (default 0 = all)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, metavar="P",
                        help="sample among the most likely tokens reaching probability P (default 1 = all)")
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty, metavar="R",
                        help="CTRL-style penalty on tokens already seen; 1 = none (default), 1.1-1.3 typical")
    parser.add_argument("--seed", type=int, default=defaults.seed, metavar="S",
                        help="sample k draws from seed S + k: the same seed gives the same text (default 0)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, type=Path, metavar="PATH",
                        help="a run directory (its latest checkpoint), a checkpoint folder or a Hugging Face "
                        "Llama folder")
    parser.add_argument("--tokenizer", type=Path, metavar="PATH",
                        help="tokenizer file or folder (default: the one the checkpoint's config names)")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy",
                        help="numpy (default: float32, exact, nothing to install), llamacpp (llama.cpp through "
                        "llama-cpp-python, at --precision; fastest at f16 and q8_0) or mindspore "
                        "(model.CachedDecoder, for Ascend/GPU)")
    parser.add_argument("--precision", choices=GGUF_TYPES,
                        help="llamacpp only: the weights' type in the GGUF made from the checkpoint and cached "
                        "beside it (default f16; q8_0 is fastest, f32 gives numpy's greedy text)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="llamacpp only: llama.cpp's threads (default: half the CPUs, at least 1; its threads "
                        "spin while waiting for each other, so more threads than idle cores is much slower)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--prompt", type=utf8_text, metavar="TEXT",
                       help="the text to continue (default: the seed's three prompts)")
    given.add_argument("--prompt-file", type=Path, metavar="F",
                       help="one prompt a line, or JSON lines with a \"question\" field; answers are written "
                       "as JSON lines {\"prompt\", \"answer\"}")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="with --prompt-file: write the JSON lines here (complete or not at all) instead of stdout")
    parser.add_argument("--num-samples", type=int, default=1, metavar="N", help="continuations per prompt (default 1)")
    add_sampling_arguments(parser)


def sampling_params_from_args(args: argparse.Namespace) -> SamplingParams:
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                            args.repetition_penalty, args.seed)
    params.validate()
    return params


def load_for_generation(args: argparse.Namespace):
    """(LoadedModel, tokenizer, decoder) for --ckpt, --tokenizer and --backend; the LoadedModel keeps no
    weights (the decoder has them)."""
    from babyllama.tokenizer import load_tokenizer

    loaded = load_model_for_inference(args.ckpt)
    tokenizer_path = args.tokenizer or loaded.tokenizer_path
    if tokenizer_path is None:
        raise UserError(f"{loaded.checkpoint / CONFIG_FILE}: names no tokenizer; give one with --tokenizer PATH")
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except UserError as e:
        if args.tokenizer is not None:
            raise
        raise UserError(f"{e} (the tokenizer named by {loaded.checkpoint / CONFIG_FILE}); "
                        "give it with --tokenizer PATH") from None
    if tokenizer.vocab_size > loaded.cfg.vocab_size:
        raise UserError(f"{tokenizer.path}: vocabulary {tokenizer.vocab_size} is larger than the model's "
                        f"{loaded.cfg.vocab_size}; give the tokenizer the model was trained with")
    decoder = make_decoder(loaded, args.backend, args.precision, say=_say, threads=args.threads)
    # The decoder holds the weights in its own layout: the checkpoint's arrays would double the memory.
    loaded.weights.clear()
    return loaded, tokenizer, decoder


def read_prompt_file(path: Path) -> list[str]:
    """Prompts of a file: one a line, or JSON objects with a "question" field; blank lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give a file with one prompt a line") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{number}: not valid JSON ({e.msg}); write one prompt or JSON object a line")
            if not isinstance(record.get("question"), str):
                raise UserError(f"{path}:{number}: the JSON object has no string \"question\" field")
            prompts.append(record["question"])
        else:
            prompts.append(line)
    if not prompts:
        raise UserError(f"{path}: holds no prompt")
    return prompts


def _say(message: str) -> None:
    print(f"babyllama: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"babyllama generate: warning: {message}", file=sys.stderr, flush=True)


def stop_reason(result: Generation, max_seq_len: int) -> str:
    """Why a generation ended, in words."""
    return {
        "eos": "eos (the model ended the text)",
        "length": "length (max new tokens)",
        "context": f"context (the prompt and the continuation fill the model's {max_seq_len}-token context)",
        "cancelled": "cancelled",
    }[result.stopped]


def _report(result: Generation, max_seq_len: int) -> None:
    ttft = f"{result.ttft_s * 1000:.0f} ms" if result.ttft_s is not None else "-"
    print(f"[{len(result.token_ids)} tokens, {result.tokens_per_s:.1f} tokens/s, first token {ttft}, "
          f"stopped: {stop_reason(result, max_seq_len)}]", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    params = sampling_params_from_args(args)
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.out is not None and args.prompt_file is None:
        raise UserError("--out goes with --prompt-file (JSON lines of prompt and answer)")
    if args.prompt_file is not None:
        prompts = read_prompt_file(args.prompt_file)
    elif args.prompt is not None:
        prompts = [args.prompt]
    else:
        prompts = list(SEED_PROMPTS)
    loaded, tokenizer, decoder = load_for_generation(args)
    print(f"babyllama generate: {loaded.checkpoint} ({backend_words(decoder)}), tokenizer {tokenizer.name}",
          file=sys.stderr, flush=True)
    records = []
    for prompt in prompts:
        for sample in range(args.num_samples):
            sample_params = SamplingParams(**{**vars(params), "seed": params.seed + sample})
            if args.prompt_file:
                result = generate(decoder, tokenizer, prompt, sample_params, warn=_warn)
                record = {"prompt": prompt, "answer": result.text}
                if args.num_samples > 1:
                    record["sample"] = sample
                records.append(record)
                if args.out is None:
                    print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                sys.stdout.write(prompt)
                sys.stdout.flush()
                result = each_piece(generate_pieces(decoder, tokenizer, prompt, sample_params, warn=_warn),
                                    _write_out)
                sys.stdout.write("\n\n")
                sys.stdout.flush()
            _report(result, decoder.max_seq_len)
    if args.out is not None:
        from babyllama.files import atomic_write_bytes

        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"babyllama generate: wrote {len(records)} answers to {args.out}", file=sys.stderr)
    return 0
