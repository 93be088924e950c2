"""Record shapes: a format's JSON record to the segments of one document, or the reason it
is not one. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NamedTuple

# An escaped UTF-16 surrogate: either half of a pair (fine once json joins them) or a lone half,
# which is no character at all and cannot be encoded for a tokenizer.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]")
SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89abAB]")
NOT_UNICODE = "text holds an unpaired surrogate or undecodable bytes, so it is not valid UTF-8"


class Malformed(Exception):
    """A record that parsed as JSON but does not have the format's shape."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _string_problem(record, name: str) -> str:
    if not isinstance(record, dict):
        return f"expected a JSON object, found {json_type(record)}"
    if name not in record:
        return f"missing field {name!r}"
    return f"field {name!r} is {json_type(record[name])}, expected a string"


def _string_field(record, name: str, where: str = "") -> str:
    try:
        value = record[name]
        if type(value) is str:
            return value
    except (KeyError, TypeError):
        pass
    raise Malformed(where + _string_problem(record, name))


def single_field(name: str) -> Callable[[object], tuple[str, ...]]:
    def segments(record) -> tuple[str, ...]:
        return (_string_field(record, name),)

    return segments


def _baike_segments(record) -> tuple[str, ...]:
    if not isinstance(record, dict):
        raise Malformed(f"expected a JSON object, found {json_type(record)}")
    if "sections" not in record:
        raise Malformed("missing field 'sections'")
    sections = record["sections"]
    if type(sections) is not list:
        raise Malformed(f"field 'sections' is {json_type(sections)}, expected a list")
    # The seed adds "title：summary" only when both are strings (its try/except), and every
    # section as "title：content。".
    title, summary = record.get("title"), record.get("summary")
    parts = [title, "：", summary] if type(title) is str and type(summary) is str else []
    for number, section in enumerate(sections):
        where = f"sections[{number}]: "
        parts += (_string_field(section, "title", where), "：", _string_field(section, "content", where), "。")
    return ("".join(parts),)


def _wudao_segments(record) -> tuple[str, ...]:
    return (_string_field(record, "title") + _string_field(record, "content"),)


def _medical_sft_segments(record) -> tuple[str, ...]:
    # The seed encodes question and answer separately and concatenates the ids.
    question = _string_field(record, "instruction") + _string_field(record, "input")
    return (question, _string_field(record, "output"))


class Turns(NamedTuple):
    """A conversation from an sft-* record: its turns' roles and contents, in order. Whether the
    turns make a conversation (who speaks when) is the chat template's to say, at encoding."""

    roles: tuple[str, ...]
    contents: tuple[str, ...]


CONVERSATION_ROLES = ("system", "user", "assistant")
# The field holding the turns: minimind's and ShareGPT's name, then OpenAI's and TRL's.
CONVERSATION_FIELDS = ("conversations", "messages")
# The ShareGPT spelling: {"from": "human" | "gpt" | "system", "value"}.
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _object(record) -> dict:
    if not isinstance(record, dict):
        raise Malformed(f"expected a JSON object, found {json_type(record)}")
    return record


def _optional_string(record: dict, name: str, where: str = "") -> str:
    value = record.get(name)
    if value is None:
        return ""
    if type(value) is not str:
        raise Malformed(f"{where}field {name!r} is {json_type(value)}, expected a string")
    return value


def _alpaca_turns(record) -> Turns:
    # The user turn is the instruction, then its input on a line of its own when there is one; an
    # optional "system" comes first and an optional "history" of [question, answer] pairs before it
    # (the layout LLaMA-Factory and most Chinese instruction sets use).
    record = _object(record)
    roles: list[str] = []
    contents: list[str] = []
    if system := _optional_string(record, "system"):
        roles.append("system")
        contents.append(system)
    history = record.get("history")
    if history is not None and type(history) is not list:
        raise Malformed(f"field 'history' is {json_type(history)}, expected a list of [question, answer] pairs")
    for number, pair in enumerate(history or []):
        if type(pair) is not list or len(pair) != 2 or not all(type(text) is str for text in pair):
            raise Malformed(f"history[{number}]: expected a [question, answer] pair of strings")
        roles += ("user", "assistant")
        contents += pair
    instruction = _string_field(record, "instruction")
    extra = _optional_string(record, "input")
    roles += ("user", "assistant")
    contents += (instruction + "\n" + extra if extra else instruction, _string_field(record, "output"))
    return Turns(tuple(roles), tuple(contents))


def _conversation_turns(record) -> Turns:
    # minimind's {"conversations": [{"role", "content"}]}, OpenAI's and TRL's {"messages": [...]} of the
    # same turns, or ShareGPT's {"from", "value"} turns; an optional top-level "system" in each.
    record = _object(record)
    field = next((name for name in CONVERSATION_FIELDS if name in record), None)
    if field is None:
        raise Malformed("missing field 'conversations' (or 'messages')")
    turns = record[field]
    if type(turns) is not list:
        raise Malformed(f"field {field!r} is {json_type(turns)}, expected a list")
    system = _optional_string(record, "system")
    roles: list[str] = ["system"] if system else []
    contents: list[str] = [system] if system else []
    for number, turn in enumerate(turns):
        where = f"{field}[{number}]: "
        if not isinstance(turn, dict):
            raise Malformed(f"{where}expected a JSON object, found {json_type(turn)}")
        if "role" in turn:
            role = turn["role"]
            if role not in CONVERSATION_ROLES:
                raise Malformed(f"{where}role {role!r} is not one of {', '.join(CONVERSATION_ROLES)}")
            contents.append(_string_field(turn, "content", where))
        elif "from" in turn:
            speaker = turn["from"]
            role = SHAREGPT_ROLES.get(speaker) if type(speaker) is str else None
            if role is None:
                raise Malformed(f"{where}'from' {speaker!r} is not one of {', '.join(SHAREGPT_ROLES)}")
            contents.append(_string_field(turn, "value", where))
        else:
            raise Malformed(f"{where}a turn needs 'role' and 'content', or 'from' and 'value'")
        roles.append(role)
    return Turns(tuple(roles), tuple(contents))


LINE_SHAPES = {
    "baike": _baike_segments,
    "c4": single_field("text"),
    "medical": single_field("text"),
    "medical-sft": _medical_sft_segments,
    "sft-alpaca": _alpaca_turns,
    "sft-conversations": _conversation_turns,
}
ARRAY_SHAPES = {
    "wiki": single_field("completion"),
    "wudao": _wudao_segments,
}


def is_valid_unicode(segments: tuple[str, ...]) -> bool:
    try:
        for segment in segments:
            segment.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_failure(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 (byte 0x{error.object[error.start]:02x} at byte {error.start + 1} of the line)"
    if isinstance(error, json.JSONDecodeError):
        return f"bad JSON ({error.msg.removesuffix(' at')} at column {error.colno})"
    if isinstance(error, RecursionError):
        return "bad JSON (nested too deeply)"
    return f"bad JSON ({error})"
