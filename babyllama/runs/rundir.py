from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import psutil

from babyllama.checkpoint import (
    CHECKPOINTS_DIR,
    LATEST_FILE,
    Checkpoint,
    checkpoint_problem,
    latest_checkpoint,
    list_checkpoints,
    remove_unfinished_checkpoints,
)
from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, atomic_write_json

ACTIVE_STATES = ("starting", "running", "stopping")
ENDED_STATES = ("finished", "failed", "stopped")
STATES = ACTIVE_STATES + ENDED_STATES
# Shown for a run directory that has a config but has never been launched; never written.
CREATED = "created"

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0

TRAIN_PROGRAM = ("-m", "babyllama", "train")
# Set in a launched trainer's environment and recorded in status.json as launch_id, so the
# trainer (any msrun rank included) knows the "starting" status it finds is its own.
LAUNCH_ID_ENV = "BABYLLAMA_LAUNCH_ID"
DEFAULT_ROOT = Path("out/runs")

# psutil derives creation times from boot time + clock ticks: equal for the same process,
# so a difference above this means the pid was reused.
CREATE_TIME_TOLERANCE_S = 1.0
# How far back list_runs looks in metrics.jsonl for the latest train/eval/sample rows.
METRICS_TAIL_BYTES = 256 * 1024
_READ_BLOCK = 64 * 1024


def this_host() -> str:
    return socket.gethostname()


def process_identity() -> dict:
    """The status fields that let a reader tell whether this process still lives."""
    me = psutil.Process()
    return {"pid": me.pid, "pid_create_time": me.create_time(), "host": this_host()}


class RunState(NamedTuple):
    state: str
    reason: str | None


