"""`babyllama chat`: a conversation with a checkpoint in the terminal, answers streamed.

A conversation goes to the model through the checkpoint's chat template (`LoadedModel.chat_template`);
`fit_conversation`, which serve uses too, keeps it inside the model's context by dropping the oldest
turns. The commands and what the screen shows: the README, "babyllama chat".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from babyllama.config import utf8_text
from babyllama.decode import backend_words
from babyllama.errors import UserError
from babyllama.generate import (
    SamplingParams,
    add_model_arguments,
    add_sampling_arguments,
    each_piece,
    generate_pieces,
    load_for_generation,
    prompt_room,
    sampling_params_from_args,
)

# What ctrl-c at the prompt says.
INTERRUPTED_AT_PROMPT = "ctrl-c drops the line typed; /quit or ctrl-d ends the chat"
# The commands in one line of 80 columns, as the chat shows them.
COMMANDS = "/system TEXT: the system prompt (alone: none)  /reset: start over  /quit: end"


def fit_conversation(template, messages: Sequence[dict], max_seq_len: int,
                     max_new_tokens: int) -> tuple[list[int], int]:
    """The ids asking for the next answer to `messages` (ending with a user turn), leaving the room
    for new tokens that a prompt leaves (`generate.prompt_room`), and how many of the oldest turns
    were dropped for that. A system turn is always kept; a question and its answer go together.
    When the last question alone does not fit, a UserError says so."""
    system = list(messages[:1]) if messages and messages[0]["role"] == "system" else []
    turns = list(messages[len(system):])
    room = prompt_room(max_seq_len, max_new_tokens)

    def asking(pairs: int) -> list[int]:
        """The prompt without the oldest `pairs` questions and answers."""
        return template.prompt(system + turns[2 * pairs:])

    ids = asking(0)
    if len(ids) <= room:
        return ids, 0
    most = (len(turns) - 1) // 2
    fewest = asking(most)
    if len(fewest) > room:
        with_system = " with the system prompt" if system else ""
        raise UserError(
            f"the message does not fit: it takes {len(fewest)} tokens{with_system}, and the model's "
            f"{max_seq_len}-token context keeps {max_seq_len - room} for the answer, leaving {room}; "
            f"write a shorter one{' or shorten the system prompt' if system else ''}"
        )
    # The fewest pairs to drop, by bisection: a prompt only shortens as pairs go, and encoding the
    # whole conversation again for each pair made a long one (the Playground sends it all) slow.
    fits, too_long = most, 0
    while fits - too_long > 1:
        middle = (fits + too_long) // 2
        candidate = asking(middle)
        if len(candidate) <= room:
            fits, fewest = middle, candidate
        else:
            too_long = middle
    return fewest, 2 * fits


def dropped_notice(dropped: int, max_seq_len: int, system: bool) -> str:
    kept = "; system prompt kept" if system else ""
    return f"dropped the oldest {dropped} turns to fit the {max_seq_len}-token context{kept}"


def stop_words(result, params: SamplingParams, max_seq_len: int) -> str:
    """Why an answer ended, short enough for one line of 80 columns with the counts before it."""
    return {
        "eos": "eos",
        "length": f"length (--max-new-tokens {params.max_new_tokens})",
        "context": f"context (the model's {max_seq_len} tokens are full)",
    }[result.stopped]


class Chat:
    """One conversation: the system prompt, the turns so far, and answering the next message."""

    def __init__(self, template, tokenizer, decoder, params: SamplingParams, system: str | None, out, notes):
        self.template = template
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.params = params
        self.system = system
        self.turns: list[dict] = []
        self.out = out  # the answers
        self.notes = notes  # everything else: notices, stop reasons

    def note(self, text: str) -> None:
        self.notes.write(f"[{text}]\n")
        self.notes.flush()

    def messages(self, turns: list[dict]) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + turns

    def handle(self, line: str) -> bool:
        """One line typed: a command or a message. False once the chat should end."""
        command, _, rest = line.strip().partition(" ")
        if command == "/quit":
            return False
        if command == "/reset":
            self.turns = []
            self.note("the conversation starts over" + ("; the system prompt is kept" if self.system else ""))
        elif command == "/system":
            self.system = rest.strip() or None
            self.note(f"system prompt: {self.system}" if self.system else "no system prompt")
        elif command.startswith("/"):
            self.note(f"unknown command {command}; the commands: /system TEXT, /reset, /quit")
        elif line.strip():
            self.answer(line)
        return True

    def answer(self, text: str) -> None:
        asked = self.turns + [{"role": "user", "content": text}]
        try:
            ids, dropped = fit_conversation(self.template, self.messages(asked), self.decoder.max_seq_len,
                                            self.params.max_new_tokens)
        except UserError as e:
            self.note(str(e))
            return
        if dropped:
            asked = asked[dropped:]
            self.note(dropped_notice(dropped, self.decoder.max_seq_len, bool(self.system)))
        pieces = generate_pieces(self.decoder, self.tokenizer, ids, self.params, stop_ids=self.template.stop_ids)
        written = []

        def show(piece) -> None:
            written.append(piece.text)
            self.out.write(piece.text)
            self.out.flush()

        try:
            result = each_piece(pieces, show)
        except KeyboardInterrupt:
            pieces.close()
            stopped = "stopped: cancelled"
        else:
            stopped = f"{len(result.token_ids)} tokens, {result.tokens_per_s:.1f} tokens/s, stopped: " \
                      f"{stop_words(result, self.params, self.decoder.max_seq_len)}"
        self.out.write("\n")
        self.out.flush()
        self.note(stopped)
        self.turns = asked + [{"role": "assistant", "content": "".join(written)}]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Chat with a checkpoint in its chat template, answers streamed. Type a message and Enter; "
        "/system TEXT sets the system prompt (/system alone clears it), /reset starts over, /quit or "
        "ctrl-d ends, ctrl-c stops an answer (at the prompt, drops the line typed). Prompts and notices go to stderr, "
        "answers alone to stdout. The oldest turns are dropped when the conversation outgrows the model's context. "
        "Reads one message a line from a pipe too."
    )
    add_model_arguments(parser)
    parser.add_argument("--system", type=utf8_text, metavar="TEXT", help="the system prompt to start with (/system changes it)")
    add_sampling_arguments(parser)


def _is_text(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lines(interactive: bool):
    """What the user types, a line at a time, until ctrl-d or the end of the input."""
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        # The prompt is for the terminal, never part of the answers: input() writes it to stdout, so
        # with stdout redirected it goes to stderr (readline needs it passed when stdout is the terminal).
        prompt_to_stdout = sys.stdout.isatty()
        while True:
            try:
                if not prompt_to_stdout:
                    print("> ", end="", file=sys.stderr, flush=True)
                line = input("> " if prompt_to_stdout else "")
            except EOFError:
                print(file=sys.stderr)
                return
            except KeyboardInterrupt:  # at the prompt, as in a shell: the line is dropped, the chat goes on
                print(f"\n[{INTERRUPTED_AT_PROMPT}]", file=sys.stderr, flush=True)
                continue
            except UnicodeDecodeError:  # a strict terminal encoding
                line = None
            if line is None or not _is_text(line):
                # Bytes that are not UTF-8 come through as lone surrogates, which no tokenizer encodes.
                print("[the line is not UTF-8 text; skipped]", file=sys.stderr, flush=True)
                continue
            yield line
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            print(f"[line {number} is not UTF-8 text ({e.reason} at byte {e.start}); skipped]", file=sys.stderr,
                  flush=True)


def run(args: argparse.Namespace) -> int:
    params = sampling_params_from_args(args)
    loaded, tokenizer, decoder = load_for_generation(args)
    try:
        template = loaded.chat_template(tokenizer)
    except UserError as e:
        raise UserError(f"{loaded.checkpoint} cannot chat: {e}") from None
    interactive = sys.stdin.isatty()
    print(f"babyllama chat: {loaded.checkpoint}\n{backend_words(decoder)}, tokenizer {tokenizer.name}, "
          f"template {template.name}, context {decoder.max_seq_len} tokens", file=sys.stderr, flush=True)
    if interactive:
        print(f"Type a message and Enter.\n{COMMANDS}", file=sys.stderr, flush=True)
    chat = Chat(template, tokenizer, decoder, params, args.system, sys.stdout, sys.stderr)
    for line in _lines(interactive):
        if not chat.handle(line):
            break
    return 0
