"""Reading a run's growing files cheaply: `LineFollower` and `MetricsReader` poll what was appended,
`tail_lines`, `tail_rows` and `latest_rows` read back from the end; `counts_in_loss` says which train
rows' losses count. See docs/ARCHITECTURE.md, "The run directory".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# How far back list_runs looks in metrics.jsonl for the latest train/eval/sample rows.
METRICS_TAIL_BYTES = 256 * 1024
FIRST_ROW_MAX_BYTES = 64 * 1024
_READ_BLOCK = 64 * 1024


class LineFollower:
    """Reads the complete lines appended to a file since the last poll.

    Keeps a byte offset, so each poll costs the bytes added since the previous one (plus a
    fixed check of the file's first bytes). A last line without its newline is held back
    until the newline arrives. A file that was truncated or replaced is read again from the
    start, and `restarted` says so.
    """

    HEAD_CHECK_BYTES = 256

    def __init__(self, path: str | os.PathLike, *, last_lines: int | None = None):
        """`last_lines=N` starts at the last N complete lines instead of the beginning."""
        self.path = Path(path)
        self.offset = 0
        self.bytes_read = 0
        self.restarted = False
        self._pending = b""
        # The file's first bytes as we read them: a file truncated and regrown past our
        # offset between two polls keeps its identity and size but not its beginning.
        self._head = b""
        self._identity: tuple[int, int] | None = None
        if last_lines is not None:
            self._start_at_last_lines(last_lines)

    def _start_at_last_lines(self, n: int) -> None:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                start, data = _read_back_lines(f, n + 1)
                complete_end = data.rfind(b"\n") + 1
                lines = data[:complete_end].split(b"\n")[:-1]
                if start > 0:
                    lines = lines[1:]
                keep = sum(len(line) + 1 for line in lines[-n:]) if n > 0 else 0
                self.offset = start + complete_end - keep
                self._identity = (st.st_dev, st.st_ino)
                self._remember_head(f)
        except FileNotFoundError:
            pass

    def _remember_head(self, f) -> None:
        if len(self._head) < self.HEAD_CHECK_BYTES and self.offset > len(self._head):
            f.seek(0)
            self._head = f.read(min(self.HEAD_CHECK_BYTES, self.offset))

    def _same_head(self, f) -> bool:
        f.seek(0)
        return f.read(len(self._head)) == self._head

    def poll(self, max_bytes: int | None = None) -> list[str]:
        """New complete lines (UTF-8, without newlines); at most `max_bytes` are read per call."""
        self.restarted = False
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino)
            if self._identity is not None and (
                identity != self._identity or st.st_size < self.offset or not self._same_head(f)
            ):
                self.offset, self._pending, self._head, self.restarted = 0, b"", b"", True
            self._identity = identity
            available = st.st_size - self.offset
            if available <= 0:
                return []
            f.seek(self.offset)
            data = f.read(available if max_bytes is None else min(available, max_bytes))
            self.offset += len(data)
            self.bytes_read += len(data)
            self._remember_head(f)
        data = self._pending + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return []
        self._pending = data[cut + 1 :]
        return data[:cut].decode("utf-8", errors="replace").split("\n")


class MetricsReader:
    """Follows metrics.jsonl: each `poll()` returns the rows (dicts) appended since the last one.

    After a poll with `restarted` true the file was replaced or truncated and the rows
    returned start from its beginning: drop what was shown before. Lines that are not JSON
    objects (a row cut short by a killed process) are skipped and counted in `bad_lines`.
    """

    def __init__(self, path: str | os.PathLike):
        self._lines = LineFollower(path)
        self.bad_lines = 0

    @property
    def path(self) -> Path:
        return self._lines.path

    @property
    def offset(self) -> int:
        return self._lines.offset

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    @property
    def restarted(self) -> bool:
        return self._lines.restarted

    def poll(self, max_bytes: int | None = None) -> list[dict]:
        lines = self._lines.poll(max_bytes)
        if self._lines.restarted:
            self.bad_lines = 0
        if not lines:
            return []
        try:
            # One parse of the batch as a JSON array is a few times faster than one per line,
            # which matters when the app opens a run with a million rows.
            rows = json.loads(f"[{','.join(lines)}]")
        except ValueError:
            rows = None
        if rows is not None and all(isinstance(row, dict) for row in rows):
            return rows
        rows = []
        for line in lines:
            row = _parse_row(line)
            if row is not None:
                rows.append(row)
            elif line.strip():
                self.bad_lines += 1
        return rows


def _parse_row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _read_back_lines(f, newlines: int, max_bytes: int | None = None) -> tuple[int, bytes]:
    """Read backwards from the end until `newlines` newlines (or `max_bytes`) are in hand.
    Returns (offset of the returned bytes, bytes up to the end of the file)."""
    end = f.seek(0, os.SEEK_END)
    start, blocks, seen = end, [], 0
    while start > 0 and seen < newlines and (max_bytes is None or end - start < max_bytes):
        size = min(_READ_BLOCK, start) if max_bytes is None else min(_READ_BLOCK, start, max_bytes - (end - start))
        start -= size
        f.seek(start)
        block = f.read(size)
        blocks.append(block)
        seen += block.count(b"\n")
    return start, b"".join(reversed(blocks))


def tail_lines(path: str | os.PathLike, n: int, *, max_bytes: int = 8 * 1024 * 1024) -> list[str]:
    """The last `n` lines of a text file, read from its end (a log can be gigabytes).

    A last line still being written is included. A line rewritten in place with carriage
    returns (a progress bar) shows its final state. At most `max_bytes` are read.
    """
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            start, data = _read_back_lines(f, n + 1, max_bytes)
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if start > 0 and lines:
        lines = lines[1:]
    return [line.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", errors="replace") for line in lines[-n:]]


def counts_in_loss(row: dict) -> bool:
    """Whether a train row's `loss` and `bpb` belong to the run's loss: not those of a step the trainer
    did not apply (`"skipped": true`, a spike or a non-finite loss), though its step, tokens and speed
    happened. The one rule for every reader of the last loss, the curve and its smoothing."""
    return row.get("skipped") is not True


def tail_rows(metrics_path: str | os.PathLike, *, max_bytes: int = METRICS_TAIL_BYTES) -> list[dict]:
    """The rows within the file's last `max_bytes`, newest first (a line cut by the limit, or that is
    not a JSON object, left out)."""
    try:
        with open(metrics_path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - max_bytes)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]
    rows = (_parse_row(line.decode("utf-8", errors="replace")) for line in reversed(lines) if line.strip())
    return [row for row in rows if row is not None]


def newest_of_each_kind(rows: list[dict]) -> dict[str, dict]:
    """The first row of each kind ("train", "eval", "sample", ...) among `rows` given newest first."""
    newest: dict[str, dict] = {}
    for row in rows:
        if isinstance(row.get("kind"), str):
            newest.setdefault(row["kind"], row)
    return newest


def latest_rows(metrics_path: str | os.PathLike, *, max_bytes: int = METRICS_TAIL_BYTES) -> dict[str, dict]:
    """The newest row of each kind ("train", "eval", "sample") within the file's last `max_bytes`."""
    return newest_of_each_kind(tail_rows(metrics_path, max_bytes=max_bytes))


def first_row_time(metrics_path: Path) -> float | None:
    """The time of the first metrics row: when the run's first trainer began (a resume appends,
    while status.json's `started` is the current attempt's)."""
    try:
        with open(metrics_path, "rb") as f:
            line = f.readline(FIRST_ROW_MAX_BYTES)
    except FileNotFoundError:
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return None
    time_of_row = row.get("time") if isinstance(row, dict) else None
    return float(time_of_row) if isinstance(time_of_row, (int, float)) else None
