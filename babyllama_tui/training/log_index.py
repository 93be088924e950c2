"""LogIndex: where each line of a (growing, possibly huge) log file starts, so any line can be read on its own.

The full-log view shows a run's train.log from its first line. A log can be many megabytes,
so it is never held in memory: a worker thread indexes it a piece at a time (`grow`), the
view shows the lines indexed so far, and `line(n)` reads one line from disk, through a cache
of blocks of lines. Plain Python and numpy; no Textual.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections import OrderedDict
from pathlib import Path

import numpy as np

# Bytes read per `grow` step: the view shows the first lines before a big log is all indexed.
PIECE_BYTES = 4 * 2**20
# Lines read from disk together, and how many such blocks are kept.
BLOCK_LINES = 256
CACHED_BLOCKS = 64
# The most of one line that is read (a line can be a megabyte-long dump).
MAX_LINE_BYTES = 2**20


def clean_line(raw: bytes) -> str:
    """A log line as shown: a line rewritten in place with carriage returns (a progress bar) shows
    its final state; tabs become spaces."""
    return raw.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", errors="replace").expandtabs()


class LogIndex:
    """The line ends of a file, read up to where `grow` has reached. Safe to read from one thread
    while another grows it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # Counts the starts over, so a block read before one is not cached after it.
        self._generation = 0
        self._reset()

    def _reset(self) -> None:
        self._generation += 1
        # The offset just past each complete line's newline.
        self._stops = array("q")
        # The end of the last complete line, and of the text shown (beyond it: a last line
        # without its newline, once the index has reached the end of the file).
        self.indexed = 0
        self.size = 0
        # How far newlines have been looked for (past `indexed` inside a line longer than a piece).
        self._scanned = 0
        self.widest = 0
        # The last `grow` reached the end of the file.
        self.caught_up = False
        self._identity: tuple[int, int] | None = None
        self._blocks: OrderedDict[int, list[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stops) + (1 if self.size > self.indexed else 0)

    def grow(self, max_bytes: int = PIECE_BYTES) -> bool:
        """Index up to `max_bytes` more of the file; True when the lines changed (more, or the file
        was replaced or truncated and is indexed again from its start)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            with self._lock:
                changed = self._identity is not None
                if changed:
                    self._reset()
                self.caught_up = True
            return changed
        with f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino)
            changed = False
            with self._lock:
                if self._identity not in (None, identity) or st.st_size < self._scanned:
                    self._reset()
                    changed = True
                self._identity = identity
                start = self._scanned
            f.seek(start)
            data = f.read(max_bytes)
        newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        stops = newlines.astype(np.int64) + (start + 1)
        with self._lock:
            if len(stops):
                lengths = np.diff(stops, prepend=self.indexed)
                self.widest = max(self.widest, min(int(lengths.max()) - 1, MAX_LINE_BYTES))
                self._stops.frombytes(stops.astype("<i8").tobytes())
                self.indexed = int(stops[-1])
            self._scanned = start + len(data)
            at_end = self._scanned >= st.st_size
            # At the end, a last line still without its newline is shown too.
            size = st.st_size if at_end else self.indexed
            self.widest = max(self.widest, min(size - self.indexed, MAX_LINE_BYTES))
            changed = changed or size != self.size
            self.size = size
            self.caught_up = at_end
        return changed

    def _span(self, number: int) -> tuple[int, int]:
        begin = self._stops[number - 1] if number > 0 else 0
        end = self._stops[number] if number < len(self._stops) else self.size
        return begin, end

    def line(self, number: int) -> str:
        """Line `number` (from 0) as shown, read from disk or the cache; "" past the end."""
        block = number // BLOCK_LINES
        cached = self._blocks.get(block)
        if cached is not None:
            self._blocks.move_to_end(block)
            return cached[number % BLOCK_LINES]
        lines = self._read_block(block)
        offset = number - block * BLOCK_LINES
        return lines[offset] if offset < len(lines) else ""

    def _read_block(self, block: int) -> list[str]:
        with self._lock:
            first = block * BLOCK_LINES
            last = min(first + BLOCK_LINES, len(self))
            if first >= last:
                return []
            begin, _ = self._span(first)
            _, end = self._span(last - 1)
            stops = [self._span(n)[1] for n in range(first, last)]
            complete = last <= len(self._stops) and last - first == BLOCK_LINES
            generation = self._generation
        lines, at = [], begin
        try:
            with open(self.path, "rb") as f:
                f.seek(begin)
                whole = end - begin <= BLOCK_LINES * 1024
                data = f.read(end - begin) if whole else b""
                for stop in stops:
                    if whole:
                        raw = data[at - begin : stop - begin]
                    else:
                        f.seek(at)
                        raw = f.read(min(stop - at, MAX_LINE_BYTES))
                    lines.append(clean_line(raw.removesuffix(b"\n")))
                    at = stop
        except OSError:
            return []
        if complete and generation == self._generation:
            # Only whole blocks of complete lines are kept: the last lines may still grow.
            self._blocks[block] = lines
            if len(self._blocks) > CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        return lines
