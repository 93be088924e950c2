"""End to end in a real terminal: the app in tmux launches a tiny run, dies, comes back, stops it, exports it.

This is what a user over SSH does: start a run from the app, lose the connection (tmux
kills the app with SIGHUP), reconnect and find the run still going, then stop it, get a
checkpoint and export it as a Hugging Face folder. The app is the installed `babyllama_tui` under this interpreter; the trainer is
the real `babyllama train` it launches.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it)"),
]

# The first step compiles the model and the first train row comes at step 10: minutes on a
# busy 2-core machine.
FIRST_ROWS_S = 300
STEP_IN_MONITOR = re.compile(r"step ([\d,]+)/([\d,]+)")


class Terminal:
    """One tmux session on a private server, so a user's own tmux is never touched."""

    def __init__(self, socket: str):
        self.socket = socket

    def tmux(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self, command: str, cwd: Path, width: int, height: int) -> None:
        self.tmux("new-session", "-d", "-s", "app", "-x", str(width), "-y", str(height),
                  f"cd {shlex.quote(str(cwd))} && {command}")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "app")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", "-t", "app", key)
            time.sleep(0.3)

    def wait_for(self, what: str, found, timeout: float) -> re.Match | str:
        """Poll the screen until `found(screen)` is truthy; fail with the last screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            result = found(screen)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:.0f} s for {what}; the screen:\n{screen}")
            time.sleep(0.5)

    def close(self) -> None:
        """What a dropped SSH connection does: the terminal goes, the app gets SIGHUP."""
        self.tmux("kill-server", check=False)


def alive(pid: int) -> bool:
    """Running, not a zombie: a finished trainer whose parent (the app) is gone waits to be
    reaped by whatever adopted it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ends_within(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def status_of(run: Path) -> dict:
    return json.loads((run / "status.json").read_text(encoding="utf-8"))


def steps_shown(screen: str) -> int | None:
    match = STEP_IN_MONITOR.search(screen)
    return int(match.group(1).replace(",", "")) if match else None


@pytest.fixture
def project(tmp_path, sample_jsonl, sp_tokenizer_dir) -> Path:
    """A project folder with one token file in data/, as `babyllama prepare` writes it."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "babyllama", "prepare", str(sample_jsonl), "--tokenizer", str(sp_tokenizer_dir),
         "--out", str(root / "data" / "sanguo.bin")],
        check=True, capture_output=True,
    )
    return root


@pytest.fixture
def terminal(project):
    term = Terminal(f"babyllama-test-{os.getpid()}")
    yield term
    term.close()
    # A failed test must not leave a trainer behind.
    for status in (project / "out" / "runs").glob("*/status.json"):
        pid = json.loads(status.read_text(encoding="utf-8")).get("pid")
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_run_outlives_the_app_and_stops_from_it(project, terminal):
    app = f"{shlex.quote(sys.executable)} -m babyllama_tui"

    # A new run from the form at 80x24, with its defaults (the tiny preset on the one token file).
    terminal.start(app, project, 80, 24)
    terminal.wait_for("the runs table", lambda s: "no runs yet" in s.lower() or "New run" in s, 30)
    terminal.keys("n")
    terminal.wait_for("the form's summary", lambda s: "params" in s and "tokens/step" in s, 60)
    terminal.keys("C-l")
    first = terminal.wait_for("the monitor to show training steps",
                              lambda s: (steps_shown(s) or 0) >= 10 and s, FIRST_ROWS_S)
    first_step = steps_shown(first)
    (run,) = (project / "out" / "runs").iterdir()
    trainer = status_of(run)["pid"]

    # How it was started, wrapped at 80 columns, and its log from the first line.
    terminal.keys("i")
    terminal.wait_for("the run's config", lambda s: "cosine decay" in s and "-m babyllama train" in s, 10)
    terminal.keys("Escape")
    terminal.wait_for("the monitor again", lambda s: "cosine decay" not in s, 10)
    terminal.keys("L")
    terminal.wait_for("the whole log", lambda s: "launching:" in s and "lines 1-" in s, 10)
    terminal.keys("Escape")

    # The connection drops: the app dies with its terminal, the trainer does not.
    terminal.close()
    time.sleep(1)
    assert alive(trainer), "the trainer died with the app"
    assert status_of(run)["state"] == "running"

    # Reconnect, wider this time: the runs table lists the run, still running and further on.
    terminal.start(app, project, 200, 50)
    row = re.compile(rf"{re.escape(run.name)}\s+running\s+([\d,]+)/")
    later = terminal.wait_for(
        "the run, further on, in the runs table",
        lambda s: (m := row.search(s)) and int(m.group(1).replace(",", "")) > first_step and m,
        FIRST_ROWS_S,
    )
    assert int(later.group(1).replace(",", "")) > first_step

    # Stop it from the app: it saves a checkpoint and ends `stopped`.
    terminal.keys("t", "s")
    terminal.wait_for("the stop confirmation", lambda s: "Stop (y)" in s, 10)
    terminal.keys("y")
    terminal.wait_for("the run shown stopped", lambda s: re.search(rf"{re.escape(run.name)}\s+stopped", s), 120)
    status = status_of(run)
    assert status["state"] == "stopped"
    latest = (run / "checkpoints" / "latest").read_text(encoding="utf-8").strip()
    checkpoint = run / "checkpoints" / latest
    assert (checkpoint / "model.safetensors").is_file()
    assert json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))["step"] >= first_step
    assert ends_within(trainer, 30), "the trainer went on after writing `stopped`"
    assert "Traceback" not in (run / "train.log").read_text(encoding="utf-8")

    # Export the checkpoint from the runs table, as the dialog proposes: a Hugging Face folder under out/exports/.
    terminal.keys("x")
    terminal.wait_for("the export dialog", lambda s: "Export (enter)" in s, 10)
    terminal.keys("Enter")
    terminal.wait_for("the export done", lambda s: "as hf: done" in s, 300)
    exported = project / "out" / "exports" / f"{run.name}-{int(latest.removeprefix('step_'))}-hf"
    assert {"model.safetensors", "config.json", "tokenizer.model"} <= {p.name for p in exported.iterdir()}


def test_at_80_columns_a_stop_shows_stopping_a_failed_runs_whole_reason_reads_and_a_run_that_cannot_fit_is_not_launched(project, terminal):
    from babyllama.runs import RunDir

    reason = (f"{project}/data/doomed.bin: cannot open the token file (No such file or directory); make it again "
              "with `babyllama prepare` on the Corpora screen, or choose another file, then start a new run")
    RunDir(project / "out" / "runs" / "doomed").write_status(state="failed", error=reason, started=time.time() - 60)
    # A run stopped in its first step, while the step compiles: it stays `stopping` for seconds.
    starting = project / "out" / "runs" / "starting"
    subprocess.run([sys.executable, "-m", "babyllama", "train", "--run", str(starting), "--data",
                    str(project / "data" / "sanguo.bin"), "--preset", "tiny", "--detach"],
                   check=True, capture_output=True, cwd=project)
    terminal.start(f"{shlex.quote(sys.executable)} -m babyllama_tui", project, 80, 24)
    terminal.wait_for("the new run first in the table", lambda s: re.search(r"starting\s+(starting|running)", s), 30)
    terminal.keys("s")
    terminal.wait_for("the stop confirmation", lambda s: "Stop (y)" in s, 10)
    terminal.keys("y")
    terminal.wait_for("the run shown stopping", lambda s: re.search(r"starting\s+stopping", s), 10)
    terminal.wait_for("the run shown stopped", lambda s: re.search(r"starting\s+stopped", s), 120)
    assert ends_within(status_of(starting)["pid"], 30)

    def whole(screen: str) -> bool:
        return "".join(reason.split()) in "".join(screen.split())

    terminal.keys("Down")
    terminal.wait_for("the failed run's whole reason below the runs table", whole, 30)

    # The 1b preset on this host: the form says it does not fit, and ctrl+l asks instead of launching.
    terminal.keys("n")
    terminal.wait_for("the form's summary", lambda s: "params" in s and "tokens/step" in s, 60)
    terminal.keys("Tab", "Tab", "Enter", "Down", "Down", "Down", "Enter")
    terminal.wait_for("the 1b preset's estimate", lambda s: "free" in s and "GiB a worker" in s, 30)
    terminal.keys("C-l")
    terminal.wait_for("the memory question", lambda s: "may not fit in memory" in s and "Launch anyway" in s, 10)
    terminal.keys("Enter")
    terminal.wait_for("the question gone", lambda s: "may not fit in memory" not in s, 10)
    time.sleep(1)
    assert sorted(run.name for run in (project / "out" / "runs").iterdir()) == ["doomed", "starting"], "a run was launched"