class RunDir:
    """One run directory. Creating the object touches nothing on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._metrics_line_checked = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def latest_path(self) -> Path:
        return self.checkpoints_dir / LATEST_FILE

    @property
    def msrun_log_dir(self) -> Path:
        return self.path / "msrun"

    def exists(self) -> bool:
        return self.config_path.exists() or self.status_path.exists()

    # config.json

    def create(self, config: dict, *, overwrite: bool = False) -> None:
        """Write config.json for a new run.

        A directory that already holds a config is refused unless `overwrite`, which starts
        the run over: metrics and checkpoints are deleted. train.log is kept because a
        detached trainer's own output already goes there.
        """
        if self.config_path.exists():
            if not overwrite:
                raise UserError(
                    f"{self.config_path} already exists: this run directory is taken. "
                    "Pick another run name, or resume this run instead of creating it."
                )
            status = self.read_status()
            current = effective_state(status)
            if current.state in ACTIVE_STATES and not _owned_by_this_process(status):
                raise UserError(
                    f"{self.path} is {current.state} (pid {status.get('pid')} on {status.get('host')}); "
                    f"stop it first with `babyllama runs stop {self.path}`."
                )
            self.metrics_path.unlink(missing_ok=True)
            shutil.rmtree(self.checkpoints_dir, ignore_errors=True)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{self.config_path} does not exist: {self.path} is not a run directory.") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{self.config_path}:{e.lineno}: not valid JSON ({e.msg}).") from None

    # status.json

    def read_status(self) -> dict:
        """The status as written; {} when the run was never started. See `state()` for liveness."""
        try:
            status = json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as e:
            raise UserError(f"{self.status_path}:{e.lineno}: not valid JSON ({e.msg}).") from None
        return status if isinstance(status, dict) else {}

    def write_status(self, **fields) -> dict:
        """Merge `fields` into status.json (atomically, `updated` set to now); returns the new status."""
        return self._update_status(lambda status: fields)

    def mark_running(self, *, step: int, max_steps: int, world_size: int = 1, **fields) -> dict:
        """Claim the run for this process: state running, with the pid, host and create time.

        Refused while another live process holds the run. Launcher fields are kept only when
        `launch_detached` started this process, so `stop_run` never signals a stranger.
        """

        def claim(status: dict) -> dict:
            owned = _owned_by_this_process(status)
            current = effective_state(status)
            if current.state in ACTIVE_STATES and not owned:
                raise UserError(
                    f"{self.path} is already {current.state} (pid {status.get('pid')} on {status.get('host')}): "
                    f"two trainers cannot share a run directory. Stop it with `babyllama runs stop {self.path}`."
                )
            claimed = {
                "state": "running",
                **process_identity(),
                "step": step,
                "max_steps": max_steps,
                "world_size": world_size,
                "error": None,
                **fields,
            }
            if not owned:
                claimed.update(launcher=None, launcher_pid=None, launcher_create_time=None, launch_id=None,
                               started=time.time())
            return claimed

        return self._update_status(claim)

    def state(self) -> RunState:
        return effective_state(self.read_status())

    @contextlib.contextmanager
    def heartbeat(self, interval: float = HEARTBEAT_S) -> Iterator[None]:
        """Keep `updated` fresh from a background thread while the body runs (compiles included)."""
        stop = threading.Event()

        def touch(status: dict) -> dict | None:
            return {} if status.get("state") in ACTIVE_STATES else None

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    self._update_status(touch)
                except OSError as e:
                    # A full or briefly unavailable disk must not end training; the next beat retries.
                    print(f"babyllama: could not update {self.status_path}: {e}", file=sys.stderr)

        thread = threading.Thread(target=beat, name="status-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @contextlib.contextmanager
    def _status_lock(self) -> Iterator[None]:
        # Read-merge-write must not interleave between the launcher, the trainer and its
        # heartbeat thread; flock serialises separate open() calls even within one process.
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".status.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _update_status(self, change: Callable[[dict], dict | None]) -> dict:
        """Apply `change(current) -> fields to merge` under the lock; None leaves the file alone."""
        with self._status_lock():
            status = self.read_status()
            fields = change(status)
            if fields is None:
                return status
            state = fields.get("state")
            if state is not None and state not in STATES:
                raise ValueError(f"unknown run state {state!r}; expected one of {', '.join(STATES)}")
            status = {**status, **fields, "updated": time.time()}
            atomic_write_json(self.status_path, status)
            return status

    # metrics.jsonl

    def append_metrics(self, row: dict) -> None:
        """Append one row as one JSON line, flushed. `time` (epoch seconds) is added when missing."""
        if "time" not in row:
            row = {**row, "time": round(time.time(), 3)}
        line = json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
        if not self._metrics_line_checked:
            # A process killed mid-write leaves a line without its newline; start ours on a
            # fresh line so only the broken one is lost.
            if not _ends_with_newline(self.metrics_path):
                line = "\n" + line
            self._metrics_line_checked = True
        with open(self.metrics_path, "ab") as f:
            f.write(line.encode("utf-8"))

    # checkpoints/

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:07d}"

    def checkpoint_temp_path(self, step: int) -> Path:
        """Where to write a checkpoint before `publish_checkpoint`; never listed as complete."""
        return self.checkpoints_dir / f".step_{step:07d}.tmp-{os.getpid()}"

    def publish_checkpoint(self, temp: Path, step: int) -> Checkpoint:
        """Rename a fully written checkpoint folder into place, then point `latest` at it."""
        final = self.checkpoint_path(step)
        replaced = None
        if final.exists():
            replaced = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, replaced)
        os.replace(temp, final)
        _fsync_dir(self.checkpoints_dir)
        atomic_write_bytes(self.latest_path, f"{final.name}\n".encode())
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        return Checkpoint(step, final)

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first."""
        return list_checkpoints(self.checkpoints_dir)

    def latest_checkpoint(self) -> Checkpoint | None:
        """The one `latest` names, or the newest complete one if `latest` is missing or stale."""
        return latest_checkpoint(self.checkpoints_dir)

    def prune_checkpoints(self, keep: int) -> list[Path]:
        """Delete all but the newest `keep` complete checkpoints (never the `latest` one), and
        unfinished ones. Returns what was deleted."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        latest = self.latest_checkpoint()
        doomed = [c.path for c in self.checkpoints()[:-keep] if c != latest]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return doomed + remove_unfinished_checkpoints(self.checkpoints_dir)


def _ends_with_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_run(run: RunDir | str | os.PathLike) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


# Liveness


def _recorded_process(pid: int, create_time: float | None) -> tuple[psutil.Process | None, str | None]:
    """(the process, None) while `pid` still names the process that was recorded, else (None, why)."""
    gone = f"process {pid} is gone"
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None, gone
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return None, f"{gone} (it exited without recording why)"
        if create_time is not None and abs(process.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return None, f"{gone} (the pid now belongs to another process)"
    except psutil.NoSuchProcess:
        return None, gone
    except psutil.AccessDenied:
        # Another user's process: we cannot tell more, and it may well be the trainer.
        pass
    return process, None


def _live_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    return None if pid is None else _recorded_process(pid, create_time)[0]


def still_running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def effective_state(status: dict, *, now: float | None = None, stale_after: float = STALE_AFTER_S) -> RunState:
    """What a status means right now: an active state whose process has died reads as failed."""
    state = status.get("state")
    if state is None:
        return RunState(CREATED, None)
    if state not in ACTIVE_STATES:
        return RunState(state, status.get("error"))
    host, pid = status.get("host"), status.get("pid")
    if host == this_host() and pid is not None:
        _, gone = _recorded_process(pid, status.get("pid_create_time"))
        return RunState("failed", gone) if gone else RunState(state, None)
    now = time.time() if now is None else now
    updated = status.get("updated")
    if updated is None or now - updated > stale_after:
        silent = "ever" if updated is None else f"for {format_duration(now - updated)}"
        return RunState(
            "failed",
            f"no update from {host or 'its host'} {silent} (a live trainer writes every "
            f"{HEARTBEAT_S:.0f} s; silent runs count as failed after {format_duration(stale_after)})",
        )
    return RunState(state, None)


def _owned_by_this_process(status: dict) -> bool:
    """Whether the status belongs to this process: it launched us, or names us."""
    launch_id = status.get("launch_id")
    if launch_id is not None and launch_id == os.environ.get(LAUNCH_ID_ENV):
        return True
    return status.get("host") == this_host() and status.get("pid") == os.getpid()


# Incremental readers


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


def latest_rows(metrics_path: str | os.PathLike, *, max_bytes: int = METRICS_TAIL_BYTES) -> dict[str, dict]:
    """The newest row of each kind ("train", "eval", "sample") within the file's last `max_bytes`."""
    try:
        with open(metrics_path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - max_bytes)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return {}
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]
    newest: dict[str, dict] = {}
    for line in reversed(lines):
        row = _parse_row(line.decode("utf-8", errors="replace")) if line.strip() else None
        if row is not None and isinstance(row.get("kind"), str):
            newest.setdefault(row["kind"], row)
    return newest


