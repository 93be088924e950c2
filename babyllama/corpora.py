"""Corpus readers: one small reader per corpus format, each yielding documents.

A document is what gets tokenized and followed by one end-of-text token. Readers stream:
a 1 GB JSON array or a 100 GB folder of JSON lines is read with bounded memory, and a
malformed record is yielded as a `BadRecord` (named by file and line) instead of stopping
the run.

Formats (`--format`):
  wiki         one JSON array of {"completion": ...}            (wikipedia-cn-20230720-filtered)
  baike        JSON lines {"title", "summary", "sections": [{"title", "content"}]}   (563w_baidubaike)
  c4           JSON lines {"text", ...}                          (C4_zh)
  wudao        JSON arrays of {"title", "content", ...}          (WuDaoCorpus2.0)
  medical      JSON lines {"text"}                               (shibing624/medical pretrain)
  medical-sft  JSON lines {"instruction", "input", "output"}     (shibing624/medical finetune)
  text         plain UTF-8, one document per blank-line-separated block
  jsonl:FIELD  any JSON lines file, the named string field
  auto         sniff each file: JSON by its first record, plain text from .txt files only
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from babyllama.errors import UserError

FORMATS = ("wiki", "baike", "c4", "wudao", "medical", "medical-sft", "text", "jsonl:FIELD", "auto")

FORMAT_HELP = (
    "corpus format: wiki, baike, c4, wudao, medical, medical-sft, text, jsonl:FIELD "
    "(any JSON lines file, the named field) or auto (sniff each file's first record; "
    "plain text only from .txt files)"
)


@dataclass(frozen=True, slots=True)
class Document:
    """One document: its segments are encoded one by one, concatenated, then end-of-text."""

    segments: tuple[str, ...]
    path: Path
    line: int  # 1-based line where the record starts
    end: int = 0  # byte position in the raw (for .gz: compressed) file after this record


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that could not be read; the run goes on without it. `rest_skipped`: the file
    cannot be read past it (cut short, corrupt, or a broken JSON array), so it is the last."""

    path: Path
    line: int
    reason: str
    end: int = 0
    rest_skipped: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


Record = Document | BadRecord

# Raw bytes are read in blocks of this size; JSON-array positions (`end`) move a block at a time.
BLOCK_BYTES = 1 << 20
# A JSON-array element that is still incomplete after this many characters is taken as a broken
# array rather than read on into memory.
MAX_ELEMENT_CHARS = 1 << 26

_OUTPUT_SUFFIXES = (".bin", ".bin.json", ".partial", ".partial.json")
_GLOB_CHARS = re.compile(r"[*?\[]")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# An escaped UTF-16 surrogate: either half of a pair (fine once json joins them) or a lone half,
# which is no character at all and cannot be encoded for a tokenizer.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89abAB]")
_NOT_UNICODE = "text holds an unpaired surrogate or undecodable bytes, so it is not valid UTF-8"


class UnrecognisedFile(UserError):
    """sniff_format cannot tell what a file holds. `where` (the file, and the line when there
    is one) and `reason` say what it found, short enough to list with other files; `hint`
    says what to do."""

    def __init__(self, where: str, reason: str, hint: str):
        super().__init__(f"{where}: {reason}; {hint}")
        self.where = where
        self.reason = reason
        self.hint = hint


