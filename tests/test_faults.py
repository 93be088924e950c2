"""The fault-injection bench's short version reports 100% on every line (bench/faults.py --quick).

kill -9 and SIGTERM at random moments with exact resumes, a full disk during checkpoint writes,
at --resume and in prepare, and two trainers on a cold kernel cache with one killed mid-compile.
It takes about two minutes on 2 cores, and mounts tmpfs folders: it needs root.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK_TIMEOUT_S = 600
KINDS = (
    "kill -9 at random moments",
    "SIGTERM at random moments",
    "full disk writing a checkpoint",
    "full disk at --resume (0 bytes free)",
    "full disk in prepare",
    "concurrent cold-cache compiles",
)


def tmpfs_problem(folder: Path) -> str | None:
    """Why a tmpfs cannot be mounted on `folder` here, or None."""
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                 capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run mount: {e}"
    if mounted.returncode != 0:
        return f"a tmpfs cannot be mounted (not root?): {mounted.stderr.strip()}"
    subprocess.run(["umount", str(folder)], capture_output=True, timeout=30, check=False)
    return None


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_quick_fault_injection_is_all_100_percent(tmp_path):
    problem = tmpfs_problem(tmp_path / "probe")
    if problem:
        pytest.skip(problem)
    try:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "faults.py"), "--quick", "--seed", "0",
                               "--work", str(tmp_path / "work")],
                              cwd=ROOT, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"bench/faults.py --quick did not end within {QUICK_TIMEOUT_S} s:\n{e.stdout or ''}")
    output = done.stdout + done.stderr
    assert "\n== fault injection" in done.stdout, output
    summary = done.stdout.split("\n== fault injection", 1)[1].splitlines()
    for title in KINDS:
        lines = [line for line in summary if line.startswith(f"{title}:")]
        assert lines, f"no line for {title!r}:\n{output}"
        line = lines[0]
        assert "skipped" not in line, line
        for passed, applied in re.findall(r"(\d+)/(\d+)", line):
            assert passed == applied, f"{line}\n\n{output}"
        for share in re.findall(r"\((\d+)%\)", line):
            assert share == "100", f"{line}\n\n{output}"
    assert "verdict: PASS" in done.stdout, output
    assert done.returncode == 0, output
