"""LogIndex: a log's lines by number, indexed a piece at a time and read from disk only when asked for."""

from __future__ import annotations

import os

from babyllama_tui.training.log_index import BLOCK_LINES, MAX_LINE_BYTES, LogIndex


def index_all(index: LogIndex, piece: int) -> int:
    """Grow until caught up; how many pieces it took."""
    pieces = 0
    while True:
        index.grow(piece)
        pieces += 1
        if index.caught_up:
            return pieces


def test_a_log_is_indexed_a_piece_at_a_time_and_any_line_is_read_on_its_own(tmp_path):
    log = tmp_path / "train.log"
    lines = [f"step {n} loss {n % 7}" for n in range(3 * BLOCK_LINES + 5)]
    log.write_text("".join(line + "\n" for line in lines))
    index = LogIndex(log)
    index.grow(1000)
    assert 0 < len(index) < len(lines) and not index.caught_up, "the first piece's lines, before the rest"
    assert index.line(0) == lines[0]
    assert index_all(index, 1000) > 10
    assert len(index) == len(lines)
    assert [index.line(n) for n in (0, BLOCK_LINES - 1, BLOCK_LINES, len(lines) - 1)] == [
        lines[0],
        lines[BLOCK_LINES - 1],
        lines[BLOCK_LINES],
        lines[-1],
    ]
    assert index.line(len(lines)) == ""
    assert index.widest == max(len(line) for line in lines)


def test_appended_lines_a_last_line_without_its_newline_and_progress_bars(tmp_path):
    log = tmp_path / "train.log"
    log.write_bytes(b"first\n\tindented\nloading 10%\rloading 100%\n")
    index = LogIndex(log)
    index_all(index, 4)
    assert [index.line(n) for n in range(len(index))] == ["first", "        indented", "loading 100%"]
    with open(log, "ab") as f:
        f.write(b"still being writ")
    assert index.grow()
    assert len(index) == 4 and index.line(3) == "still being writ"
    with open(log, "ab") as f:
        f.write(b"ten\nnext\n")
    assert index.grow()
    assert [index.line(n) for n in range(3, len(index))] == ["still being written", "next"]
    assert not index.grow(), "nothing new"


def test_a_log_replaced_or_cut_short_is_indexed_again_from_its_start(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"old line {n}\n" for n in range(BLOCK_LINES * 2)))
    index = LogIndex(log)
    index_all(index, 1 << 20)
    assert index.line(5) == "old line 5"
    log.write_text("new\n")
    assert index.grow()
    assert (len(index), index.line(0), index.line(5)) == (1, "new", "")
    replacement = tmp_path / "other.log"
    replacement.write_text("a\nb\nc\n" * 10)
    os.replace(replacement, log)
    index_all(index, 1 << 20)
    assert (len(index), index.line(0)) == (30, "a")
    log.unlink()
    assert index.grow() and len(index) == 0 and index.caught_up


def test_a_huge_line_is_read_only_up_to_its_limit(tmp_path):
    log = tmp_path / "train.log"
    log.write_bytes(b"x" * (MAX_LINE_BYTES * 2) + b"\nafter\n" + b"y" * 100 + b"\n" * (BLOCK_LINES * 4))
    index = LogIndex(log)
    index_all(index, 1 << 20)
    assert len(index.line(0)) == MAX_LINE_BYTES and index.widest == MAX_LINE_BYTES
    assert (index.line(1), index.line(2)) == ("after", "y" * 100)
