"""The Playground's chat: one conversation that one or two checkpoints answer, each keeping its own answers.

The user's turns are shared; each panel (A, B) answers every turn asked while it was loaded,
and what it sends for the next turn holds its own earlier answers, never the other panel's, so
two checkpoints compared side by side each hold their own conversation. The messages are the
`serve --stdio` protocol's (`{"role", "content"}`); the server turns them into ids with the
checkpoint's chat template. See docs/ARCHITECTURE.md, "babyllama serve --stdio".
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The serve protocol that first took `messages` requests.
CHAT_PROTOCOL = 2


@dataclass
class Answer:
    """One panel's answer to one user turn, as it streams in."""

    settings: dict  # the sampling settings it was asked with, by the protocol's names
    text: str = ""
    outcome: str | None = None  # how it ended ("12 tokens · 58.2 tok/s · end of text"); None while it streams
    failed: bool = False  # it ended in an error: left out of what this panel sends next
    # (kind, message), each message a line as shown: kind "warning" (the server's, such as turns
    # dropped to fit the context), "stopped" or "error"
    notes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def streaming(self) -> bool:
        return self.outcome is None and not self.failed

    def note(self, kind: str, message: str) -> None:
        self.notes.append((kind, message))

    def fail(self, message: str) -> None:
        self.failed = True
        self.note("error", f"error: {message}")


@dataclass
class Exchange:
    """A user turn and each panel's answer to it."""

    system: str  # the system prompt in effect when it was asked ("" for none)
    user: str
    answers: dict[str, Answer]  # by panel: the panels that were asked


class Conversation:
    def __init__(self) -> None:
        self.system = ""  # the system prompt for the next turn
        self.exchanges: list[Exchange] = []

    def ask(self, user: str, slots: list[str], settings: dict) -> Exchange:
        """A new user turn, to be answered by the panels `slots`."""
        exchange = Exchange(self.system, user, {slot: Answer(dict(settings)) for slot in slots})
        self.exchanges.append(exchange)
        return exchange

    def answered(self, slot: str) -> list[tuple[Exchange, Answer]]:
        """The turns panel `slot` was asked, with its answers, in order."""
        return [(exchange, exchange.answers[slot]) for exchange in self.exchanges if slot in exchange.answers]

    def messages(self, slot: str) -> list[dict]:
        """What panel `slot` sends to answer the newest turn: the system prompt of that turn, the
        earlier turns it answered (without error) with its own answers, and the newest user turn."""
        newest = self.exchanges[-1]
        messages = [{"role": "system", "content": newest.system}] if newest.system else []
        for exchange in self.exchanges[:-1]:
            answer = exchange.answers.get(slot)
            if answer is not None and not answer.failed:
                messages += [{"role": "user", "content": exchange.user}, {"role": "assistant", "content": answer.text}]
        return messages + [{"role": "user", "content": newest.user}]

    def forget(self, slot: str) -> None:
        """Panel `slot` has another checkpoint (or none): its answers were the old one's and go;
        a turn nobody answered any more goes with them."""
        for exchange in self.exchanges:
            exchange.answers.pop(slot, None)
        self.exchanges = [exchange for exchange in self.exchanges if exchange.answers]

    def reset(self) -> None:
        """A new conversation; the system prompt stays for it."""
        self.exchanges = []

    def transcript(self, slot: str) -> str:
        """Panel `slot`'s conversation as plain text, a turn a paragraph: what is copied."""
        paragraphs = []
        system = ""
        for exchange, answer in self.answered(slot):
            if exchange.system and exchange.system != system:
                paragraphs.append(f"system: {exchange.system}")
            system = exchange.system
            paragraphs += [f"user: {exchange.user}", f"assistant: {answer.text}"]
        return "\n\n".join(paragraphs)


def why_no_chat(ready: dict) -> str | None:
    """Why a server whose `ready` event is `ready` cannot answer a conversation, in one line; None when it can."""
    protocol = ready.get("protocol")
    if not isinstance(protocol, int) or protocol < CHAT_PROTOCOL:
        return f"No chat: serve protocol {protocol} takes no conversations; update babyllama"
    if ready.get("chat") is not True:
        return "No chat: the checkpoint has no chat template (its tokenizer has no chat tokens)"
    return None
