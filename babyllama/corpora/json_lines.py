"""The JSON lines reader: a record a line (baike, c4, medical, medical-sft, jsonl:FIELD, and the
conversations of sft-alpaca and sft-conversations).
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from babyllama.corpora.corpus_file import READ_ERRORS, CorpusFile, unreadable
from babyllama.corpora.records import BadRecord, Document, Record
from babyllama.corpora.shapes import (
    NOT_UNICODE,
    SURROGATE_ESCAPE_BYTES,
    Malformed,
    Turns,
    is_valid_unicode,
    parse_failure,
)


def read_json_lines(path: Path, shape, skip: int) -> Iterator[Record]:
    """A record is a non-blank line; blank lines are passed over silently."""
    with CorpusFile(path) as source:
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
                    roles = ()
                    if type(segments) is Turns:
                        roles, segments = segments
                except Malformed as e:
                    yield BadRecord(path, line_no, e.reason, end)
                    continue
                except (ValueError, RecursionError) as e:
                    if source.error is not None and not line.endswith(b"\n"):
                        # The line a .gz is cut in: reported below as where reading stopped.
                        line_no -= 1
                        break
                    if not line.isspace():
                        yield BadRecord(path, line_no, parse_failure(e), end)
                    continue
                if SURROGATE_ESCAPE_BYTES.search(line) is not None and not is_valid_unicode(segments):
                    yield BadRecord(path, line_no, NOT_UNICODE, end)
                    continue
                yield Document(segments, path, line_no, end, roles)
            source.raise_error()
        except READ_ERRORS as e:
            if not to_skip:
                yield unreadable(path, line_no + 1, e, source.size)
