"""The trainer's watch on its own memory: it ends with the reason before the kernel's OOM killer
ends it with none (a SIGKILL leaves status.json saying `running`).

Memory grows inside MindSpore's compile and steps, in C++ that Python cannot interrupt, but
those release the GIL, so a thread samples the resident memory of the run's processes on this
host every SAMPLE_S. Past the stop line (`memory_stop_at` of the limit) the loop stops after the
current step, with a checkpoint; at the limit the thread records the end itself and ends the
processes at once. Either way the run ends `failed`, "out of memory: N GiB of M GiB ...", with an
alert row. The limits and what was measured: docs/ARCHITECTURE.md, "Training".
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil

from babyllama.config import TrainConfig
from babyllama.devices import MIB, device_memory_use_mb, host_memory_mb, training_device
from babyllama.msrun_env import expected_world_size
from babyllama.runs import RunDir

SAMPLE_S = 0.25
# cgroup v1 says "no limit" with a huge number (9223372036854771712), v2 with "max".
NO_CGROUP_LIMIT = 2**60


def _size(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _read_limit(path: Path) -> int | None:
    try:
        limit = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return limit if 0 < limit < NO_CGROUP_LIMIT else None


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """The lowest memory limit in bytes on this process's cgroup and the cgroups above it (v2
    `memory.max`, v1 `memory.limit_in_bytes`); None when there is none. A container that sees
    only its own cgroup mounted at `root` finds its limit there, as the walk up ends at `root`."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if not controllers:
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
            name = "memory.max"
        elif "memory" in controllers.split(","):
            mount, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        parts = Path(path.lstrip("/")).parts
        limits += [limit for depth in range(len(parts), -1, -1)
                   if (limit := _read_limit(mount.joinpath(*parts[:depth], name))) is not None]
    return min(limits, default=None)


@dataclass(frozen=True)
class MemoryLimits:
    limit_mb: float  # the watch ends the run at once here
    stop_mb: float  # the loop stops after the step, with a checkpoint, here
    machine: str  # where the limit comes from, for the message: "90% of the host's 23.5 GiB"


def memory_limits(train: TrainConfig) -> MemoryLimits:
    """The limits of a run on this machine: `memory_limit_mb`, else `memory_limit` of the host's
    memory, or of the container's (its cgroup's limit) when that is lower."""
    if train.memory_limit_mb > 0:
        limit, machine = float(train.memory_limit_mb), "set by memory_limit_mb"
    else:
        total = host_memory_mb()[1]
        cgroup = cgroup_memory_limit()
        whose = "the host's"
        if cgroup is not None and cgroup / MIB < total:
            total, whose = cgroup / MIB, "the container's"
        limit, machine = total * train.memory_limit, f"{train.memory_limit:.0%} of {whose} {_size(total)}"
    return MemoryLimits(limit, limit * train.memory_stop_at, machine)


@dataclass(frozen=True)
class Reading:
    used_mb: float
    limit_mb: float
    machine: str
    where: str  # "host", or the device ("gpu", "ascend")


def watched_root() -> psutil.Process:
    """The process whose tree is the run on this host: this one, or under msrun its launcher, whose
    workers on this host all count against the machine's memory."""
    me = psutil.Process()
    return (me.parent() or me) if expected_world_size() > 1 else me


def tree_rss_mb(root: psutil.Process) -> tuple[float, list[psutil.Process]]:
    """Resident memory of `root` and its descendants, and those processes."""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, []
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_info().rss
    return total / MIB, processes


