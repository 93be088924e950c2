"""babyllama.kernel_cache: a compile folder per process, fed from and feeding the shared cache.

Real folders and processes; no MindSpore (the trainer tests compile through it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from babyllama.kernel_cache import SHARED, WORKSPACES, KernelWorkspace, complete_kernels


def write_kernel(folder: Path, name: str, suffixes=(".info", ".json", ".o", ".so"), content: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        (folder / f"{name}{suffix}").write_text(f"{name}{suffix}{content}")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def workspace(tmp_path) -> KernelWorkspace:
    shared = tmp_path / SHARED
    write_kernel(shared, "Fused_Complete_1")
    write_kernel(shared, "Fused_DescriptionOnly_2", (".info",))  # a compile killed before its library
    write_kernel(shared, "Fused_NoLibrary_3", (".info", ".json"))
    made = KernelWorkspace(tmp_path)
    made.create()
    return made


def test_a_workspace_takes_only_the_complete_kernels_of_the_shared_cache(workspace):
    assert workspace.path == workspace.root / WORKSPACES / f"{socket.gethostname()}-{os.getpid()}"
    assert workspace.fill() == 1
    assert sorted(p.name for p in workspace.kernels.iterdir()) == [
        "Fused_Complete_1.info", "Fused_Complete_1.json", "Fused_Complete_1.o", "Fused_Complete_1.so"]
    assert workspace.fill() == 0  # what is there already is not copied again


def test_publishing_shares_the_kernels_compiled_here_whole_and_nothing_else(workspace):
    write_kernel(workspace.kernels, "Fused_Probe_0")  # compiled before fill: the first kernel of the process
    workspace.fill()
    write_kernel(workspace.kernels, "Fused_New_4", content=" compiled here")
    write_kernel(workspace.kernels, "Fused_Unfinished_5", (".info",))
    assert workspace.publish() == 1
    shared = workspace.shared
    assert (shared / "Fused_New_4.so").read_text() == "Fused_New_4.so compiled here"
    assert set(complete_kernels(shared)) == {"Fused_Complete_1", "Fused_New_4"}
    assert not [p for p in shared.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert workspace.publish() == 0


def test_closing_publishes_and_removes_the_workspace(workspace):
    workspace.fill()
    write_kernel(workspace.kernels, "Fused_New_6")
    workspace.close()
    assert not workspace.path.exists()
    assert "Fused_New_6" in complete_kernels(workspace.shared)


def test_a_new_workspace_removes_what_dead_processes_of_this_host_left(tmp_path):
    host = socket.gethostname()
    gone, alive = dead_pid(), os.getppid()
    workspaces = tmp_path / WORKSPACES
    for name in (f"{host}-{gone}", f"{host}-{alive}", f"another-host-{gone}"):
        write_kernel(workspaces / name / SHARED, "Fused_Left_7")
    write_kernel(tmp_path / SHARED, "Fused_Half_8", (".json",))
    os.replace(tmp_path / SHARED / "Fused_Half_8.json", tmp_path / SHARED / f".Fused_Half_8.json.tmp-{gone}")
    KernelWorkspace(tmp_path).create()
    assert sorted(p.name for p in workspaces.iterdir()) == sorted(
        [f"{host}-{alive}", f"another-host-{gone}", f"{host}-{os.getpid()}"])
    assert list((tmp_path / SHARED).iterdir()) == []


def test_a_new_workspace_removes_the_compiler_pools_that_killed_processes_left(tmp_path):
    from babyllama.kernel_cache import POOL_BYTES

    # A pool as a process killed mid-compile leaves it: nobody attached, its creator gone.
    make_pool = ("import ctypes, ctypes.util; libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True); "
                 f"print(libc.shmget(0, {POOL_BYTES}, 0o1000 | 0o600))")
    shmid = int(subprocess.run([sys.executable, "-c", make_pool], capture_output=True, text=True, check=True).stdout)
    assert shmid >= 0

    def pools() -> list[int]:
        return [int(row.split()[1]) for row in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]

    assert shmid in pools()
    KernelWorkspace(tmp_path).create()
    assert shmid not in pools()
