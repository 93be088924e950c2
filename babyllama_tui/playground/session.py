"""A Playground session as Markdown (`session_markdown`): continuations and conversations, saved
under out/playground/ (`save_session`).

Markdown rather than JSON lines: the file is for people, to keep beside their notes, read in a
terminal, diff between checkpoints, paste into a report or an issue; nothing reads it back. The
sampling settings are written as `babyllama generate` takes them, so a continuation can be made
again from the command line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from babyllama.files import atomic_write_bytes
from babyllama_tui.playground.conversation import Answer, Exchange


@dataclass(frozen=True)
class PanelRecord:
    """One panel as saved: which checkpoint wrote what, with which prompt and settings."""

    title: str  # "A · tiny step 5,000"
    checkpoint: str  # its folder, relative to the project when inside it
    prompt: str
    settings: dict  # the sampling settings of its generation, by the protocol's names
    continuation: str
    outcome: str  # how the generation went: "42 tokens · 58.2 tok/s · end of text"


@dataclass(frozen=True)
class ChatRecord:
    """One panel's conversation as saved."""

    title: str
    checkpoint: str
    turns: list[tuple[Exchange, Answer]]  # Conversation.answered(slot)


def settings_flags(settings: dict) -> str:
    """`--top-k 40 --seed 0 ...`, as `babyllama generate` takes them."""
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in settings.items())


def fenced(text: str) -> str:
    """`text` verbatim in a Markdown code block, whose fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def prompt_and_settings(record: PanelRecord) -> list[str]:
    return [f"Settings (as `babyllama generate` takes them): `{settings_flags(record.settings)}`", "",
            "Prompt:", "", fenced(record.prompt), ""]


def chat_lines(record: ChatRecord) -> list[str]:
    """A panel's conversation: its turns in order, each answer with how it ended and the server's notes;
    the settings once when every answer had the same."""
    settings = {settings_flags(answer.settings) for _, answer in record.turns}
    lines = [f"## Chat: {record.title}", "", f"- checkpoint: `{record.checkpoint}`"]
    if len(settings) == 1:
        lines.append(f"- settings (as `babyllama generate` takes them): `{settings.pop()}`")
    lines.append("")
    system = ""
    for exchange, answer in record.turns:
        if exchange.system and exchange.system != system:
            lines += ["System prompt:", "", fenced(exchange.system), ""]
        system = exchange.system
        how = answer.outcome or ("failed" if answer.failed else "still answering when saved")
        if len(settings) > 1:
            how += f" · `{settings_flags(answer.settings)}`"
        lines += ["User:", "", fenced(exchange.user), "", f"Assistant ({how}):", "", fenced(answer.text), ""]
        lines += [f"> {message}" for _, message in answer.notes]
        lines += [""] if answer.notes else []
    return lines


def session_markdown(records: list[PanelRecord], saved_at: str, chats: list[ChatRecord] = ()) -> str:
    """The panels' continuations, then their conversations, as one Markdown document; a prompt and
    settings that all continuations share are written once, first."""
    lines = [f"# Playground session, {saved_at}", ""]
    shared = len({(record.prompt, settings_flags(record.settings)) for record in records}) == 1
    if shared:
        lines += prompt_and_settings(records[0])
    for record in records:
        lines += [f"## {record.title}", "", f"- checkpoint: `{record.checkpoint}`", f"- {record.outcome}", ""]
        if not shared:
            lines += prompt_and_settings(record)
        lines += [fenced(record.continuation), ""]
    for chat in chats:
        lines += chat_lines(chat)
    return "\n".join(lines)


def save_session(folder: Path, text: str, now: float) -> Path:
    """Write `text` to a new file in `folder` named for the time `now` (never over an earlier save),
    atomically; the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path = folder / f"{stamp}.md"
    count = 1
    while path.exists():
        count += 1
        path = folder / f"{stamp}-{count}.md"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
