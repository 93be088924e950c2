"""The plain text reader (`--format text`): a document per block of non-blank lines.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from babyllama.corpora.corpus_file import READ_ERRORS, CorpusFile, unreadable
from babyllama.corpora.records import BadRecord, Document, Record


def read_plain_text(path: Path, skip: int) -> Iterator[Record]:
    """A record is a block of non-blank lines; a line of ASCII whitespace separates blocks."""
    with CorpusFile(path) as source:
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
        except READ_ERRORS as e:
            if not to_skip:
                yield unreadable(path, block_line if block else line_no + 1, e, source.size)