class MemoryWatch:
    """Rank 0's watch on the run's memory (every process of the run on this host).

    `step()` gives the steps done so far, for the messages. `over` is the first reading past the
    stop line; `stop_after_step` (between steps, on the main thread) also reads a GPU's or NPU's
    counters, which MindSpore gives only there.
    """

    def __init__(self, train: TrainConfig, run: RunDir, step: Callable[[], int]):
        self.train = train
        self.run = run
        self.step = step
        self.limits = memory_limits(train)
        self.root = watched_root()
        self.over: Reading | None = None
        self.peak_mb = 0.0

    @contextlib.contextmanager
    def watching(self, interval: float = SAMPLE_S) -> Iterator[MemoryWatch]:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(interval):
                with contextlib.suppress(OSError, psutil.Error):  # a reading that cannot be taken is skipped
                    self.check_host()

        thread = threading.Thread(target=sample, name="memory-watch", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def check_host(self) -> None:
        used, processes = tree_rss_mb(self.root)
        self.peak_mb = max(self.peak_mb, used)
        limits = self.limits
        if used >= limits.limit_mb:
            self._end_now(Reading(used, limits.limit_mb, limits.machine, "host"), processes)
        if used >= limits.stop_mb and self.over is None:
            self.over = Reading(used, limits.limit_mb, limits.machine, "host")

    def stop_after_step(self) -> bool:
        """Whether the loop stops after this step: the host's memory passed the stop line (seen by
        the thread), or the device's peak did. Untested: this project's host has no GPU or NPU."""
        if self.over is None:
            device = device_memory_use_mb()
            if device is not None:
                peak, total = device
                limit = total * self.train.memory_limit
                if peak >= limit * self.train.memory_stop_at:
                    where = training_device()
                    self.over = Reading(peak, limit, f"{self.train.memory_limit:.0%} of the {where}'s {_size(total)}",
                                        where)
        return self.over is not None

    def advice(self) -> str:
        """How to go on in less memory."""
        train = self.train
        smaller = "a new run with a shorter max_seq_len or a smaller preset"
        if train.batch_size == 1:
            return f"to go on in less memory: {smaller}"
        command = (f"babyllama train --run {self.run.path} --resume --batch_size {train.batch_size // 2} "
                   f"--grad_accum {train.grad_accum * 2}")
        return f"to go on in less memory: `{command}` (the same tokens per step), or {smaller}"

    def _what(self, reading: Reading) -> str:
        of = "" if reading.where == "host" else f" of {reading.where} memory"
        return (f"out of memory: {_size(reading.used_mb)} of {_size(reading.limit_mb)}{of} ({reading.machine}) "
                f"at step {self.step():,}")

    def record_stop(self) -> int:
        """The end after the stop line was passed and the checkpoint saved: the alert, `failed`, one
        line on stderr; the exit status."""
        reading = self.over
        if reading.where == "host":  # the most it took, which the step after the crossing may have raised
            reading = Reading(self.peak_mb, reading.limit_mb, reading.machine, reading.where)
        message = (f"{self._what(reading)}, past the {self.train.memory_stop_at:.0%} where training stops; "
                   f"stopped with a checkpoint; {self.advice()}")
        self._record(reading, message)
        return 1

    def _end_now(self, reading: Reading, processes: list[psutil.Process]) -> None:
        """At the limit, from the watch's thread: record the end, end the run's other processes on
        this host, then this one, before the kernel's OOM killer picks one."""
        try:
            message = (f"{self._what(reading)}; ended at once, before the machine ran out of memory; "
                       f"{self._kept()}; {self.advice()}")
            self._record(reading, message)
        finally:
            for process in processes:
                if process.pid not in (os.getpid(), self.root.pid):
                    with contextlib.suppress(psutil.Error):
                        process.kill()
            os._exit(1)

    def _kept(self) -> str:
        try:
            latest = self.run.latest_checkpoint()
        except OSError as e:
            return f"its checkpoints could not be read ({e.strerror})"
        return f"resume continues from {latest.path.name}" if latest else "no checkpoint had been saved"

    def _record(self, reading: Reading, message: str) -> None:
        step = self.step()
        try:
            self.run.append_alert(step=step, alert="memory", action="stopped", message=message,
                                  used_mb=round(reading.used_mb, 1), limit_mb=round(reading.limit_mb, 1),
                                  where=reading.where)
            self.run.write_status(state="failed", error=message, step=step)
        except OSError as e:
            print(f"babyllama train: could not record the end in {self.run.status_path}: {e.strerror}",
                  file=sys.stderr, flush=True)
        print(f"babyllama train: {message}", file=sys.stderr, flush=True)