class _Malformed(Exception):
    """A record that parsed as JSON but does not have the format's shape."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _BrokenArray(Exception):
    """The JSON array cannot be read past this point."""

    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line = line
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Record shapes: JSON value -> segments, or _Malformed with the reason.


def _json_type(value) -> str:
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
        return f"expected a JSON object, found {_json_type(record)}"
    if name not in record:
        return f"missing field {name!r}"
    return f"field {name!r} is {_json_type(record[name])}, expected a string"


def _string_field(record, name: str, where: str = "") -> str:
    try:
        value = record[name]
        if type(value) is str:
            return value
    except (KeyError, TypeError):
        pass
    raise _Malformed(where + _string_problem(record, name))


def _single_field(name: str) -> Callable[[object], tuple[str, ...]]:
    def segments(record) -> tuple[str, ...]:
        return (_string_field(record, name),)

    return segments


def _baike_segments(record) -> tuple[str, ...]:
    if not isinstance(record, dict):
        raise _Malformed(f"expected a JSON object, found {_json_type(record)}")
    if "sections" not in record:
        raise _Malformed("missing field 'sections'")
    sections = record["sections"]
    if type(sections) is not list:
        raise _Malformed(f"field 'sections' is {_json_type(sections)}, expected a list")
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


_LINE_SHAPES = {
    "baike": _baike_segments,
    "c4": _single_field("text"),
    "medical": _single_field("text"),
    "medical-sft": _medical_sft_segments,
}
_ARRAY_SHAPES = {
    "wiki": _single_field("completion"),
    "wudao": _wudao_segments,
}


def _is_valid_unicode(segments: tuple[str, ...]) -> bool:
    try:
        for segment in segments:
            segment.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_failure(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 (byte 0x{error.object[error.start]:02x} at byte {error.start + 1} of the line)"
    if isinstance(error, json.JSONDecodeError):
        return f"bad JSON ({error.msg.removesuffix(' at')} at column {error.colno})"
    if isinstance(error, RecursionError):
        return "bad JSON (nested too deeply)"
    return f"bad JSON ({error})"


# ---------------------------------------------------------------------------------------------
# Opening files.


_READ_ERRORS = (OSError, EOFError, zlib.error)


class _GzipStream(io.RawIOBase):
    """The decompressed bytes of a .gz file up to where it is cut short or corrupt: there it
    reads as ended, and `error` keeps what went wrong. A buffered read whose last part fails
    drops the bytes it had already decompressed, which lost up to a block of good records."""

    def __init__(self, raw):
        self.gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.error is not None:
            return 0
        try:
            # read1 returns what it decompressed or raises, never both.
            data = self.gzip.read1(len(buffer))
        except _READ_ERRORS as e:
            self.error = e
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.gzip.close()
        super().close()


class _Source:
    """A corpus file opened for binary reading, `.gz` decompressed on the fly.

    `raw_tell` is None for plain files (readers count bytes themselves, which is exact and
    cheaper than a tell() per record) and the compressed file's tell() for `.gz`. A `.gz`
    reads as ended where it is cut short or corrupt; `error` then says why, and readers call
    `raise_error` where the data ends.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self.raw = open(path, "rb", buffering=BLOCK_BYTES)
        except FileNotFoundError:
            raise UserError(f"{path}: no such file or folder") from None
        except IsADirectoryError:
            raise UserError(f"{path}: is a folder; give a file, or read the folder with read_documents") from None
        except PermissionError:
            raise UserError(f"{path}: permission denied") from None
        self.size = os.fstat(self.raw.fileno()).st_size
        if path.suffix.lower() == ".gz":
            self.gzip = _GzipStream(self.raw)
            self.stream = io.BufferedReader(self.gzip, BLOCK_BYTES)
            self.raw_tell = self.raw.tell
        else:
            self.gzip = None
            self.stream = self.raw
            self.raw_tell = None
        self.start = 0  # raw position of the first content byte, after a byte order mark
        self.position = 0  # raw position reached by a JSON-array read

    @property
    def error(self) -> BaseException | None:
        return self.gzip.error if self.gzip is not None else None

    def raise_error(self) -> None:
        """Raise what cut the data short, if anything did."""
        if self.error is not None:
            raise self.error

    def skip_byte_order_mark(self) -> None:
        if self.stream.peek(3)[:3] == codecs.BOM_UTF8:
            self.stream.read(3)
            self.start = 3

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
        self.raw.close()


def _unreadable(path: Path, line: int, error: BaseException, end: int) -> BadRecord:
    return BadRecord(
        path, line, f"cannot read further ({type(error).__name__}: {error}); rest of file skipped", end, True
    )


# ---------------------------------------------------------------------------------------------
# JSON lines.


