"""`RunDir`: one run directory's files (config.json, status.json under its lock and its heartbeat,
metrics.jsonl appends, checkpoints/). See docs/ARCHITECTURE.md, "The run directory".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from babyllama.checkpoint import (
    CHECKPOINTS_DIR,
    LATEST_FILE,
    Checkpoint,
    latest_checkpoint,
    list_checkpoints,
    remove_unfinished_checkpoints,
)
from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, atomic_write_json, fsync_dir
from babyllama.runs.liveness import (
    ACTIVE_STATES,
    HEARTBEAT_S,
    STATES,
    RunState,
    effective_state,
    owned_by_this_process,
    process_identity,
    stop_it_first,
)

# What an alert row's "alert" field may say: a step not applied (its loss or gradient norm not
# finite, or its loss far above its recent level), a return to the last good checkpoint, the
# end of a run that kept diverging, memory near the machine's limit, validation loss rising
# while the training loss falls.
ALERT_KINDS = ("nonfinite", "spike", "rollback", "diverged", "memory", "overfitting")


def alert_words(step, message: str) -> str:
    """An alert's message without the "step N: " it starts with (the log's line needs it), for
    where its step is shown beside it."""
    return message.removeprefix(f"step {step}: ")


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

    @property
    def note_path(self) -> Path:
        return self.path / "note.txt"

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
            if current.state in ACTIVE_STATES and not owned_by_this_process(status):
                raise UserError(stop_it_first(self.path, status, current.state))
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

    def read_note(self) -> str | None:
        """The note a user gave the run (`babyllama runs note`), or None when it has none or it cannot be read."""
        try:
            return self.note_path.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

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
        return self.update_status(lambda status: fields)

    def mark_running(self, *, step: int, max_steps: int, world_size: int = 1, **fields) -> dict:
        """Claim the run for this process: state running, with the pid, host and create time.

        Refused while another live process holds the run. Launcher fields are kept only when
        `launch_detached` started this process, so `stop_run` never signals a stranger.
        """

        def claim(status: dict) -> dict:
            owned = owned_by_this_process(status)
            current = effective_state(status)
            if current.state in ACTIVE_STATES and not owned:
                taken = stop_it_first(self.path, status, current.state)
                raise UserError(f"two trainers cannot share a run directory: {taken}")
            # A stop asked while this process started (its launcher marked it) is still under way.
            asked_to_stop = owned and status.get("state") == "stopping"
            claimed = {
                "state": "stopping" if asked_to_stop else "running",
                **process_identity(),
                "step": step,
                "max_steps": max_steps,
                "world_size": world_size,
                "error": None,
                **fields,
            }
            if not owned:
                # Not launched by launch_detached: this process's own command line is how it was started.
                claimed.update(launcher=None, launcher_pid=None, launcher_create_time=None, launch_id=None,
                               started=time.time(), stop_requested=None, kill_requested=None,
                               command=list(sys.orig_argv))
            return claimed

        return self.update_status(claim)

    def mark_stopping(self, *, pid: int | None = None, **fields) -> dict:
        """State `stopping`, and `stop_requested` (epoch seconds) unless a stop was already asked,
        when the run is active (and, given `pid`, that process holds it); else nothing changes."""

        def stopping(status: dict) -> dict | None:
            if status.get("state") not in ACTIVE_STATES or (pid is not None and status.get("pid") != pid):
                return None
            asked = status.get("stop_requested") if status.get("state") == "stopping" else None
            return {**fields, "state": "stopping",
                    "stop_requested": asked if isinstance(asked, (int, float)) else time.time()}

        return self.update_status(stopping)

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
                    self.update_status(touch)
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
    def status_lock(self) -> Iterator[None]:
        # Read-merge-write must not interleave between the launcher, the trainer and its
        # heartbeat thread; flock serialises separate open() calls even within one process.
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".status.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update_status(self, change: Callable[[dict], dict | None]) -> dict:
        """Apply `change(current) -> fields to merge` under the lock; None leaves the file alone."""
        with self.status_lock():
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

    def append_alert(self, *, step: int, alert: str, message: str, action: str, **fields) -> dict:
        """Record a health event: the line `alert: MESSAGE` on stdout (the trainer's log), a metrics
        row `{"kind": "alert", ...}` and, in status.json, the count of alerts and the last one (what
        `babyllama runs` and the app mark a run by).

        `alert` names what happened (ALERT_KINDS), `action` what the trainer did about it, `message`
        is the line a user reads. Returns the row.
        """
        if alert not in ALERT_KINDS:
            raise ValueError(f"unknown alert {alert!r}; expected one of {', '.join(ALERT_KINDS)}")
        row = {"kind": "alert", "step": step, "alert": alert, "action": action, "message": message, **fields}
        print(f"alert: {message}", flush=True)
        self.append_metrics(row)
        self.update_status(lambda status: {
            "alerts": (status.get("alerts") if isinstance(status.get("alerts"), int) else 0) + 1,
            "last_alert": {"step": step, "alert": alert, "message": message},
        })
        return row

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
        fsync_dir(self.checkpoints_dir)
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


def as_run(run: RunDir | str | os.PathLike) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)
