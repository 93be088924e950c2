"""Reading corpora: `iter_records`, the records of one file in any format, and
`read_documents`, the documents of many inputs. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from babyllama.corpora.formats import check_format
from babyllama.corpora.inputs import expand_inputs
from babyllama.corpora.json_array import read_json_array
from babyllama.corpora.json_lines import read_json_lines
from babyllama.corpora.plain_text import read_plain_text
from babyllama.corpora.records import BadRecord, Document, Record
from babyllama.corpora.shapes import ARRAY_SHAPES, LINE_SHAPES, single_field
from babyllama.corpora.sniff import sniff_format
from babyllama.errors import UserError


def _reader(fmt: str) -> Callable[[Path, int], Iterator[Record]]:
    if fmt == "text":
        return read_plain_text
    if fmt in LINE_SHAPES:
        shape = LINE_SHAPES[fmt]
        return lambda path, skip: read_json_lines(path, shape, skip)
    if fmt in ARRAY_SHAPES:
        shape = ARRAY_SHAPES[fmt]
        return lambda path, skip: read_json_array(path, shape, skip)
    shape = single_field(fmt[len("jsonl:"):])
    return lambda path, skip: read_json_lines(path, shape, skip)


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
