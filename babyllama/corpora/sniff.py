"""`--format auto`: the format of a file, told from its first record. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from babyllama.corpora.corpus_file import BLOCK_BYTES, READ_ERRORS, CorpusFile
from babyllama.corpora.formats import FORMATS
from babyllama.corpora.json_array import BrokenArray, array_elements
from babyllama.corpora.shapes import json_type, parse_failure
from babyllama.errors import UserError


class UnrecognisedFile(UserError):
    """sniff_format cannot tell what a file holds. `where` (the file, and the line when there
    is one) and `reason` say what it found, short enough to list with other files; `hint`
    says what to do."""

    def __init__(self, where: str, reason: str, hint: str):
        super().__init__(f"{where}: {reason}; {hint}")
        self.where = where
        self.reason = reason
        self.hint = hint


_SNIFF_BYTES = 1 << 24


def _first_content_byte(source: CorpusFile) -> bytes:
    """The first byte that is not ASCII whitespace, or b"" if there is none early on."""
    remaining = _SNIFF_BYTES
    while remaining > 0:
        chunk = source.stream.read(min(BLOCK_BYTES, remaining))
        if not chunk:
            source.raise_error()
            return b""
        content = chunk.lstrip()
        if content:
            return content[:1]
        remaining -= len(chunk)
    return b""


def _describe_keys(value) -> str:
    if not isinstance(value, dict):
        return f"{json_type(value)} instead of an object"
    keys = list(value)
    shown = ", ".join(repr(k) for k in keys[:12]) + (", ..." if len(keys) > 12 else "")
    return f"keys {shown}" if keys else "no keys"


def _sniff_array(path: Path) -> str:
    with CorpusFile(path) as source:
        try:
            source.skip_byte_order_mark()
            first = next(array_elements(source), None)
        except BrokenArray as e:
            raise UnrecognisedFile(
                f"{path}:{e.line}", f"starts like a JSON array but cannot be read ({e.reason})",
                "if it is plain text, use --format text",
            ) from None
        except READ_ERRORS as e:
            raise _cannot_be_read(path, e) from None
    if first is None:
        return "wiki"  # an empty array: every array format reads no documents from it
    line, value, _ = first
    if isinstance(value, dict):
        if "completion" in value:
            return "wiki"
        if "title" in value and "content" in value:
            return "wudao"
    raise UnrecognisedFile(
        f"{path}:{line}", f"cannot tell the format: a JSON array whose first element has {_describe_keys(value)}",
        f"JSON arrays are read as wiki ('completion') or wudao ('title' + 'content'). Formats: {', '.join(FORMATS)}",
    )


def _sniff_json_lines(path: Path) -> str:
    with CorpusFile(path) as source:
        line_no = 0
        try:
            source.skip_byte_order_mark()
            for line in source.stream:
                line_no += 1
                if not line.isspace():
                    break
            if not line.endswith(b"\n"):
                source.raise_error()
        except READ_ERRORS as e:
            raise _cannot_be_read(path, e) from None
    try:
        value = json.loads(line.decode())
    except (ValueError, RecursionError) as e:
        raise UnrecognisedFile(
            f"{path}:{line_no}", f"starts like JSON lines but this line is not a JSON record ({parse_failure(e)})",
            "if it is plain text, use --format text",
        ) from None
    if isinstance(value, dict):
        if "sections" in value:
            return "baike"
        if "instruction" in value and "output" in value:
            return "medical-sft"  # pretraining text; fine-tuning on such a file asks for --format sft-alpaca
        if "conversations" in value or isinstance(value.get("messages"), list):
            return "sft-conversations"
        # c4 and medical records have the same shape and are read the same way.
        if "text" in value:
            return "c4"
    example = next((k for k in value if isinstance(value[k], str)), "FIELD") if isinstance(value, dict) else "FIELD"
    raise UnrecognisedFile(
        f"{path}:{line_no}", f"cannot tell the format: JSON lines with {_describe_keys(value)}",
        f"choose one with --format: {', '.join(FORMATS)} (for example jsonl:{example})",
    )


def _sniff_text(path: Path) -> str:
    """Text, if the file starts as UTF-8 text and is named *.txt: a README, a licence or notes
    beside a corpus are text too, but not corpus."""
    with CorpusFile(path) as source:
        try:
            source.skip_byte_order_mark()
            head = source.stream.read(BLOCK_BYTES)
        except READ_ERRORS as e:
            raise _cannot_be_read(path, e) from None
    bad = head.find(b"\0")
    try:
        # Not final: the block may end inside a character.
        codecs.getincrementaldecoder("utf-8")().decode(head if bad < 0 else head[:bad], final=False)
    except UnicodeDecodeError as e:
        bad = e.start
    if bad >= 0:
        raise UnrecognisedFile(
            str(path), f"not UTF-8 text: byte 0x{head[bad]:02x} at byte {source.start + bad + 1}",
            "corpora are UTF-8 text or JSON; convert it, or leave it out",
        )
    if not path.name.lower().removesuffix(".gz").endswith(".txt"):
        raise UnrecognisedFile(
            str(path), "plain text not named *.txt",
            "--format auto reads plain text from .txt files only; to read it as a corpus, pass --format text",
        )
    return "text"


def _cannot_be_read(path: Path, error: BaseException) -> UnrecognisedFile:
    return UnrecognisedFile(str(path), f"cannot be read ({type(error).__name__}: {error})", "it may be cut short or damaged")


def sniff_format(path: str | Path) -> str:
    """The format of one file, from its first record; UnrecognisedFile if it cannot tell.

    A JSON array is wiki or wudao, JSON lines are baike, medical-sft, sft-conversations or c4
    (medical files have the same shape as c4 and read the same; instruction sets read as
    medical-sft, pretraining text, unless --format sft-alpaca is given), and a .txt file of
    UTF-8 text is text; anything else is not recognised. An empty file is text (it holds no documents in any
    format).
    """
    path = Path(path)
    with CorpusFile(path) as source:
        try:
            source.skip_byte_order_mark()
            first = _first_content_byte(source)
        except READ_ERRORS as e:
            raise _cannot_be_read(path, e) from None
    if first == b"[":
        return _sniff_array(path)
    if first == b"{":
        return _sniff_json_lines(path)
    if not first:
        return "text"
    return _sniff_text(path)
