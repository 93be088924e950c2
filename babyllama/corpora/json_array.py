"""The JSON array reader (wiki, wudao): a file holding one array is parsed a block at a
time, so a 1 GB array needs a few MB. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path

from babyllama.corpora.corpus_file import BLOCK_BYTES, READ_ERRORS, CorpusFile, unreadable
from babyllama.corpora.records import BadRecord, Document, Record
from babyllama.corpora.shapes import NOT_UNICODE, SURROGATE_ESCAPE, Malformed, is_valid_unicode

# A JSON-array element that is still incomplete after this many characters is taken as a broken
# array rather than read on into memory.
MAX_ELEMENT_CHARS = 1 << 26

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class BrokenArray(Exception):
    """The JSON array cannot be read past this point."""

    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line = line
        self.reason = reason


def array_elements(source: CorpusFile) -> Iterator[tuple[int, object, bool]]:
    """Yield (line, value, suspicious) for each element of the file's top-level JSON array.

    The text is decoded and parsed a block at a time with raw_decode, so a 1 GB array needs
    a few MB. `suspicious` marks an element whose strings may not be valid Unicode (an
    escaped surrogate, or undecodable bytes somewhere in the file); the caller checks those.
    Raises BrokenArray where the array cannot be read on; `source.position` is the raw byte
    position of what has been read so far.
    """
    read = source.stream.read
    decoder = codecs.getincrementaldecoder("utf-8")()
    raw_decode = json.JSONDecoder().raw_decode
    raw_tell = source.raw_tell
    whitespace = _WHITESPACE.match
    surrogate_escape = SURROGATE_ESCAPE.search
    buf = ""
    i = 0
    line = 1
    eof = False
    undecodable = False
    source.position = source.start

    def grow() -> None:
        nonlocal buf, i, eof, undecodable
        try:
            data = read(max(BLOCK_BYTES, 2 * (len(buf) - i)))
            if not data:
                source.raise_error()
        except READ_ERRORS as e:
            raise BrokenArray(line, f"cannot read further ({type(e).__name__}: {e}); rest of file skipped") from None
        eof = not data
        try:
            text = decoder.decode(data, eof)
        except UnicodeDecodeError:
            decoder.errors = "surrogateescape"
            text = decoder.decode(data, eof)
            decoder.errors = "strict"
            undecodable = True
        buf = buf[i:] + text
        i = 0
        source.position = source.position + len(data) if raw_tell is None else raw_tell()

    def skip_whitespace(expected: str) -> None:
        nonlocal i, line
        while True:
            j = whitespace(buf, i).end()
            line += buf.count("\n", i, j)
            i = j
            if i < len(buf):
                return
            if eof:
                raise BrokenArray(line, f"file ends where {expected} was expected")
            grow()

    def broken_at(error: json.JSONDecodeError) -> BrokenArray:
        error_line = line + buf.count("\n", i, error.pos)
        return BrokenArray(error_line, f"bad JSON ({error.msg.removesuffix(' at')}); rest of file skipped")

    skip_whitespace("a JSON array")
    if buf[i] != "[":
        raise BrokenArray(line, f"expected a JSON array ('['), found {buf[i]!r}")
    i += 1
    skip_whitespace("an element or ']'")
    if buf[i] == "]":
        return
    while True:
        while True:
            try:
                value, j = raw_decode(buf, i)
            except json.JSONDecodeError as e:
                cut_by_block = e.pos >= len(buf) - 8 or e.msg.startswith("Unterminated string")
                if eof or not cut_by_block:
                    raise broken_at(e) from None
                if len(buf) - i > MAX_ELEMENT_CHARS:
                    raise BrokenArray(line, f"an element runs past {MAX_ELEMENT_CHARS} characters; rest of file skipped")
                grow()
                continue
            except RecursionError:
                raise BrokenArray(line, "bad JSON (nested too deeply); rest of file skipped") from None
            if j == len(buf) and not eof:
                # A number or literal ending at the block's end may go on in the next block.
                grow()
                continue
            break
        yield line, value, undecodable or surrogate_escape(buf, i, j) is not None
        line += buf.count("\n", i, j)
        i = j
        skip_whitespace("',' or ']'")
        if buf[i] == "]":
            return
        if buf[i] != ",":
            raise BrokenArray(line, f"expected ',' or ']' after an element, found {buf[i]!r}; rest of file skipped")
        i += 1
        skip_whitespace("an element")


def read_json_array(path: Path, shape, skip: int) -> Iterator[Record]:
    """A record is an element of the array; a syntax error ends the file (one BadRecord)."""
    with CorpusFile(path) as source:
        index = 0
        try:
            source.skip_byte_order_mark()
            for line, value, suspicious in array_elements(source):
                index += 1
                if index <= skip:
                    continue
                try:
                    segments = shape(value)
                except Malformed as e:
                    yield BadRecord(path, line, f"element {index}: {e.reason}", source.position)
                    continue
                if suspicious and not is_valid_unicode(segments):
                    yield BadRecord(path, line, f"element {index}: {NOT_UNICODE}", source.position)
                    continue
                yield Document(segments, path, line, source.position)
        except BrokenArray as e:
            if index >= skip:
                yield BadRecord(path, e.line, f"element {index + 1}: {e.reason}", source.size, True)
        except READ_ERRORS as e:
            if index >= skip:
                yield unreadable(path, 1, e, source.size)