def _read_json_lines(path: Path, shape, skip: int) -> Iterator[Record]:
    """A record is a non-blank line; blank lines are passed over silently."""
    with _Source(path) as source:
        stream, raw_tell = source.stream, source.raw_tell
        line_no = 0
        to_skip = skip
        loads = json.loads
        try:
            source.skip_byte_order_mark()
            position = source.start
            if to_skip:
                for line in stream:
                    line_no += 1
                    position += len(line)
                    if not line.isspace():
                        if source.error is not None and not line.endswith(b"\n"):
                            break  # the line a .gz is cut in is no record; the cut after it is one
                        to_skip -= 1
                        if not to_skip:
                            break
            for line in stream:
                line_no += 1
                position += len(line)
                end = position if raw_tell is None else raw_tell()
                try:
                    segments = shape(loads(line.decode()))
                except _Malformed as e:
                    yield BadRecord(path, line_no, e.reason, end)
                    continue
                except (ValueError, RecursionError) as e:
                    if source.error is not None and not line.endswith(b"\n"):
                        # The line a .gz is cut in: reported below as where reading stopped.
                        line_no -= 1
                        break
                    if not line.isspace():
                        yield BadRecord(path, line_no, _parse_failure(e), end)
                    continue
                if _SURROGATE_ESCAPE_BYTES.search(line) is not None and not _is_valid_unicode(segments):
                    yield BadRecord(path, line_no, _NOT_UNICODE, end)
                    continue
                yield Document(segments, path, line_no, end)
            source.raise_error()
        except _READ_ERRORS as e:
            if not to_skip:
                yield _unreadable(path, line_no + 1, e, source.size)


# ---------------------------------------------------------------------------------------------
# Plain text.


def _read_text(path: Path, skip: int) -> Iterator[Record]:
    """A record is a block of non-blank lines; a line of ASCII whitespace separates blocks."""
    with _Source(path) as source:
        stream, raw_tell = source.stream, source.raw_tell
        position = 0
        line_no = 0
        to_skip = skip
        block: list[bytes] = []
        block_line = 0

        def finish_block() -> Record:
            end = position if raw_tell is None else raw_tell()
            raw = b"".join(block)
            try:
                text = raw.decode()
            except UnicodeDecodeError as e:
                bad_line = block_line + raw.count(b"\n", 0, e.start)
                return BadRecord(path, bad_line, f"not UTF-8 (byte 0x{raw[e.start]:02x})", end)
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            return Document((text.rstrip("\n"),), path, block_line, end)

        try:
            source.skip_byte_order_mark()
            position = source.start
            for line in stream:
                line_no += 1
                position += len(line)
                if not line.isspace():
                    if not block:
                        block_line = line_no
                    block.append(line)
                elif block:
                    if to_skip:
                        to_skip -= 1
                    else:
                        yield finish_block()
                    block = []
            # Before the last block: where a .gz is cut short, that block is cut too.
            source.raise_error()
            if block:
                if to_skip:
                    to_skip -= 1
                else:
                    yield finish_block()
        except _READ_ERRORS as e:
            if not to_skip:
                yield _unreadable(path, block_line if block else line_no + 1, e, source.size)


# ---------------------------------------------------------------------------------------------
# JSON arrays.


def _array_elements(source: _Source) -> Iterator[tuple[int, object, bool]]:
    """Yield (line, value, suspicious) for each element of the file's top-level JSON array.

    The text is decoded and parsed a block at a time with raw_decode, so a 1 GB array needs
    a few MB. `suspicious` marks an element whose strings may not be valid Unicode (an
    escaped surrogate, or undecodable bytes somewhere in the file); the caller checks those.
    Raises _BrokenArray where the array cannot be read on; `source.position` is the raw byte
    position of what has been read so far.
    """
    read = source.stream.read
    decoder = codecs.getincrementaldecoder("utf-8")()
    raw_decode = json.JSONDecoder().raw_decode
    raw_tell = source.raw_tell
    whitespace = _WHITESPACE.match
    surrogate_escape = _SURROGATE_ESCAPE.search
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
        except _READ_ERRORS as e:
            raise _BrokenArray(line, f"cannot read further ({type(e).__name__}: {e}); rest of file skipped") from None
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
                raise _BrokenArray(line, f"file ends where {expected} was expected")
            grow()

    def broken_at(error: json.JSONDecodeError) -> _BrokenArray:
        error_line = line + buf.count("\n", i, error.pos)
        return _BrokenArray(error_line, f"bad JSON ({error.msg.removesuffix(' at')}); rest of file skipped")

    skip_whitespace("a JSON array")
    if buf[i] != "[":
        raise _BrokenArray(line, f"expected a JSON array ('['), found {buf[i]!r}")
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
                    raise _BrokenArray(line, f"an element runs past {MAX_ELEMENT_CHARS} characters; rest of file skipped")
                grow()
                continue
            except RecursionError:
                raise _BrokenArray(line, "bad JSON (nested too deeply); rest of file skipped") from None
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
            raise _BrokenArray(line, f"expected ',' or ']' after an element, found {buf[i]!r}; rest of file skipped")
        i += 1
        skip_whitespace("an element")


