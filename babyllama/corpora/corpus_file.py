"""A corpus file opened for reading: `.gz` decompressed on the fly, a byte order mark passed
over, and a file that is cut short read up to the cut. See docs/ARCHITECTURE.md."""

from __future__ import annotations

import codecs
import gzip
import io
import os
import zlib
from pathlib import Path

from babyllama.corpora.records import BadRecord
from babyllama.errors import UserError

# Raw bytes are read in blocks of this size; JSON-array positions (`end`) move a block at a time.
BLOCK_BYTES = 1 << 20

READ_ERRORS = (OSError, EOFError, zlib.error)


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
        except READ_ERRORS as e:
            self.error = e
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.gzip.close()
        super().close()


class CorpusFile:
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

    def __enter__(self) -> CorpusFile:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
        self.raw.close()


def unreadable(path: Path, line: int, error: BaseException, end: int) -> BadRecord:
    return BadRecord(
        path, line, f"cannot read further ({type(error).__name__}: {error}); rest of file skipped", end, True
    )
