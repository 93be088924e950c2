"""The OpenAI API's side of `serve --http`, without the HTTP: a request's JSON body checked into an
`ApiRequest` (or an `ApiError` in the API's own error shape, naming the field), the response
and stream chunk objects, and `StopText`, which holds back text that may begin a stop string.
What is accepted and how it maps to sampling: docs/ARCHITECTURE.md, "babyllama serve --http"."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from dataclasses import dataclass

from babyllama.sampling import SamplingParams

COMPLETION, CHAT = "completion", "chat"
MAX_N = 16
MAX_STOPS = 4


class ApiError(Exception):
    """An HTTP status and the API's error object: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(param: str | None, message: str, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass
class ApiRequest:
    kind: str  # COMPLETION or CHAT
    model: str
    prompts: list  # a completion's prompts (text, or token ids); a chat's one conversation ([messages])
    params: SamplingParams  # choice k of each prompt samples with seed params.seed + k
    n: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool

    @property
    def chat(self) -> bool:
        return self.kind == CHAT


# Fields each endpoint accepts, beyond the sampling ones. Those the server does not implement are
# accepted only at the value that changes nothing (NEUTRAL); anything else is a 400 naming them.
COMMON = ("model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options", "user",
          "frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
          "top_k", "repetition_penalty")  # the last two: our extensions, as `babyllama generate` has them
FIELDS = {
    COMPLETION: (*COMMON, "prompt", "echo", "best_of", "suffix"),
    CHAT: (*COMMON, "messages", "max_completion_tokens", "top_logprobs", "response_format", "tools",
           "tool_choice", "parallel_tool_calls", "store"),
}
NEUTRAL = {
    "frequency_penalty": (0,), "presence_penalty": (0,), "logit_bias": ({},), "logprobs": (False, 0),
    "echo": (False,), "suffix": ("",), "top_logprobs": (0,), "response_format": ({"type": "text"},),
    "tools": ([],), "tool_choice": ("none", "auto"), "store": (False,),
}


def _integer(body: dict, name: str, default: int, low: int, high: float = math.inf) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        span = f"from {low} to {high}" if high != math.inf else f">= {low}"
        raise bad(name, f"{name} must be an integer {span}, got {value!r}")
    return value


def _number(body: dict, name: str, default: float, low: float, high: float, above_low: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
            or (above_low and value == low):
        span = f"above {low} and at most {high}" if above_low else f"from {low} to {high}"
        raise bad(name, f"{name} must be a number {span}, got {value!r}")
    return float(value)


def _stop_strings(value) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if value is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
        raise bad("stop", f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them, got {value!r}")
    return tuple(stops)


def _completion_prompts(value, vocab_size: int) -> list:
    """A string, a list of strings, a list of token ids or a list of lists of them: the prompts."""
    def ids(item) -> bool:
        return isinstance(item, list) and len(item) > 0 and all(
            isinstance(i, int) and not isinstance(i, bool) for i in item)

    if isinstance(value, str):
        return [value]
    if ids(value):
        prompts = [value]
    elif isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return list(value)
    elif isinstance(value, list) and value and all(ids(p) for p in value):
        prompts = value
    else:
        raise bad("prompt", "prompt must be a string, a list of strings, a list of token ids or a list of lists "
                  f"of token ids, got {str(value)[:80]!r}")
    for prompt in prompts:
        outside = [i for i in prompt if not 0 <= i < vocab_size]
        if outside:
            raise bad("prompt", f"token id {outside[0]} is outside the vocabulary (0 to {vocab_size - 1})")
    return prompts


def _messages(value) -> list[dict]:
    """The conversation as {"role", "content"} turns: text parts joined, "developer" read as "system"."""
    if not isinstance(value, list) or not value:
        raise bad("messages", "messages must be a non-empty list of {\"role\", \"content\"} objects")
    turns = []
    for number, message in enumerate(value, 1):
        if not isinstance(message, dict):
            raise bad("messages", f"messages: turn {number} is not an object")
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad("messages", f"messages: turn {number}: only text content parts are supported")
            content = "".join(p["text"] for p in content)
        role = message.get("role")
        turns.append({"role": "system" if role == "developer" else role, "content": content})
    return turns


def _same(value, neutral) -> bool:
    """JSON equality: false is not 0, but 0.0 is 0."""
    return isinstance(value, bool) == isinstance(neutral, bool) and value == neutral


def parse_request(kind: str, body, model_id: str, defaults: SamplingParams, vocab_size: int) -> ApiRequest:
    """`body` checked for `kind`'s endpoint; an ApiError (400, or 404 for another model) names the field."""
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS[kind]))
    if unknown:
        raise bad(unknown[0], f"unrecognized request argument supplied: {', '.join(unknown)}")
    for name, values in NEUTRAL.items():
        if body.get(name) is not None and not any(_same(body[name], v) for v in values):
            raise bad(name, f"{name}={body[name]!r} is not supported by this server")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad("model", "model must be given: the id /v1/models lists")
    if model != model_id:
        raise ApiError(404, f"the model {model!r} does not exist; this server has {model_id!r}", param="model",
                       code="model_not_found")
    if kind == CHAT:
        if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
            raise bad("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
        tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        if "messages" not in body:
            raise bad("messages", "messages must be given")
        prompts = [_messages(body["messages"])]
    else:
        tokens_field = "max_tokens"
        if "prompt" not in body:
            raise bad("prompt", "prompt must be given")
        prompts = _completion_prompts(body["prompt"], vocab_size)
    n = _integer(body, "n", 1, 1, MAX_N)
    if body.get("best_of") is not None and body["best_of"] != n:
        raise bad("best_of", "best_of is not supported by this server, except equal to n")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("stream", f"stream must be true or false, got {stream!r}")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict) or set(options) - {"include_usage"}
                                or not isinstance(options.get("include_usage", False), bool)):
        raise bad("stream_options", "stream_options goes with stream true, and holds only include_usage (true or false)")
    params = SamplingParams(
        max_new_tokens=_integer(body, tokens_field, defaults.max_new_tokens, 1),
        temperature=_number(body, "temperature", defaults.temperature, 0.0, 2.0),
        top_k=_integer(body, "top_k", defaults.top_k, 0),
        top_p=_number(body, "top_p", defaults.top_p, 0.0, 1.0, above_low=True),
        repetition_penalty=_number(body, "repetition_penalty", defaults.repetition_penalty, 0.0, math.inf,
                                   above_low=True),
        # Unseeded requests draw their own, as the API's clients expect a new answer each time.
        seed=_integer(body, "seed", uuid.uuid4().int >> 66, 0),
    )
    return ApiRequest(kind, model, prompts, params, n, _stop_strings(body.get("stop")), bool(stream),
                      bool((options or {}).get("include_usage")))


