"""Writes that never leave a half-written file under the final name."""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def user_cache_dir() -> Path:
    """babyllama's folder in the user's cache: $XDG_CACHE_HOME/babyllama, else ~/.cache/babyllama."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "babyllama"


def temp_path(path: Path, pid: int | None = None) -> Path:
    """The name a file is written under before it is renamed into place, by this process or by `pid`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def abandoned_temp(path: Path) -> bool:
    """Whether `path` is a name `temp_path` gave, of a process that is gone: what a writer killed
    midway left, never to be renamed into place."""
    import psutil

    _, marker, pid = path.name.rpartition(".tmp-")
    return path.name.startswith(".") and bool(marker) and pid.isdigit() and not psutil.pid_exists(int(pid))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # write and fsync name no file: say which one could not be written
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make the renames and new names in a folder durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def out_of_space(error: BaseException) -> bool:
    """A write that failed for want of space (or quota), whether Python, MindSpore or safetensors raised it."""
    if isinstance(error, OSError) and error.errno in OUT_OF_SPACE:
        return True
    return any(os.strerror(code) in str(error) for code in OUT_OF_SPACE)


@contextmanager
def space_failures_naming(path: Path):
    """Inside: a write that fails for want of space is raised as an OSError naming `path`, whichever
    writer failed and whatever temporary file it was writing (safetensors raises its own error type,
    write() names no file), so the command's one line names what the user asked for."""
    try:
        yield
    except BaseException as e:
        if not out_of_space(e):
            raise
        code = e.errno if isinstance(e, OSError) and e.errno in OUT_OF_SPACE else errno.ENOSPC
        raise OSError(code, os.strerror(code), str(path)) from e