def _read_json_array(path: Path, shape, skip: int) -> Iterator[Record]:
    """A record is an element of the array; a syntax error ends the file (one BadRecord)."""
    with _Source(path) as source:
        index = 0
        try:
            source.skip_byte_order_mark()
            for line, value, suspicious in _array_elements(source):
                index += 1
                if index <= skip:
                    continue
                try:
                    segments = shape(value)
                except _Malformed as e:
                    yield BadRecord(path, line, f"element {index}: {e.reason}", source.position)
                    continue
                if suspicious and not _is_valid_unicode(segments):
                    yield BadRecord(path, line, f"element {index}: {_NOT_UNICODE}", source.position)
                    continue
                yield Document(segments, path, line, source.position)
        except _BrokenArray as e:
            if index >= skip:
                yield BadRecord(path, e.line, f"element {index + 1}: {e.reason}", source.size, True)
        except _READ_ERRORS as e:
            if index >= skip:
                yield _unreadable(path, 1, e, source.size)


# ---------------------------------------------------------------------------------------------
# Public API.


def check_format(fmt: str) -> str:
    """Return `fmt` if it names a format; UserError listing the formats otherwise."""
    if fmt in FORMATS or (fmt.startswith("jsonl:") and len(fmt) > len("jsonl:")):
        return fmt
    raise UserError(f"unknown corpus format {fmt!r}; choose one of: {', '.join(FORMATS)}")


_FORMAT_SHAPES = {
    "wiki": 'a JSON array of {"completion"}',
    "baike": 'JSON lines of {"title", "summary", "sections"}',
    "c4": 'JSON lines of {"text"}',
    "wudao": 'JSON arrays of {"title", "content"}',
    "medical": 'JSON lines of {"text"}',
    "medical-sft": 'JSON lines of {"instruction", "input", "output"}',
    "text": "plain UTF-8 text",
}


def describe_format(fmt: str) -> str:
    """What a file in `fmt` (a format, not auto) holds, in a few words."""
    if fmt.startswith("jsonl:"):
        return f'JSON lines of {{"{fmt[len("jsonl:"):]}"}}'
    return _FORMAT_SHAPES[fmt]


def _reader(fmt: str) -> Callable[[Path, int], Iterator[Record]]:
    if fmt == "text":
        return _read_text
    if fmt in _LINE_SHAPES:
        shape = _LINE_SHAPES[fmt]
        return lambda path, skip: _read_json_lines(path, shape, skip)
    if fmt in _ARRAY_SHAPES:
        shape = _ARRAY_SHAPES[fmt]
        return lambda path, skip: _read_json_array(path, shape, skip)
    shape = _single_field(fmt[len("jsonl:"):])
    return lambda path, skip: _read_json_lines(path, shape, skip)


def iter_records(path: str | Path, fmt: str, skip: int = 0) -> Iterator[Record]:
    """Read one file in format `fmt` ("auto" sniffs it), yielding Documents and BadRecords.

    The first `skip` records (good or bad) are passed over cheaply, and reading with skip=N
    yields exactly the records that reading all would yield after the first N. Each record's
    `end` is the raw byte position after it; they never decrease and the last is the file size.
    Every Document's segments are valid Unicode (they encode as UTF-8).
    """
    path = Path(path)
    fmt = check_format(fmt)
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if fmt == "auto":
        fmt = sniff_format(path)
    return _ending_at_file_size(_reader(fmt)(path, skip), path.stat().st_size)


