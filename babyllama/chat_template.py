"""Chat templates: how a conversation becomes token ids, with the loss mask that says which ids
fine-tuning trains on, and the ids that ask a model for its next answer. One template per
tokenizer, never guessed: ours for tokenizers `babyllama tokenizer train` made (special tokens
no text can produce), ChatGLM2-6B's own conversation format for its tokenizer. The formats are
written out in docs/ARCHITECTURE.md, "Chat templates"."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from babyllama.errors import UserError
from babyllama.tokenizer import CHAT_TOKENS, Tokenizer

ROLES = ("system", "user", "assistant")
SYSTEM, USER, ASSISTANT = ROLES
*_, END = CHAT_TOKENS  # <|end|>
MARKERS = dict(zip(ROLES, CHAT_TOKENS))  # <|system|> <|user|> <|assistant|>


class BadConversation(ValueError):
    """A conversation the template cannot encode; the message says why."""


def check_conversation(messages: Sequence[dict], *, ends_with: str) -> None:
    """A conversation is an optional system turn, then user and assistant turns taking turns,
    starting with the user and ending with `ends_with`; each turn's content is a string."""
    if not messages:
        raise BadConversation("the conversation has no turns")
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadConversation(f"turn {number}: the role must be one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise BadConversation(f"turn {number} ({message['role']}): the content must be a string")
    turns = messages[1:] if messages[0]["role"] == SYSTEM else messages
    for number, message in enumerate(turns):
        expected = (USER, ASSISTANT)[number % 2]
        if message["role"] != expected:
            where = len(messages) - len(turns) + number + 1
            raise BadConversation(f"turn {where} is {message['role']} where {expected} was expected "
                                  "(a system turn may come first, then user and assistant take turns)")
    if not turns or turns[-1]["role"] != ends_with:
        article = "an" if ends_with == ASSISTANT else "a"
        raise BadConversation(f"the conversation must end with {article} {ends_with} turn")


class ChatTemplate(ABC):
    """Conversations to ids for one tokenizer."""

    name: str

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    @abstractmethod
    def encode(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        """A whole conversation (ending with an assistant turn) as a token file's document: its ids,
        ending with the tokenizer's end-of-text id, and a mask of the same length (1 = trained on:
        the assistant's answers and what ends them)."""

    @abstractmethod
    def prompt(self, messages: Sequence[dict]) -> list[int]:
        """The ids that ask for the next assistant turn of a conversation ending with a user turn."""

    @property
    @abstractmethod
    def stop_ids(self) -> frozenset[int]:
        """Ids that end an assistant turn when a model writes one."""

    def describe(self) -> dict:
        """What token-file manifests, tokenizer folders and checkpoints record."""
        return {"name": self.name}


class BabyllamaTemplate(ChatTemplate):
    """`<|system|>S<|end|><|user|>U<|end|><|assistant|>A<|end|>...` then end-of-text; each content
    encoded on its own, so no text can run into a marker."""

    name = "babyllama-chat-v1"

    def __init__(self, tokenizer: Tokenizer, special_ids: dict[str, int]):
        super().__init__(tokenizer)
        self.marker_ids = {role: special_ids[marker] for role, marker in MARKERS.items()}
        self.end_id = special_ids[END]

    def _turns(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        mask: list[int] = []
        for message in messages:
            content = self.tokenizer.encode(message["content"])
            trained = int(message["role"] == ASSISTANT)
            ids += [self.marker_ids[message["role"]], *content, self.end_id]
            mask += [0] + [trained] * (len(content) + 1)
        return ids, mask

    def encode(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        check_conversation(messages, ends_with=ASSISTANT)
        ids, mask = self._turns(messages)
        return ids + [self.tokenizer.eos_id], mask + [0]

    def prompt(self, messages: Sequence[dict]) -> list[int]:
        check_conversation(messages, ends_with=USER)
        ids, _ = self._turns(messages)
        return ids + [self.marker_ids[ASSISTANT]]

    @property
    def stop_ids(self) -> frozenset[int]:
        return frozenset((self.end_id, self.tokenizer.eos_id))

    def describe(self) -> dict:
        return {"name": self.name, "special_ids": {**{MARKERS[r]: i for r, i in self.marker_ids.items()},
                                                   END: self.end_id}}


class ChatGLM2Template(ChatTemplate):
    """ChatGLM2-6B's conversation format, as its own code builds it: `[gMASK]sop`, then the text
    "[Round 1]\\n\\n问：Q1\\n\\n答：A1\\n\\n[Round 2]\\n\\n问：Q2\\n\\n答：" encoded whole, then the last
    answer encoded on its own and end-of-text. Only that last answer (and its end) is trained, as in
    ChatGLM2's fine-tuning code; earlier answers are history. ChatGLM2 has no system turn: its text
    comes first, followed by a blank line."""

    name = "chatglm2"

    def __init__(self, tokenizer: Tokenizer):
        super().__init__(tokenizer)
        # Once: listing the special ids walks all 64,789 pieces, far longer than encoding a conversation.
        specials = tokenizer.special_ids()
        self.prefix = [specials["[gMASK]"], specials["sop"]]

    def _history_text(self, messages: Sequence[dict]) -> str:
        system = [m["content"] for m in messages if m["role"] == SYSTEM]
        turns = [m["content"] for m in messages if m["role"] != SYSTEM]
        text = "".join(f"{s}\n\n" for s in system)
        rounds = [turns[i:i + 2] for i in range(0, len(turns), 2)]
        for number, pair in enumerate(rounds, 1):
            text += f"[Round {number}]\n\n问：{pair[0]}\n\n答："
            if len(pair) == 2:
                text += f"{pair[1]}\n\n"
        return text

    def prompt(self, messages: Sequence[dict]) -> list[int]:
        check_conversation(messages, ends_with=USER)
        return self.prefix + self.tokenizer.encode(self._history_text(messages))

    def encode(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        check_conversation(messages, ends_with=ASSISTANT)
        asked = self.prompt(messages[:-1])
        answer = self.tokenizer.encode(messages[-1]["content"]) + [self.tokenizer.eos_id]
        return asked + answer, [0] * len(asked) + [1] * len(answer)

    @property
    def stop_ids(self) -> frozenset[int]:
        return frozenset((self.tokenizer.eos_id,))


def template_for(tokenizer: Tokenizer) -> ChatTemplate:
    """The one template `tokenizer` has; a tokenizer without one is refused, naming what to do."""
    if tokenizer.kind == "chatglm":
        return ChatGLM2Template(tokenizer)
    specials = tokenizer.special_ids()
    missing = [token for token in CHAT_TOKENS if token not in specials]
    if missing:
        raise UserError(
            f"{tokenizer.path}: the tokenizer has no chat tokens ({', '.join(missing)}), so it cannot "
            "encode conversations; train one with `babyllama tokenizer train` (which reserves them), "
            "or use ChatGLM2-6B's tokenizer"
        )
    return BabyllamaTemplate(tokenizer, specials)


def check_recorded(recorded, where: str) -> None:
    """Refuse a recorded template that is not the object `describe()` gives (a hand-edited config.json)."""
    if recorded is not None and not isinstance(recorded, dict):
        raise UserError(f"{where}: \"chat_template\" is not an object (it is {recorded!r}); remove it to use the "
                        "tokenizer's own template")


def check_template(recorded: dict | None, tokenizer: Tokenizer, where: str) -> ChatTemplate:
    """The template `where` (a manifest, a checkpoint) recorded, checked against the tokenizer's own."""
    template = template_for(tokenizer)
    if recorded is None:
        raise UserError(f"{where}: records no chat template; it was not made for conversations")
    check_recorded(recorded, where)
    if recorded != template.describe():
        raise UserError(
            f"{where}: records the chat template {recorded.get('name')!r} with ids {recorded.get('special_ids')}, "
            f"but the tokenizer {tokenizer.path} has {template.name!r} with ids {template.describe().get('special_ids')}; "
            "use the tokenizer it was made with"
        )
    return template
