"""`babyllama serve --http`: an OpenAI-compatible HTTP server on aiohttp, in one process.

The event loop answers HTTP; one worker thread generates (`engine.Scheduler`), a request at a
time, with a bounded queue behind it (429 when full). A request's generations report to its
handler through the loop; a client that goes away cancels its handler (aiohttp's handler
cancellation), which cancels its job, so a running generation stops before its next token and a
waiting one gives up its place. The contract: docs/ARCHITECTURE.md, "babyllama serve --http".
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path

from aiohttp import web

from babyllama.errors import UserError
from babyllama.generate import prompt_room
from babyllama.serve.engine import Job, Model, QueueFull, Scheduler, lone_surrogate
from babyllama.serve.openai_api import (
    CHAT,
    COMPLETION,
    ApiError,
    ApiRequest,
    Response,
    StopText,
    choice_params,
    parse_request,
    usage,
)

DEFAULT_HOST = "127.0.0.1"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
WARNING_HEADER = "Babyllama-Warning"


def parse_address(text: str) -> tuple[str, int]:
    """`--http [HOST:]PORT` (an IPv6 host in brackets) to (host, port); the host defaults to 127.0.0.1."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (":" in host and not text.startswith("[")):
        raise UserError(f"--http {text}: expected [HOST:]PORT, e.g. 8000, 127.0.0.1:8000, 0.0.0.0:8000 or "
                        "[::1]:8000, with a port from 0 (any free one) to 65535")
    return host or DEFAULT_HOST, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a UserError saying why not (in use, not this machine's, ...)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UserError(f"--http {host}:{port}: cannot resolve {host!r} ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        why = {errno.EADDRINUSE: "the port is in use (another server?); choose another with --http [HOST:]PORT",
               errno.EADDRNOTAVAIL: "not an address of this machine",
               errno.EACCES: "permission denied (ports below 1024 need root); choose a port above 1023"}
        raise UserError(f"--http {host}:{port}: {why.get(e.errno, e.strerror)}") from None
    sock.setblocking(False)
    return sock


def model_id_for(ckpt: Path) -> str:
    """The id /v1/models lists: the run's name for a run directory, RUN/step_N for one of its
    checkpoints, else the folder's name."""
    path = ckpt.resolve()
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


class Events:
    """What a job tells its handler, from the worker thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def send(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass


class HttpJob(Job):
    """One API request's generations: each prompt (as ids), `n` times, in turn. Events: ("text",
    index, text), ("end", index, finish_reason, completion tokens), then ("finished",), or
    ("cancelled",) or ("failed", message) instead."""

    def __init__(self, model: Model, request: ApiRequest, prompts: list[list[int]], events: Events, label: str,
                 note):
        super().__init__()
        self.model = model
        self.request = request
        self.prompts = prompts
        self.events = events
        self.label = label  # the response's id, in the log
        self.note = note

    def run(self) -> None:
        try:
            for number, ids in enumerate(self.prompts):
                for choice in range(self.request.n):
                    if self.cancelled.is_set() or not self._choice(number * self.request.n + choice, ids, choice):
                        self.events.send("cancelled")
                        return
            self.events.send("finished")
        except Exception as e:  # a failed generation must not take the server down
            traceback.print_exc()
            self.events.send("failed", f"generation failed: {type(e).__name__}: {e}")

    def _choice(self, index: int, ids: list[int], choice: int) -> bool:
        """One choice generated and told; False when it was cancelled."""
        stop = StopText(self.request.stop)

        def use(piece) -> None:
            text = stop.push(piece.text)
            if text:
                self.events.send("text", index, text)

        result = self.model.generate(ids, choice_params(self.request, choice), use,
                                     should_stop=lambda: stop.hit or self.cancelled.is_set(), chat=self.request.chat)
        if result.stopped == "cancelled" and not stop.hit:
            self.note(f"{self.label}: stopped after {len(result.token_ids)} of {self.request.params.max_new_tokens} "
                      "tokens (the client went away, or the server is stopping)")
            return False
        rest = stop.flush()
        if rest:
            self.events.send("text", index, rest)
        finish = "stop" if stop.hit or result.stopped == "eos" else "length"
        self.events.send("end", index, finish, len(result.token_ids))
        return True


class HttpServer:
    def __init__(self, model: Model, model_id: str, api_key: str | None, queue: int, log=sys.stderr):
        self.model = model
        self.model_id = model_id
        self.api_key = api_key
        self.scheduler = Scheduler(capacity=queue)
        self.log = log
        self.created = int(model.loaded.checkpoint.stat().st_mtime)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._authorize])
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model:.+}", self.one_model)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/health", self.health)
        return app

    def note(self, text: str) -> None:
        print(f"babyllama serve: {text}", file=self.log, flush=True)

    # -- middlewares: the API key, then every error in the API's shape

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except ApiError as e:
            response = e
        except web.HTTPException as e:  # aiohttp's own: no such route, wrong method, a body too large
            if e.status < 400:
                raise
            response = ApiError(e.status, f"{request.method} {request.path}: {e.reason}",
                                code="unknown_url" if e.status == 404 else None)
        except ConnectionError:
            raise
        except Exception as e:  # a bug: said in the API's shape, the traceback in the log
            traceback.print_exc()
            response = ApiError(500, f"the server failed: {type(e).__name__}: {e}")
        self.note(f"{request.method} {request.path} {response.status}: {response.message}")
        return web.json_response(response.body(), status=response.status,
                                 headers={"WWW-Authenticate": "Bearer"} if response.status == 401 else None)

    @web.middleware
    async def _authorize(self, request: web.Request, handler):
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not given:
                raise ApiError(401, "no API key given; send the header Authorization: Bearer KEY",
                               code="invalid_api_key")
            scheme, _, key = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    key.strip().encode("utf-8", "surrogateescape"), self.api_key.encode()):
                raise ApiError(401, "the API key is not this server's (--api-key)", code="invalid_api_key")
        return await handler(request)

    # -- the models

    def model_object(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "babyllama",
                "context_length": self.model.max_seq_len, "chat_template": self.model.description["chat_template"],
                "backend": self.model.description["backend"], "precision": self.model.description["precision"]}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self.model_object()]})

    async def one_model(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.model_id:
            raise ApiError(404, f"the model {request.match_info['model']!r} does not exist; this server has "
                           f"{self.model_id!r}", param="model", code="model_not_found")
        return web.json_response(self.model_object())

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "running": int(self.scheduler.running is not None),
                                  "queued": self.scheduler.waiting_count(), "queue": self.scheduler.capacity})

    # -- generating

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, COMPLETION)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        if self.model.template is None:
            raise ApiError(404, f"{self.model_id} is not a chat model, so /v1/chat/completions is not available "
                           f"(use /v1/completions): {self.model.no_chat}", code="model_not_chat")
        return await self._generate(request, CHAT)

    async def _generate(self, http: web.Request, kind: str) -> web.StreamResponse:
        try:
            # Decoded here rather than by json.loads, which guesses UTF-16 or UTF-32 from the first bytes.
            body = json.loads((await http.read()).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ApiError(400, f"the request body is not UTF-8 text ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ApiError(400, f"the request body is not JSON ({e}); send a JSON object") from None
        problem = lone_surrogate(body)
        if problem is not None:
            raise ApiError(400, problem)
        request = parse_request(kind, body, self.model_id, self.model.defaults, self.model.tokenizer.vocab_size)
        prompts, notice = await asyncio.to_thread(self._prompt_ids, request)
        events = Events(asyncio.get_running_loop())
        response = Response(request)
        job = HttpJob(self.model, request, prompts, events, response.id, self.note)
        try:
            self.scheduler.submit(job)
        except QueueFull:
            raise ApiError(429, f"the server is busy: {self.scheduler.capacity} requests are waiting already "
                           "(--queue); try again shortly", code="queue_full", kind="rate_limit_error") from None
        except RuntimeError:
            raise ApiError(503, "the server is shutting down") from None
        answer = Answer(http, request, response, events, notice, sum(map(len, prompts)))
        try:
            return await (answer.stream() if request.stream else answer.whole())
        except asyncio.CancelledError:
            answer.outcome = "client gone"
            raise
        finally:
            job.cancelled.set()  # a client gone mid-stream: the generation stops before its next token
            self.note(f"{http.method} {http.path} {response.id} {answer.summary()}")

    def _prompt_ids(self, request: ApiRequest) -> tuple[list[list[int]], str | None]:
        """Each prompt's ids; a 400 for one that leaves the completion no room in the context (see
        `generate.prompt_room`); a chat's oldest turns dropped to fit, and the notice of it."""
        max_seq_len, max_new = self.model.max_seq_len, request.params.max_new_tokens
        if request.chat:
            messages = request.prompts[0]
            try:
                self.model.check_messages(messages)
                ids, notice = self.model.conversation_prompt(messages, max_new)
            except UserError as e:
                code = "context_length_exceeded" if str(e).startswith("the message does not fit") else None
                raise ApiError(400, str(e), param="messages", code=code) from None
            return [ids], notice
        tokenizer = self.model.tokenizer
        prompts = [p if isinstance(p, list) else tokenizer.encode(p) or [tokenizer.eos_id] for p in request.prompts]
        room = prompt_room(max_seq_len, max_new)
        for ids in prompts:
            if len(ids) > room:
                raise ApiError(400, f"the prompt has {len(ids)} tokens, and the model's {max_seq_len}-token context "
                               f"keeps {max_seq_len - room} for the completion (max_tokens, at most half of it), "
                               f"leaving {room}; send a shorter prompt", param="prompt",
                               code="context_length_exceeded")
        return prompts, None


class Answer:
    """One request's response, built from its job's events: whole, or streamed as server-sent events."""

    def __init__(self, http: web.Request, request: ApiRequest, response: Response, events: Events,
                 notice: str | None, prompt_tokens: int):
        self.http = http
        self.request = request
        self.events = events
        self.headers = {WARNING_HEADER: notice} if notice else {}
        self.response = response
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finishes: dict[int, str] = {}
        self.outcome = "waiting"

    def usage(self) -> dict:
        return usage(self.prompt_tokens, self.completion_tokens)

    def summary(self) -> str:
        reasons = ",".join(sorted(set(self.finishes.values()))) or "-"
        return (f"{'stream ' if self.request.stream else ''}{self.outcome}: {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens, {len(self.finishes)} choices ({reasons})")

    def _ended(self, event: tuple) -> None:
        _, index, finish, tokens = event
        self.finishes[index] = finish
        self.completion_tokens += tokens

    def _failure(self, event: tuple) -> ApiError:
        self.outcome = event[0]
        if event[0] == "cancelled":
            return ApiError(503, "the server is shutting down; the generation was stopped")
        return ApiError(500, event[1])

    async def whole(self) -> web.Response:
        texts: dict[int, list[str]] = {}
        while True:
            event = await self.events.queue.get()
            if event[0] == "text":
                texts.setdefault(event[1], []).append(event[2])
            elif event[0] == "end":
                texts.setdefault(event[1], [])
                self._ended(event)
            elif event[0] == "finished":
                self.outcome = "200"
                joined = {index: "".join(parts) for index, parts in texts.items()}
                return web.json_response(self.response.whole(joined, self.finishes, self.usage()),
                                         headers=self.headers, dumps=_dumps)
            else:
                raise self._failure(event)

    async def stream(self) -> web.StreamResponse:
        event = await self.events.queue.get()
        if event[0] in ("cancelled", "failed"):
            raise self._failure(event)  # nothing sent yet: an error response
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **self.headers})
        await response.prepare(self.http)
        self.outcome = "streaming"
        started: set[int] = set()
        while True:
            kind = event[0]
            if kind in ("text", "end") and event[1] not in started and self.request.chat:
                started.add(event[1])
                await self._send(response, self.response.chunk(event[1], first=True))
            if kind == "text":
                await self._send(response, self.response.chunk(event[1], text=event[2]))
            elif kind == "end":
                self._ended(event)
                await self._send(response, self.response.chunk(event[1], finish=event[2]))
            elif kind == "finished":
                if self.request.include_usage:
                    await self._send(response, self.response.usage_chunk(self.usage()))
                await response.write(b"data: [DONE]\n\n")
                self.outcome = "200"
                break
            else:  # the stream is under way: the error goes in it, and no [DONE] follows
                await self._send(response, self._failure(event).body())
                break
            event = await self.events.queue.get()
        await response.write_eof()
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, data: dict) -> None:
        await response.write(f"data: {_dumps(data)}\n\n".encode("utf-8"))


def _dumps(data) -> str:
    return json.dumps(data, ensure_ascii=False)


async def serve(server: HttpServer, sock: socket.socket, announce: str) -> int:
    """Serve on `sock` until SIGTERM or SIGINT; then stop what runs and waits, answer those, exit 0."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    signals: list[str] = []
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, lambda number=number: (signals.append(signal.Signals(number).name),
                                                               stopped.set()))
    worker = threading.Thread(target=server.scheduler.run, name="generate")
    worker.start()
    runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None, shutdown_timeout=10)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(announce, flush=True)
        await stopped.wait()
        server.note(f"stopping ({signals[0]}): ending the generations under way and waiting")
        server.scheduler.close(cancel=True)
        await runner.cleanup()
    finally:
        server.scheduler.close(cancel=True)
        await asyncio.to_thread(worker.join)
    server.note("stopped")
    return 0
