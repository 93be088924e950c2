"""What both servers share: the loaded checkpoint (`Model`: its chat template or why it has none,
a conversation to prompt ids, one generation) and the one thread that generates (`Scheduler`:
requests in order, one at a time, a bounded queue, cancellation)."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence

from babyllama.chat import dropped_notice, fit_conversation
from babyllama.chat_template import USER, BadConversation, check_conversation
from babyllama.errors import UserError
from babyllama.generate import Generation, Piece, SamplingParams, each_piece, generate_pieces


def lone_surrogate(value) -> str | None:
    """What is wrong with a parsed JSON request holding a lone UTF-16 surrogate (from an escape such
    as "\\ud800") in one of its strings, which no tokenizer and no UTF-8 can carry; None if it holds none."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"the request holds the escape \\u{ord(e.object[e.start]):04x}, half of a UTF-16 surrogate pair "
                "without its other half, which is no character; write a character beyond U+FFFF as both halves "
                "(\\ud83d\\ude00) or as itself in UTF-8")
    return None


class Model:
    """A checkpoint loaded once to answer requests: tokenizer, decoder and chat template."""

    def __init__(self, loaded, tokenizer, decoder, defaults: SamplingParams):
        self.loaded = loaded
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.defaults = defaults
        try:
            self.template, self.no_chat = loaded.chat_template(tokenizer), None
        except UserError as e:
            self.template, self.no_chat = None, str(e)  # what a conversation is told
        self.description = {
            **loaded.describe(),
            "backend": decoder.backend,
            "precision": decoder.precision,
            "defaults": vars(defaults),
            "chat": self.template is not None,
            "chat_template": self.template.name if self.template is not None else None,
        }

    @property
    def max_seq_len(self) -> int:
        return self.decoder.max_seq_len

    def check_messages(self, messages) -> None:
        """A UserError unless this checkpoint chats and `messages` is a conversation asking for an answer."""
        if self.template is None:
            raise UserError(f"this checkpoint cannot chat: {self.no_chat}")
        if not isinstance(messages, list):
            raise UserError("\"messages\" must be a list of {\"role\", \"content\"} objects")
        try:
            check_conversation(messages, ends_with=USER)
        except BadConversation as e:
            raise UserError(f"messages: {e}") from None

    def conversation_prompt(self, messages: Sequence[dict], max_new_tokens: int) -> tuple[list[int], str | None]:
        """The ids asking for the answer to checked `messages`, inside the context (`chat.fit_conversation`),
        and the notice of the turns dropped for that (or None). A UserError when the last question alone
        does not fit."""
        ids, dropped = fit_conversation(self.template, messages, self.max_seq_len, max_new_tokens)
        notice = dropped_notice(dropped, self.max_seq_len, messages[0]["role"] == "system") if dropped else None
        return ids, notice

    def generate(self, prompt: str | Sequence[int], params: SamplingParams, use: Callable[[Piece], None],
                 should_stop: Callable[[], bool], warn: Callable[[str], None] | None = None,
                 chat: bool = False) -> Generation:
        """One generation, every piece handed to `use` as it comes: `generate.generate_pieces`, stopping
        at the chat template's stop ids when `chat`."""
        stop_ids = self.template.stop_ids if chat else ()
        pieces = generate_pieces(self.decoder, self.tokenizer, prompt, params, should_stop=should_stop,
                                 warn=warn, stop_ids=stop_ids)
        return each_piece(pieces, use)


class QueueFull(Exception):
    """The scheduler holds as many waiting requests as it may."""


class Job(ABC):
    """What a server hands the scheduler: `run()` on the generating thread, and `cancelled`, which
    the generation checks before each token (a cancelled job that has not started still runs, to
    say so, but no longer counts as waiting)."""

    def __init__(self):
        self.cancelled = threading.Event()

    @abstractmethod
    def run(self) -> None:
        """Generate, telling the server's client as it goes; never raises."""


class Scheduler:
    """Jobs run one at a time, in the order they came, on the thread that calls `run()`;
    at most `capacity` wait behind the running one (None: no limit)."""

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self._condition = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._closing = False

    def submit(self, job: Job) -> None:
        """Queue `job`; QueueFull when `capacity` jobs already wait, RuntimeError once closed."""
        with self._condition:
            if self._closing:
                raise RuntimeError("the scheduler is closed")
            if self.capacity is not None and self.waiting_count() >= self.capacity:
                raise QueueFull
            self._waiting.append(job)
            self._condition.notify()

    def waiting_count(self) -> int:
        """Jobs queued and not cancelled."""
        with self._condition:
            return sum(not job.cancelled.is_set() for job in self._waiting)

    @property
    def running(self) -> Job | None:
        return self._running

    def close(self, cancel: bool) -> None:
        """No more jobs: `run()` returns once those queued have run (each cancelled first with `cancel`)."""
        with self._condition:
            self._closing = True
            if cancel:
                for job in [*self._waiting, *([self._running] if self._running else [])]:
                    job.cancelled.set()
            self._condition.notify()

    def run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self._closing:
                    self._condition.wait()
                if not self._waiting:
                    return
                self._running = self._waiting.popleft()
            try:
                self._running.run()
            finally:
                with self._condition:
                    self._running = None