# Listing


@dataclass
class RunInfo:
    """One row of the runs table: status.json, the newest metrics rows and the latest checkpoint."""

    name: str
    path: Path
    state: str
    reason: str | None
    step: int | None
    max_steps: int | None
    loss: float | None
    val_loss: float | None
    tokens: int | None
    tokens_per_s: float | None
    started: float | None
    updated: float | None
    host: str | None
    pid: int | None
    world_size: int | None
    latest_checkpoint: int | None
    # Set when the latest checkpoint is incomplete: what is wrong with it and what to do.
    latest_checkpoint_problem: str | None

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since the current attempt started."""
        return None if self.started is None else (time.time() if now is None else now) - self.started

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def run_info(run: RunDir | str | os.PathLike) -> RunInfo:
    run = _as_run(run)
    try:
        status = run.read_status()
        current = effective_state(status)
    except UserError as e:
        status, current = {}, RunState("failed", str(e))
    rows = latest_rows(run.metrics_path)
    train, evaluation = rows.get("train", {}), rows.get("eval", {})
    latest = run.latest_checkpoint()
    step = status.get("step")
    if step is None:
        step = train.get("step")
    return RunInfo(
        name=run.name,
        path=run.path,
        state=current.state,
        reason=current.reason,
        step=step,
        max_steps=status.get("max_steps"),
        loss=train.get("loss"),
        val_loss=evaluation.get("val_loss"),
        tokens=train.get("tokens"),
        tokens_per_s=train.get("tokens_per_s"),
        started=status.get("started"),
        updated=status.get("updated"),
        host=status.get("host"),
        pid=status.get("pid"),
        world_size=status.get("world_size"),
        latest_checkpoint=latest.step if latest else None,
        latest_checkpoint_problem=_incomplete_latest(run, latest) if latest else None,
    )


def _incomplete_latest(run: RunDir, latest: Checkpoint) -> str | None:
    """What is wrong with the latest checkpoint and what to do, or None when it is complete."""
    problem = checkpoint_problem(latest.path)
    if problem is None:
        return None
    # Once it is deleted, `--resume` takes the newest checkpoint left (latest_checkpoint's fallback).
    also_incomplete = []
    resume = f"`babyllama train --run {run.path} --resume` starts again from step 0 (no complete checkpoint is left)"
    for older in reversed([c for c in run.checkpoints() if c != latest]):
        if checkpoint_problem(older.path) is None:
            resume = f"`babyllama train --run {run.path} --resume` continues from {older.path.name}"
            break
        also_incomplete.append(str(older.path))
    also = f" (and {', '.join(also_incomplete)}, incomplete too)" if also_incomplete else ""
    return f"{problem}: the checkpoint is incomplete; delete {latest.path}{also}, and {resume}"


def list_runs(root: str | os.PathLike = DEFAULT_ROOT) -> list[RunInfo]:
    """Every run directory directly under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [RunDir(entry.path) for entry in os.scandir(root) if entry.is_dir()]
    infos = [run_info(run) for run in runs if run.exists()]

    def newest_first(info: RunInfo) -> float:
        if info.started is not None:
            return info.started
        try:
            return (info.path / "config.json").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    return sorted(infos, key=newest_first, reverse=True)


def resolve_run(name_or_path: str, root: str | os.PathLike = DEFAULT_ROOT) -> RunDir:
    """A run given by name (under `root`) or by path."""
    for candidate in (Path(name_or_path), Path(root) / name_or_path):
        if RunDir(candidate).exists():
            return RunDir(candidate)
    raise UserError(f"no run named {name_or_path!r} under {root} (and no run directory at that path); "
                    "`babyllama runs` lists them.")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


# Launching and stopping


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Popen objects of launched trainers, polled on each launch so the ones that ended are reaped
# instead of lingering as zombies in a long-lived app.
_launched: list[subprocess.Popen] = []


def _python_shim(bin_dir: Path) -> Path:
    """A `python` that is this interpreter: msrun runs workers as the literal command `python`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    atomic_write_bytes(shim, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'.encode())
    shim.chmod(0o755)
    return bin_dir


def launch_detached(
    run: RunDir | str | os.PathLike,
    args: Sequence[str] = (),
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    program: Sequence[str] = TRAIN_PROGRAM,
    cwd: str | os.PathLike | None = None,
) -> int:
    """Start `python *program --run RUN *args` in its own session and return its pid.

    With `workers > 1` the same command runs under msrun on this host (one worker per
    device, a free master port, worker logs in RUN/msrun/, rank 0's output in train.log).
    The process reads /dev/null and appends its output to train.log, so the caller's exit,
    a SIGHUP or a closed terminal never reach it. status.json says `starting` with the pid
    before this returns.
    """
    run = _as_run(run)
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    run.path.mkdir(parents=True, exist_ok=True)
    status = run.read_status()
    current = effective_state(status)
    if current.state in ACTIVE_STATES:
        raise UserError(
            f"{run.path} is already {current.state} (pid {status.get('pid')} on {status.get('host')}); "
            f"stop it first with `babyllama runs stop {run.path}`."
        )
    _reap_launched()

    trainer = [*program, "--run", str(run.path.resolve()), *args]
    launch_id = uuid.uuid4().hex
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), LAUNCH_ID_ENV: launch_id}
    if workers > 1:
        launcher = "msrun"
        argv = [
            sys.executable, "-m", "mindspore.parallel.cluster.run",
            f"--worker_num={workers}", f"--local_worker_num={workers}",
            f"--master_port={free_port()}", f"--log_dir={run.msrun_log_dir.resolve()}",
            "--join=True", "--tail_worker_log=0",
            "python", *trainer,
        ]
        shim_dir = _python_shim(run.msrun_log_dir / "bin")
        child_env["PATH"] = f"{shim_dir.resolve()}{os.pathsep}{child_env.get('PATH', '')}"
    else:
        launcher = "python"
        argv = [sys.executable, *trainer]

    run.write_status(
        state="starting", host=this_host(), pid=None, pid_create_time=None,
        launcher=launcher, launcher_pid=None, launcher_create_time=None,
        world_size=workers, started=time.time(), error=None, command=argv, launch_id=launch_id,
    )
    with open(run.log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp} launching: {shlex.join(argv)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=child_env, cwd=cwd,
            )
        except OSError as e:
            run.write_status(state="failed", error=f"could not start {argv[0]}: {e}")
            raise UserError(f"could not start training for {run.path}: {e}") from None
    _launched.append(process)
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = None

    def record_launcher(status: dict) -> dict:
        fields = {"launcher_pid": process.pid, "launcher_create_time": create_time}
        if status.get("pid") is None:
            fields.update(pid=process.pid, pid_create_time=create_time)
        return fields

    run._update_status(record_launcher)
    return process.pid


@dataclass
class StopReport:
    name: str
    state: str
    signalled: list[int]
    message: str


def _run_processes(status: dict) -> tuple[list[int], list[psutil.Process]]:
    """What to signal to stop a run on this host, and which processes to watch until gone.

    The trainers themselves, never their process groups: a trainer's group holds MindSpore's
    kernel compiler server, which a SIGTERM would end mid-compile, failing the run. A
    detached launch is the trainer; msrun starts each worker in a session of its own, so an
    msrun launch is stopped through its workers (msrun and its scheduler follow once the
    workers have exited); a run started by hand through its trainer pid. `kill_run` ends
    every process watched.
    """
    launcher = _live_process(status.get("launcher_pid"), status.get("launcher_create_time"))
    if launcher is not None:
        try:
            descendants = launcher.children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        watch = [launcher, *descendants]
        if status.get("launcher") == "msrun":
            workers = [p for p in descendants if _is_session_leader(p.pid)]
            if workers:
                return [p.pid for p in workers], watch
        return [launcher.pid], watch
    trainer = _live_process(status.get("pid"), status.get("pid_create_time"))
    if trainer is not None:
        return [trainer.pid], [trainer]
    return [], []


def _is_session_leader(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:
        return False


def _send(pids: list[int], sig: signal.Signals) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def _reap_launched() -> None:
    for launched in list(_launched):
        if launched.poll() is not None:
            _launched.remove(launched)


def wait_gone(processes: list[psutil.Process], timeout: float) -> bool:
    # Polled rather than waited on: these are rarely our children, and a zombie that nobody
    # reaps has ended all the same.
    deadline = time.monotonic() + timeout
    while any(still_running(p) for p in processes):
        _reap_launched()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _require_local(run: RunDir, status: dict) -> None:
    host = status.get("host")
    if host is not None and host != this_host():
        raise UserError(f"{run.name} runs on host {host}, not {this_host()}: stop it from {host}.")


def stop_run(run: RunDir | str | os.PathLike, *, wait: bool = False, timeout: float = 600.0) -> StopReport:
    """Ask a run to stop: SIGTERM to its trainer processes, which checkpoint and exit `stopped`.

    With `wait`, return once its processes are gone or after `timeout` seconds. A process
    that died of the signal before the trainer could record it (still importing, say) is
    recorded as stopped here, with a note in `error`.
    """
    run = _as_run(run)
    status = run.read_status()
    current = effective_state(status)
    if current.state not in ACTIVE_STATES:
        return StopReport(run.name, current.state, [], f"{run.name} is not running ({current.state}).")
    _require_local(run, status)
    targets, watch = _run_processes(status)
    signalled = _send(targets, signal.SIGTERM)
    if not wait:
        return StopReport(run.name, "stopping", signalled,
                          f"sent SIGTERM to {_pids(signalled)}; {run.name} saves a checkpoint and stops.")
    if not wait_gone(watch, timeout):
        return StopReport(run.name, run.state().state, signalled,
                          f"{run.name} is still running {format_duration(timeout)} after SIGTERM; "
                          f"`babyllama runs kill {run.name}` ends it without a checkpoint.")
    final = _record_end_if_silent(run, "process ended on SIGTERM before the trainer recorded its state")
    return StopReport(run.name, final.state, signalled, f"{run.name} is {final.state}.")


def kill_run(run: RunDir | str | os.PathLike, *, timeout: float = 30.0) -> StopReport:
    """Last resort: SIGKILL every process of the run. Steps after the last checkpoint are lost;
    `babyllama train --resume` continues from that checkpoint."""
    run = _as_run(run)
    status = run.read_status()
    current = effective_state(status)
    if current.state not in ACTIVE_STATES:
        return StopReport(run.name, current.state, [], f"{run.name} is not running ({current.state}).")
    _require_local(run, status)
    targets, watch = _run_processes(status)
    signalled = _send(targets, signal.SIGKILL)
    signalled += _send([p.pid for p in watch if p.pid not in signalled], signal.SIGKILL)
    wait_gone(watch, timeout)
    latest = run.latest_checkpoint()
    kept = f"resume continues from {latest.path.name}" if latest else "no checkpoint was saved"
    final = _record_end_if_silent(run, f"killed with SIGKILL; {kept}")
    return StopReport(run.name, final.state, signalled, f"killed {_pids(signalled)}; {kept}.")


def _record_end_if_silent(run: RunDir, note: str) -> RunState:
    def end(status: dict) -> dict | None:
        return {"state": "stopped", "error": note} if status.get("state") in ACTIVE_STATES else None

    run._update_status(end)
    return run.state()


def _pids(pids: list[int]) -> str:
    return ", ".join(map(str, pids)) if pids else "no process (already gone)"


# CLI: babyllama runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def common(p: argparse.ArgumentParser, suppress: bool) -> None:
        # The same options are accepted before and after the action; SUPPRESS keeps an
        # action's parser from overwriting what was given before it.
        p.add_argument("--root", type=Path, default=argparse.SUPPRESS if suppress else DEFAULT_ROOT,
                       help=f"folder holding the run directories (default {DEFAULT_ROOT})")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                       help="print JSON instead of a table")

    parser.epilog = "Without an ACTION: the table of runs under --root, newest first."
    common(parser, suppress=False)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="status, latest metrics, checkpoints and log tail of one run")
    show.add_argument("run", metavar="NAME|PATH")
    show.add_argument("--log-lines", type=int, default=15, help="lines of train.log to show (default 15)")
    stop = actions.add_parser("stop", help="SIGTERM a run: it saves a checkpoint and exits stopped")
    stop.add_argument("run", metavar="NAME|PATH")
    stop.add_argument("--wait", action="store_true", help="wait until it has stopped")
    stop.add_argument("--timeout", type=float, default=600.0, help="seconds to wait with --wait (default 600)")
    kill = actions.add_parser("kill", help="SIGKILL a run that does not stop; unsaved steps are lost")
    kill.add_argument("run", metavar="NAME|PATH")
    for action in (show, stop, kill):
        common(action, suppress=True)


def run(args: argparse.Namespace) -> int:
    if args.action is None:
        return _print_table(list_runs(args.root), args.json)
    target = resolve_run(args.run, args.root)
    if args.action == "show":
        return _print_show(target, args.json, args.log_lines)
    report = stop_run(target, wait=args.wait, timeout=args.timeout) if args.action == "stop" else kill_run(target)
    print(json.dumps(asdict(report)) if args.json else report.message)
    waited = args.action == "kill" or args.wait
    return 1 if waited and report.state in ACTIVE_STATES else 0


def _print_table(infos: list[RunInfo], as_json: bool) -> int:
    if as_json:
        print(json.dumps([info.to_dict() for info in infos], ensure_ascii=False, indent=2))
        return 0
    if not infos:
        print("no runs yet")
        return 0
    now = time.time()
    header = ("NAME", "STATE", "STEP", "LOSS", "VAL", "TOK/S", "AGE", "NOTE")
    rows = [
        (
            info.name,
            info.state,
            f"{_or_dash(info.step)}/{_or_dash(info.max_steps)}",
            _number(info.loss, ".4f"),
            _number(info.val_loss, ".4f"),
            _number(info.tokens_per_s, ",.0f"),
            format_duration(info.age_s(now)),
            "; ".join(note for note in (info.reason, _incomplete_note(info)) if note),
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _print_show(target: RunDir, as_json: bool, log_lines: int) -> int:
    info = run_info(target)
    rows = latest_rows(target.metrics_path)
    checkpoints = target.checkpoints()
    log = tail_lines(target.log_path, log_lines)
    if as_json:
        print(json.dumps({"run": info.to_dict(), "status": target.read_status(), "latest_rows": rows,
                          "checkpoints": [c.step for c in checkpoints], "log": log}, ensure_ascii=False, indent=2))
        return 0
    now = time.time()
    print(f"run         {info.name}  ({info.path})")
    print(f"state       {info.state}" + (f" - {info.reason}" if info.reason else ""))
    print(f"process     pid {_or_dash(info.pid)} on {_or_dash(info.host)}, world size {_or_dash(info.world_size)}")
    print(f"step        {_or_dash(info.step)}/{_or_dash(info.max_steps)}")
    print(f"started     {_clock(info.started)} ({format_duration(info.age_s(now))} ago)")
    print(f"updated     {_clock(info.updated)}")
    for kind in ("train", "eval", "sample"):
        if kind in rows:
            print(f"last {kind:<6} {json.dumps(rows[kind], ensure_ascii=False)}")
    names = ", ".join(c.path.name for c in checkpoints) or "none"
    latest = ""
    if info.latest_checkpoint is not None:
        latest = f" (latest {info.latest_checkpoint}{', INCOMPLETE' if info.latest_checkpoint_problem else ''})"
    print(f"checkpoints {names}{latest}")
    if info.latest_checkpoint_problem:
        print(f"            {info.latest_checkpoint_problem}")
    if log:
        print(f"--- last {len(log)} lines of {target.log_path}")
        print("\n".join(log))
    return 0


def _incomplete_note(info: RunInfo) -> str | None:
    if not info.latest_checkpoint_problem:
        return None
    return f"latest checkpoint, step {info.latest_checkpoint}, is incomplete: `babyllama runs show {info.path}` says what to do"


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _clock(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
