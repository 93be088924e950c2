"""The deadline on a stop: a guard process that ends a trainer within STOP_DEADLINE_S of a stop signal.

The trainer hands it each signal through `signal.set_wakeup_fd` (`start_guard`), as its own
handler cannot run while MindSpore holds the main thread. The guard's rules:
docs/ARCHITECTURE.md, "Launching and stopping"; why: docs/MINDSPORE.md.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from babyllama.runs import ACTIVE_STATES, RunDir, still_running, wait_gone

# A step of a big model can take longer than this: BABYLLAMA_STOP_DEADLINE_S gives it more.
STOP_DEADLINE_S = float(os.environ.get("BABYLLAMA_STOP_DEADLINE_S", "25"))
SAVE_GRACE_S = 60.0
SECOND_SIGNAL_S = 3.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def start_guard(run: RunDir | None, received: signal.Signals | None = None) -> subprocess.Popen:
    """Start this process's guard; `run` is None on msrun ranks that do not write the run directory.

    `received` is a stop signal that came before the guard existed: it is passed on at once.
    Call from the main thread after the stop handlers are installed (set_wakeup_fd needs them).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    if received is not None:
        os.write(write_end, bytes([received]))
    argv = [sys.executable, "-m", "babyllama.stop_guard", str(os.getpid()), str(read_end),
            "" if run is None else str(run.path.absolute())]
    guard = subprocess.Popen(argv, pass_fds=(read_end,), stdin=subprocess.DEVNULL)
    os.close(read_end)
    return guard


class Guard:
    def __init__(self, trainer_pid: int, fd: int, run: RunDir | None):
        self.trainer = psutil.Process(trainer_pid)
        self.fd = fd
        self.run = run
        self.signal_name: str | None = None
        self.passed_on = 0  # stop signals the trainer passed on; the second one ends it at once
        self.deadline: float | None = None
        self.final_deadline: float | None = None

    def watch(self) -> None:
        while True:
            wait = 1.0 if self.deadline is None else max(0.0, min(1.0, self.deadline - time.monotonic()))
            if select.select([self.fd], [], [], wait)[0]:
                received = os.read(self.fd, 64)
                if not received:
                    return
                for number in received:
                    if number in STOP_SIGNALS:
                        self.passed_on += 1
                        self._signalled(signal.Signals(number))
            if not still_running(self.trainer):
                return
            if self.deadline is not None and time.monotonic() >= self.deadline:
                if self._saving() and time.monotonic() < self.final_deadline:
                    continue
                self._end_trainer()
                return

    def _signalled(self, sig: signal.Signals) -> None:
        now = time.monotonic()
        if self.signal_name is not None:
            if self.passed_on >= 2:
                self.deadline = min(self.deadline, now + SECOND_SIGNAL_S)
                self.final_deadline = self.deadline
            return
        self.signal_name = sig.name
        self.deadline = now + STOP_DEADLINE_S
        self.final_deadline = self.deadline + SAVE_GRACE_S
        if self.run is not None:
            self.run.mark_stopping(pid=self.trainer.pid)

    def _saving(self) -> bool:
        """A checkpoint of the trainer's is being written (its temporary folder exists)."""
        return self.run is not None and any(self.run.checkpoints_dir.glob(f".*.tmp-{self.trainer.pid}"))

    def _end_trainer(self) -> None:
        try:
            # The trainer first, so that it starts nothing more; not this guard, one of its children.
            doomed = [self.trainer, *(p for p in self.trainer.children(recursive=True) if p.pid != os.getpid())]
        except psutil.NoSuchProcess:
            return
        for process in doomed:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        wait_gone(doomed, timeout=10)  # a zombie left for its parent to reap counts as gone
        if self.run is None:
            return
        latest = self.run.latest_checkpoint()
        kept = (f"resume continues from {latest.path.name}" if latest else
                "no checkpoint had been saved")
        waited = round(STOP_DEADLINE_S if self.final_deadline > self.deadline else SECOND_SIGNAL_S)
        note = (f"stopped on {self.signal_name}: the trainer had not ended {waited} s later (compiling or "
                f"in a long step), so it was ended without a checkpoint; {kept}: "
                f"`babyllama train --run {self.run.path} --resume`")
        self._update({"state": "stopped", "error": note})
        print(f"babyllama train: {note}", file=sys.stderr, flush=True)

    def _update(self, fields: dict) -> None:
        """Change the status if the trainer has claimed the run and it has not ended."""
        if self.run is None:
            return

        def change(status: dict) -> dict | None:
            owned = status.get("pid") == self.trainer.pid and status.get("state") in ACTIVE_STATES
            return fields if owned else None

        self.run.update_status(change)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    trainer_pid, fd, run_path = int(argv[0]), int(argv[1]), argv[2]
    try:
        guard = Guard(trainer_pid, fd, RunDir(Path(run_path)) if run_path else None)
    except psutil.NoSuchProcess:
        return 0
    # A stop signal sent to the trainer's process group (Ctrl-C) reaches the guard too: it counts as the first
    # (the trainer may hold its own back a moment, while it starts the kernel compiler).
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda number, frame: guard._signalled(signal.Signals(number)))
    guard.watch()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
