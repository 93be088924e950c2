"""ServeClient: one `babyllama serve --stdio` child process, driven from asyncio.

It adds two events of its own (`error`, `exit`) and owns its server: see docs/ARCHITECTURE.md,
"babyllama serve --stdio".
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import os
import signal
import sys
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

SERVE_PROGRAM = ("-m", "babyllama", "serve", "--stdio")
CLOSE_WAIT_S = 5.0
STDERR_LINES = 20
# A token event is one short line; a longer one is a broken server, not a reason to stall.
LINE_LIMIT = 1 << 20


class ServeError(Exception):
    """A request could not reach the server: it has not started, or it has exited."""


_running: weakref.WeakSet[ServeClient] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for client in list(_running):
        client.kill()


class ServeClient:
    def __init__(self, checkpoint: Path, *, program: Sequence[str] = SERVE_PROGRAM,
                 extra_args: Sequence[str] = (), cwd: Path | None = None) -> None:
        """`program` is what follows the interpreter (a stand-in server in tests); `extra_args`
        follow `--ckpt CHECKPOINT` (say `--tokenizer PATH`)."""
        self.checkpoint = checkpoint
        self.argv = [sys.executable, *program, "--ckpt", str(checkpoint), *extra_args]
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.ready: dict | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._ids = itertools.count(1)
        self._stderr_task: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start the server; its `ready` (or `error`) event comes through `events`.
        Raises OSError when the interpreter cannot be started."""
        if self.process is not None:
            raise ServeError("this client has already started its server")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.cwd, limit=LINE_LIMIT,
        )
        _running.add(self)
        self._stderr_task = asyncio.create_task(self._keep_stderr())

    async def _keep_stderr(self) -> None:
        """Drained as it comes, so a chatty server never blocks on a full pipe; the tail explains a crash."""
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.stderr_tail.append(line)

    async def events(self) -> AsyncIterator[dict]:
        """The server's events in order, then one `exit` event; only one reader at a time."""
        if self.process is None:
            raise ServeError("start the server first")
        assert self.process.stdout is not None
        while True:
            try:
                raw = await self.process.stdout.readline()
            except ValueError:
                yield {"event": "error", "message": f"serve wrote a line longer than {LINE_LIMIT:,} bytes"}
                continue
            if not raw:
                break
            event = parse_event(raw)
            if event.get("event") == "ready":
                self.ready = event
            yield event
        returncode = await self.process.wait()
        _running.discard(self)
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
        yield {"event": "exit", "returncode": returncode, "stderr": "\n".join(self.stderr_tail)}

    def _send(self, request: dict) -> None:
        """Written without waiting: requests are short lines, and a request's id must be known
        before any of its events can be read."""
        process = self.process
        if process is None or process.returncode is not None or process.stdin is None or process.stdin.is_closing():
            raise ServeError(f"the server for {self.checkpoint} is not running")
        process.stdin.write((json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8"))

    def generate(self, prompt: str, params: dict) -> int:
        """Queue a generation; its events carry the id returned."""
        request_id = next(self._ids)
        self._send({"op": "generate", "id": request_id, "prompt": prompt, **params})
        return request_id

    def chat(self, messages: list[dict], params: dict) -> int:
        """Queue the next assistant turn of a conversation (protocol 2's `messages` request); its events carry the id returned."""
        request_id = next(self._ids)
        self._send({"op": "generate", "id": request_id, "messages": messages, **params})
        return request_id

    def cancel(self, request_id: int) -> None:
        self._send({"op": "cancel", "id": request_id})

    async def close(self, timeout: float = CLOSE_WAIT_S) -> int | None:
        """Ask the server to shut down, kill it if it has not exited within `timeout`; its exit status."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ServeError):
                self._send({"op": "shutdown"})
            if process.stdin is not None and not process.stdin.is_closing():
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except asyncio.TimeoutError:
                self.kill()
                await process.wait()
        _running.discard(self)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL, synchronously: for the interpreter's exit, when nothing can be awaited any more."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def parse_event(raw: bytes) -> dict:
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        shown = text if len(text) <= 120 else text[:117] + "..."
        return {"event": "error", "message": f"serve wrote a line that is not a protocol event: {shown}"}
    return event