def choice_params(request: ApiRequest, choice: int) -> SamplingParams:
    """The sampling of choice `choice` of each prompt: seed + choice, as `generate --num-samples`."""
    return dataclasses.replace(request.params, seed=request.params.seed + choice)


# ---------------------------------------------------------------------------------------
# Responses


class Response:
    """The id, time and shapes of one request's response objects."""

    def __init__(self, request: ApiRequest):
        self.request = request
        self.id = ("chatcmpl-" if request.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _object(self, suffix: str = "") -> dict:
        name = ("chat.completion" if self.request.chat else "text_completion") + suffix
        return {"id": self.id, "object": name, "created": self.created, "model": self.request.model}

    def whole(self, texts: dict[int, str], finishes: dict[int, str], usage: dict) -> dict:
        """The response of a request without streaming."""
        if self.request.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                        "logprobs": None, "finish_reason": finishes[i]} for i in sorted(texts)]
        else:
            choices = [{"index": i, "text": texts[i], "logprobs": None, "finish_reason": finishes[i]}
                       for i in sorted(texts)]
        return {**self._object(), "choices": choices, "usage": usage}

    def chunk(self, index: int, text: str | None = None, finish: str | None = None, first: bool = False) -> dict:
        """A stream chunk of choice `index`: its `text`, or its end with `finish` (chat's first says the role)."""
        if self.request.chat:
            delta = {"role": "assistant", "content": ""} if first else {"content": text} if text is not None else {}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        extra = {"usage": None} if self.request.include_usage else {}
        return {**self._object(".chunk" if self.request.chat else ""), "choices": [choice], **extra}

    def usage_chunk(self, usage: dict) -> dict:
        return {**self._object(".chunk" if self.request.chat else ""), "choices": [], "usage": usage}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class StopText:
    """Streamed text cut before the first of `stops`: push() gives what may be shown so far, holding
    back an end that may begin a stop string; `hit` once one appeared (the generation should stop)."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.held = ""
        self.hit = False

    def push(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            return text
        self.held += text
        found = [i for i in (self.held.find(stop) for stop in self.stops) if i >= 0]
        if found:
            self.hit = True
            shown, self.held = self.held[:min(found)], ""
            return shown
        keep = next((k for k in range(min(len(self.held), max(map(len, self.stops)) - 1), 0, -1)
                     if any(stop.startswith(self.held[-k:]) for stop in self.stops)), 0)
        shown, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return shown

    def flush(self) -> str:
        """What was held back, at the end of a generation that met no stop string."""
        rest, self.held = self.held, ""
        return rest