def _ending_at_file_size(records: Iterator[Record], size: int) -> Iterator[Record]:
    # Readers cannot tell which record is the last (trailing blank lines, a closing bracket,
    # buffered .gz reads), so hold one back and let the last one end at the file size.
    previous = None
    for record in records:
        if previous is not None:
            yield previous
        previous = record
    if previous is not None:
        yield previous if previous.end == size else dataclasses.replace(previous, end=size)


def read_documents(
    inputs: Iterable[str | Path] | str | Path,
    fmt: str,
    on_bad_record: Callable[[BadRecord], None] | None = None,
) -> Iterator[Document]:
    """Documents from files, folders and globs, in order; bad records go to `on_bad_record`."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    fmt = check_format(fmt)
    for path in expand_inputs(list(inputs)):
        for record in iter_records(path, fmt):
            if type(record) is Document:
                yield record
            elif on_bad_record is not None:
                on_bad_record(record)


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith(_OUTPUT_SUFFIXES)


def _files_below(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += (Path(root) / name for name in files if not _is_ignored(name))
    return sorted(found)


def _expand_one(given: str | Path) -> list[Path]:
    path = Path(given)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = _files_below(path)
        if not files:
            raise UserError(f"{given}: folder holds no corpus files")
        return files
    if _GLOB_CHARS.search(str(given)):
        files = []
        for match in sorted(Path(m) for m in glob.glob(str(given), recursive=True)):
            if match.is_dir():
                files += _files_below(match)
            elif match.is_file() and not _is_ignored(match.name):
                files.append(match)
        if not files:
            raise UserError(f"{given}: no file matches this pattern")
        return files
    raise UserError(f"{given}: no such file or folder")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named, files below folders (sorted by path; hidden files and our own outputs
    *.bin, *.bin.json, *.partial, *.partial.json left out) and glob matches (sorted); each file once."""
    files: list[Path] = []
    seen: set[Path] = set()
    for given in inputs:
        for path in _expand_one(given):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


# ---------------------------------------------------------------------------------------------
# Sniffing.

_SNIFF_BYTES = 1 << 24


def _first_content_byte(source: _Source) -> bytes:
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
        return f"{_json_type(value)} instead of an object"
    keys = list(value)
    shown = ", ".join(repr(k) for k in keys[:12]) + (", ..." if len(keys) > 12 else "")
    return f"keys {shown}" if keys else "no keys"


def _sniff_array(path: Path) -> str:
    with _Source(path) as source:
        try:
            source.skip_byte_order_mark()
            first = next(_array_elements(source), None)
        except _BrokenArray as e:
            raise UnrecognisedFile(
                f"{path}:{e.line}", f"starts like a JSON array but cannot be read ({e.reason})",
                "if it is plain text, use --format text",
            ) from None
        except _READ_ERRORS as e:
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
    with _Source(path) as source:
        line_no = 0
        try:
            source.skip_byte_order_mark()
            for line in source.stream:
                line_no += 1
                if not line.isspace():
                    break
            if not line.endswith(b"\n"):
                source.raise_error()
        except _READ_ERRORS as e:
            raise _cannot_be_read(path, e) from None
    try:
        value = json.loads(line.decode())
    except (ValueError, RecursionError) as e:
        raise UnrecognisedFile(
            f"{path}:{line_no}", f"starts like JSON lines but this line is not a JSON record ({_parse_failure(e)})",
            "if it is plain text, use --format text",
        ) from None
    if isinstance(value, dict):
        if "sections" in value:
            return "baike"
        if "instruction" in value and "output" in value:
            return "medical-sft"
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
    with _Source(path) as source:
        try:
            source.skip_byte_order_mark()
            head = source.stream.read(BLOCK_BYTES)
        except _READ_ERRORS as e:
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

    A JSON array is wiki or wudao, JSON lines are baike, medical-sft or c4 (medical files
    have the same shape as c4 and read the same), and a .txt file of UTF-8 text is text;
    anything else is not recognised. An empty file is text (it holds no documents in any
    format).
    """
    path = Path(path)
    with _Source(path) as source:
        try:
            source.skip_byte_order_mark()
            first = _first_content_byte(source)
        except _READ_ERRORS as e:
            raise _cannot_be_read(path, e) from None
    if first == b"[":
        return _sniff_array(path)
    if first == b"{":
        return _sniff_json_lines(path)
    if not first:
        return "text"
    return _sniff_text(path)
