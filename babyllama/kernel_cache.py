"""MindSpore's generated kernels: a compile folder of each process's own, and a cache they share.

`KernelWorkspace` creates, fills, publishes and removes a process's workspace;
`compiler_failure` names why the kernel compiler failed. What it does: docs/ARCHITECTURE.md,
"Launching and stopping"; why: docs/MINDSPORE.md, "The graph-kernel compiler (AKG)".
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import psutil

from babyllama.errors import UserError
from babyllama.files import abandoned_temp, temp_path, user_cache_dir

SHARED = "akg_kernel_meta"
WORKSPACES = "processes"
# A kernel is usable when MindSpore's cache lookup finds its description and its library.
DESCRIPTION, LIBRARY = ".json", ".so"


def kernel_cache_dir() -> Path:
    """Where generated kernels are kept across runs, per MindSpore version."""
    return user_cache_dir() / f"mindspore-{version('mindspore')}-kernels"


# What MindSpore's kernel-build server imports to compile a kernel on the CPU (akg_process.py).
_IMPORT_COMPILER = (
    "import sys\n"
    "from mindspore._extends.parallel_compile.akg_compiler.get_file_path import get_akg_path\n"
    "sys.path.append(get_akg_path())\n"
    "import akg.ms\n"
)
COMPILER_CHECK_TIMEOUT_S = 120


def compiler_failure(error: RuntimeError) -> Exception:
    """What to tell of a failed kernel compile: why the compiler cannot start, else `error`.

    The compiler runs in a server process; when it cannot start (an import that MindSpore's
    wheel does not declare, such as `decorator`), MindSpore says only "Response is empty".
    Importing the compiler as the server does names the cause.
    """
    try:
        check = subprocess.run([sys.executable, "-c", _IMPORT_COMPILER], capture_output=True, text=True,
                               timeout=COMPILER_CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return error
    lines = check.stderr.strip().splitlines()
    if check.returncode == 0 or not lines:
        return error
    cause = lines[-1]
    missing = cause.partition("No module named ")[2].strip("'\"")
    fix = (f"pip install {missing.split('.')[0]}" if missing else
           "reinstall it: pip install --force-reinstall mindspore")
    return UserError(f"MindSpore's kernel compiler cannot start in {sys.executable}: {cause}; {fix}, "
                     "or install babyllama again (pip install -e .), which declares what it needs")


def complete_kernels(folder: Path) -> dict[str, list[Path]]:
    """Kernel name -> its files, for the kernels in `folder` that have a description and a library."""
    files: dict[str, list[Path]] = {}
    for path in _entries(folder):
        name, dot, _ = path.name.rpartition(".")
        if dot and not path.name.startswith("."):
            files.setdefault(name, []).append(path)
    return {name: paths for name, paths in files.items()
            if {p.suffix for p in paths} >= {DESCRIPTION, LIBRARY}}


def _description_last(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: p.suffix == DESCRIPTION)


class KernelWorkspace:
    """This process's own compile folder; see the module docstring."""

    def __init__(self, root: Path | None = None):
        self.root = root or kernel_cache_dir()
        self.shared = self.root / SHARED
        self.path = self.root / WORKSPACES / f"{socket.gethostname()}-{os.getpid()}"
        self.kernels = self.path / SHARED
        self._known: set[str] = set()

    def create(self) -> None:
        """An empty workspace; the leftovers of this host's dead processes removed."""
        self._remove_abandoned()
        shutil.rmtree(self.path, ignore_errors=True)
        self.kernels.mkdir(parents=True)
        self.shared.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)

    def fill(self) -> int:
        """Copy in the shared cache's complete kernels not already here; returns how many."""
        here = complete_kernels(self.kernels)
        copied = 0
        for name, paths in complete_kernels(self.shared).items():
            if name in here:
                continue
            try:
                for path in _description_last(paths):
                    shutil.copy2(path, self.kernels / path.name)
            except OSError:  # pruned or being replaced meanwhile: compiled again if needed
                continue
            copied += 1
        self._known = set(complete_kernels(self.kernels))
        return copied

    def publish(self) -> int:
        """Copy the kernels compiled here since `fill` into the shared cache; returns how many."""
        published = 0
        shared = complete_kernels(self.shared)
        for name, paths in complete_kernels(self.kernels).items():
            if name in self._known or name in shared:
                continue
            try:
                for path in _description_last(paths):
                    temp = temp_path(self.shared / path.name)
                    shutil.copy2(path, temp)
                    os.replace(temp, self.shared / path.name)
            except OSError:  # a full disk: the kernels are compiled again next time
                for path in paths:
                    temp_path(self.shared / path.name).unlink(missing_ok=True)
                continue
            self._known.add(name)
            published += 1
        return published

    def close(self) -> None:
        if not self.path.exists():
            return
        self.publish()
        shutil.rmtree(self.path, ignore_errors=True)

    def _remove_abandoned(self) -> None:
        """Workspaces of this host's processes that are gone, and their half-published files."""
        host = socket.gethostname()
        for entry in _entries(self.root / WORKSPACES):
            owner, _, pid = entry.name.rpartition("-")
            if owner == host and pid.isdigit() and not psutil.pid_exists(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
        for entry in _entries(self.shared):
            if abandoned_temp(entry):
                entry.unlink(missing_ok=True)
        _remove_abandoned_pools()


# The compiler's pool: sizeof(size_t) * 3 lists * (1,000 kernels + 1) + 512 bytes (docs/MINDSPORE.md).
POOL_BYTES = 8 * 3 * 1001 + 512
_IPC_RMID = 0


def _remove_abandoned_pools() -> None:
    """Remove the compiler pools that killed processes left: nobody attached, their creator gone.

    A pool is removed by the last process to leave it; one killed mid-compile leaves its pool for
    good (24 KiB of the host's shared memory per SIGKILL, until a reboot).
    """
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return
    libc = None
    for row in rows:
        fields = row.split()
        shmid, size, creator, attached, uid = int(fields[1]), int(fields[3]), int(fields[4]), int(fields[6]), int(fields[7])
        if size != POOL_BYTES or attached or uid != os.getuid() or psutil.pid_exists(creator):
            continue
        if libc is None:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.shmctl(shmid, _IPC_RMID, None)


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []
