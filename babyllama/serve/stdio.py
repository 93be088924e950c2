"""`babyllama serve --stdio`: load a checkpoint once, answer generation requests as JSON lines.

The app's playground keeps one such process per loaded checkpoint. The protocol (requests,
events, stop reasons, token counts): docs/ARCHITECTURE.md, "babyllama serve --stdio".
"""

from __future__ import annotations

import json
import threading

from babyllama.errors import UserError
from babyllama.sampling import SamplingParams
from babyllama.serve.engine import Job, Model, Scheduler, lone_surrogate

PROTOCOL_VERSION = 2
SAMPLING_FIELDS = tuple(SamplingParams.__dataclass_fields__)


class Request(Job):
    """A generation asked for: a text `prompt`, or `messages` that the chat template turns into one."""

    def __init__(self, server: Server, request_id, prompt: str | None, messages: list[dict] | None,
                 params: SamplingParams):
        super().__init__()
        self.server = server
        self.id = request_id
        self.prompt = prompt
        self.messages = messages
        self.params = params

    def run(self) -> None:
        self.server.run_request(self)


class Server:
    """Reads requests on a thread; generates on the calling thread, one request at a time."""

    def __init__(self, model: Model, out):
        self.model = model
        self.out = out
        self.description = {"protocol": PROTOCOL_VERSION, **model.description}
        self.lock = threading.Lock()  # guards `waiting` and writes to `out`
        self.scheduler = Scheduler()
        self.waiting: dict = {}  # id -> Request, queued or running
        self.shutting_down = threading.Event()

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n"
        with self.lock:
            self.out.write(line)
            self.out.flush()

    def serve(self, requests) -> int:
        self.emit("ready", **self.description)
        reader = threading.Thread(target=self._read, args=(requests,), name="requests", daemon=True)
        reader.start()
        self.scheduler.run()
        return 0

    # -- the reading thread

    def _read(self, requests) -> None:
        try:
            for raw in requests:
                if raw.strip():
                    self._handle(raw)
                if self.shutting_down.is_set():
                    return
        finally:
            self.scheduler.close(cancel=False)  # after everything queued: those still run, then the server stops

    def _handle(self, raw: bytes) -> None:
        # Decoded here rather than by json.loads, which guesses UTF-16 or UTF-32 from the first bytes.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.emit("error", message=f"the request is not UTF-8 text ({e.reason} 0x{raw[e.start]:02x} at byte "
                      f"{e.start}); send one JSON object a line, encoded as UTF-8")
            return
        try:
            message = json.loads(text)
        except json.JSONDecodeError as e:
            self.emit("error", message=f"not a JSON line ({e}); send one JSON object a line")
            return
        problem = lone_surrogate(message)
        if problem is not None:
            # Neither the tokenizer nor the UTF-8 we write can carry it, so an id holding one is not echoed.
            request_id = self._id_of(message) if isinstance(message, dict) else {}
            if lone_surrogate(request_id) is not None:
                request_id = {}
            self.emit("error", **request_id, message=problem)
            return
        if not isinstance(message, dict):
            self.emit("error", message="a request must be a JSON object with an \"op\" field")
            return
        op = message.get("op")
        handlers = {"generate": self._accept, "cancel": self._cancel, "info": self._info,
                    "shutdown": lambda _: self._shut_down()}
        if op not in handlers:
            self.emit("error", **self._id_of(message),
                      message=f"unknown op {op!r}; expected one of {', '.join(handlers)}")
            return
        try:
            handlers[op](message)
        except UserError as e:
            self.emit("error", **self._id_of(message), message=str(e))

    @staticmethod
    def _id_of(message: dict) -> dict:
        return {"id": message["id"]} if "id" in message else {}

    @staticmethod
    def _check_id(message: dict):
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int, float)):
            raise UserError(f"{message.get('op')} needs an \"id\" (a string or a number)")
        return request_id

    def _accept(self, message: dict) -> None:
        request_id = self._check_id(message)
        prompt, messages = message.get("prompt"), message.get("messages")
        if "prompt" in message and "messages" in message:
            raise UserError("generate takes a \"prompt\" or \"messages\", not both")
        if "prompt" not in message and "messages" not in message:
            raise UserError("generate needs a \"prompt\" string or a \"messages\" list")
        if "prompt" in message and not isinstance(prompt, str):
            raise UserError("generate needs a \"prompt\" string")
        if "messages" in message:
            self.model.check_messages(messages)
        unknown = sorted(set(message) - {"op", "id", "prompt", "messages", *SAMPLING_FIELDS})
        if unknown:
            raise UserError(f"unknown field(s) {', '.join(unknown)}; sampling fields are {', '.join(SAMPLING_FIELDS)}")
        params = SamplingParams(**{**vars(self.model.defaults),
                                   **{k: message[k] for k in SAMPLING_FIELDS if k in message}})
        params.validate()
        request = Request(self, request_id, prompt, messages, params)
        with self.lock:
            if request_id in self.waiting:
                raise UserError(f"id {request_id!r} is already queued or running; use a new id")
            self.waiting[request_id] = request
        try:
            self.scheduler.submit(request)
        except RuntimeError:  # shut down while this request was read
            with self.lock:
                self.waiting.pop(request_id)
            raise UserError("the server is shutting down") from None

    def _cancel(self, message: dict) -> None:
        request_id = self._check_id(message)
        with self.lock:
            request = self.waiting.get(request_id)
        if request is None:
            raise UserError(f"no queued or running generation has id {request_id!r}")
        request.cancelled.set()

    def _info(self, message: dict) -> None:
        running = self.scheduler.running
        with self.lock:
            queued = len(self.waiting) - (running is not None)
        self.emit("info", **self.description, running=running.id if running is not None else None, queued=queued)

    def _shut_down(self) -> None:
        self.shutting_down.set()
        self.scheduler.close(cancel=True)

    # -- the generating thread

    def run_request(self, request: Request) -> None:
        def warn(message: str) -> None:
            self.emit("warning", id=request.id, message=message)

        try:
            if request.messages is None:
                prompt = request.prompt
            else:
                prompt, notice = self.model.conversation_prompt(request.messages, request.params.max_new_tokens)
                if notice:
                    warn(notice)
            result = self.model.generate(
                prompt, request.params,
                lambda piece: self.emit("token", id=request.id, text=piece.text, tokens=piece.tokens),
                should_stop=request.cancelled.is_set, warn=warn, chat=request.messages is not None)
            self.emit("done", id=request.id, tokens=len(result.token_ids), prompt_tokens=result.prompt_tokens,
                      tokens_per_s=round(result.tokens_per_s, 2),
                      ttft_ms=round(result.ttft_s * 1000, 2) if result.ttft_s is not None else None,
                      stopped=result.stopped)
        except UserError as e:  # a conversation that does not fit
            self.emit("error", id=request.id, message=str(e))
        except Exception as e:  # a failed generation must not take the server down
            self.emit("error", id=request.id, message=f"generation failed: {type(e).__name__}: {e}")
        finally:
            with self.lock:
                self.waiting.pop(request.id, None)
