"""`babyllama serve --http` end to end: real server processes on 127.0.0.1 (port 0: a free one),
driven by the official `openai` client (and plain HTTP where the client cannot misbehave)."""

from __future__ import annotations

import dataclasses
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from test_chat import ROOMY, SYSTEM, answer, assistant, older_tokenizer, user, write_talking_checkpoint
from test_generate import TINY

from babyllama.checkpoint import load_model_for_inference
from babyllama.decode import NumpyDecoder
from babyllama.errors import UserError
from babyllama.generate import SamplingParams, generate
from babyllama.serve.http_server import parse_address
from babyllama.serve.openai_api import StopText
from babyllama.tokenizer import load_tokenizer

WAIT_S = 60
KEY = "test-key"
PROMPT = "话说天下大势"
# Wide enough that a long generation outlasts what a test does meanwhile; it never ends by itself.
ENDLESS = dataclasses.replace(TINY, dim=128, max_seq_len=16384)


class HttpServer:
    """`babyllama serve --http 127.0.0.1:0 ...` as a child: its URL from the line it prints, its log kept."""

    def __init__(self, checkpoint, *flags):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "babyllama", "serve", "--http", "127.0.0.1:0", "--ckpt", str(checkpoint),
             *map(str, flags)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        self.log: list[str] = []
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._keep, args=(self.process.stderr, self.log), daemon=True).start()
        announce = self.process.stdout.readline()
        assert " at http://127.0.0.1:" in announce, (announce, self.process.wait(WAIT_S), self.log)
        self.url = announce.rsplit(" at ", 1)[1].strip()

    def _keep(self, stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))
            self.lines.put(line)

    def client(self, api_key=KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, timeout=WAIT_S)

    def raw(self, path: str, body: bytes | None = None, headers=None) -> tuple[int, dict, dict]:
        """(status, JSON body, headers) of a plain request."""
        request = urllib.request.Request(self.url.removesuffix("/v1") + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=WAIT_S) as response:
                return response.status, json.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def health(self) -> dict:
        return self.raw("/health", headers={"Authorization": f"Bearer {KEY}"})[1]

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition():
            assert time.monotonic() < deadline, f"never: {what}; log: {self.log}"
            time.sleep(0.02)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=WAIT_S)
        self.process.stdout.close()
        return status


def write_endless_checkpoint(folder, tokenizer):
    """A model whose greedy text never ends: end-of-text's embedding zero, so its logit is 0 among
    thousands of random ones."""
    from safetensors.numpy import load_file, save_file

    write_talking_checkpoint(folder, tokenizer, ENDLESS)
    weights = load_file(str(folder / "model.safetensors"))
    weights["tok_embeddings.weight"][tokenizer.eos_id] = 0
    save_file(weights, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def talking(tmp_path_factory, sp_tokenizer):
    """A chat model that ends its answers, in a run directory named talk."""
    run = tmp_path_factory.mktemp("serve_http") / "talk"
    write_talking_checkpoint(run / "checkpoints" / "step_0000001", sp_tokenizer, ROOMY)
    (run / "checkpoints" / "latest").write_text("step_0000001\n")
    return run


@pytest.fixture(scope="module")
def api(talking):
    server = HttpServer(talking, "--api-key", KEY)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def endless(tmp_path_factory, sp_tokenizer_dir):
    """A checkpoint whose tokenizer has no chat tokens and whose greedy text never ends."""
    folder = tmp_path_factory.mktemp("serve_http")
    return write_endless_checkpoint(folder / "step_0000007", older_tokenizer(folder, sp_tokenizer_dir))


def expected(checkpoint, prompt, **params):
    """What generate gives for `prompt` (text, or a conversation's ids) here in the test."""
    loaded = load_model_for_inference(checkpoint)
    tokenizer = load_tokenizer(loaded.tokenizer_path)
    return generate(NumpyDecoder(loaded.cfg, loaded.weights), tokenizer, prompt, SamplingParams(**params))


FINISH = {"eos": "stop", "length": "length"}


# ---------------------------------------------------------------------------------------
# Stop strings


def test_stop_text_holds_back_what_may_begin_a_stop_string_and_cuts_at_the_first_one():
    stop = StopText(("</s>", "。\n"))
    assert [stop.push(piece) for piece in ("话说", "天下<", "/", "x大势。", "\n分久")] == \
        ["话说", "天下", "", "</x大势", ""]
    assert stop.hit and stop.push("必合") == "" and stop.flush() == ""
    unfinished = StopText(("</s>",))
    assert (unfinished.push("大势</"), unfinished.hit, unfinished.flush()) == ("大势", False, "</")
    assert StopText(()).push("</s>") == "</s>"


# ---------------------------------------------------------------------------------------
# Models and completions


def test_models_lists_the_run_by_its_name(api):
    client = api.client()
    assert [m.id for m in client.models.list().data] == ["talk"]
    model = client.models.retrieve("talk")
    assert (model.owned_by, model.context_length, model.chat_template) == ("babyllama", 256, "babyllama-chat-v1")
    assert (model.backend, model.precision) == ("numpy", "f32")
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-4")
    assert error.value.code == "model_not_found"


def test_a_greedy_completion_is_what_babyllama_generate_writes(api, talking, tmp_path, sp_tokenizer):
    completion = api.client().completions.create(model="talk", prompt=PROMPT, max_tokens=24, temperature=0)
    prompts = tmp_path / "prompt.txt"
    prompts.write_text(PROMPT + "\n", encoding="utf-8")
    cli = subprocess.run([sys.executable, "-m", "babyllama", "generate", "--ckpt", str(talking), "--prompt-file",
                          str(prompts), "--temperature", "0", "--max-new-tokens", "24"],
                         capture_output=True, text=True, timeout=WAIT_S)
    assert cli.returncode == 0, cli.stderr
    choice, = completion.choices
    assert choice.text == json.loads(cli.stdout)["answer"] != ""
    greedy = expected(talking, PROMPT, temperature=0, max_new_tokens=24)
    assert choice.finish_reason == FINISH[greedy.stopped]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == \
        (len(sp_tokenizer.encode(PROMPT)), len(greedy.token_ids), len(sp_tokenizer.encode(PROMPT)) +
         len(greedy.token_ids))
    assert completion.model == "talk" and completion.id.startswith("cmpl-")


def test_streamed_deltas_join_to_the_whole_completion_with_usage_last(api):
    client = api.client()
    whole = client.completions.create(model="talk", prompt=PROMPT, max_tokens=30, temperature=0)
    chunks = list(client.completions.create(model="talk", prompt=PROMPT, max_tokens=30, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert len(chunks) > 3
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_n_choices_are_the_seeds_seed_to_seed_plus_n_as_generate_num_samples(api, talking):
    client = api.client()
    params = dict(model="talk", prompt=PROMPT, max_tokens=12, temperature=1.0, top_p=0.9, seed=5, n=3)
    completion = client.completions.create(**params)
    samples = [expected(talking, PROMPT, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5 + k) for k in range(3)]
    assert [c.text for c in completion.choices] == [s.text for s in samples]
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert len({s.text for s in samples}) > 1
    assert completion.usage.completion_tokens == sum(len(s.token_ids) for s in samples)
    streamed = {}
    for chunk in client.completions.create(**params, stream=True):
        streamed[chunk.choices[0].index] = streamed.get(chunk.choices[0].index, "") + chunk.choices[0].text
    assert streamed == {k: s.text for k, s in enumerate(samples)}


def test_a_list_of_prompts_gets_a_choice_each_and_token_id_prompts_are_read_as_ids(api, talking, sp_tokenizer):
    client = api.client()
    prompts = [PROMPT, "曹操"]
    completion = client.completions.create(model="talk", prompt=prompts, max_tokens=8, temperature=0)
    assert [c.text for c in completion.choices] == [expected(talking, p, temperature=0, max_new_tokens=8).text
                                                    for p in prompts]
    ids = client.completions.create(model="talk", prompt=sp_tokenizer.encode(PROMPT), max_tokens=8, temperature=0)
    assert ids.choices[0].text == completion.choices[0].text


def test_stop_strings_end_the_text_before_them_in_whole_and_streamed_answers(api):
    client = api.client()
    text = client.completions.create(model="talk", prompt=PROMPT, max_tokens=40, temperature=0).choices[0].text
    stop = text[6:8]
    before = text[:text.index(stop)]
    stopped = client.completions.create(model="talk", prompt=PROMPT, max_tokens=40, temperature=0,
                                        stop=["不会出现的", stop])
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == (before, "stop")
    assert stopped.usage.completion_tokens < 40
    chunks = list(client.completions.create(model="talk", prompt=PROMPT, max_tokens=40, temperature=0, stop=stop,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == before
    assert chunks[-1].choices[0].finish_reason == "stop"


# ---------------------------------------------------------------------------------------
# Chat


def test_a_chat_is_answered_in_the_chat_template_up_to_the_end_of_the_answer(api, talking):
    client = api.client()
    conversation = [SYSTEM, user("桃园结义的是谁？"), assistant("刘备、关羽、张飞。"), user("曹操呢？")]
    reply = client.chat.completions.create(model="talk", messages=conversation, max_tokens=24, temperature=0)
    greedy = answer(talking, conversation, 24)
    assert greedy.stopped == "eos"
    message = reply.choices[0].message
    assert (message.role, message.content, reply.choices[0].finish_reason) == ("assistant", greedy.text, "stop")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (greedy.prompt_tokens, len(greedy.token_ids))
    chunks = list(client.chat.completions.create(model="talk", messages=conversation, max_tokens=24, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == greedy.text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_chat_past_the_context_loses_its_oldest_turns_and_says_so_in_a_header(api, talking):
    turns = [user("桃园结义的是谁？" * 16), assistant("刘备、关羽、张飞。" * 16), user("曹操呢？")]
    raw = api.client().chat.completions.with_raw_response.create(model="talk", messages=turns, max_tokens=200,
                                                                 temperature=0)
    assert raw.headers["babyllama-warning"] == "dropped the oldest 2 turns to fit the 256-token context"
    assert raw.parse().choices[0].message.content == answer(talking, turns[2:], 200).text


# ---------------------------------------------------------------------------------------
# Errors


def test_bad_requests_get_the_apis_errors_with_their_status(api):
    client = api.client()
    with pytest.raises(openai.NotFoundError) as error:
        client.completions.create(model="gpt-4", prompt=PROMPT)
    assert (error.value.status_code, error.value.code, error.value.param) == (404, "model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="talk", prompt=PROMPT, temperature=5)
    assert error.value.param == "temperature" and error.value.type == "invalid_request_error"
    assert "temperature must be a number from 0.0 to 2.0, got 5" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="talk", prompt="话说天下大势，分久必合，合久必分。" * 40, max_tokens=16)
    assert (error.value.code, error.value.param) == ("context_length_exceeded", "prompt")
    assert "the model's 256-token context keeps 16 for the completion" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="talk", messages=[user("曹操呢？" * 200)], max_tokens=16)
    assert error.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="talk", messages=[assistant("刘备。")])
    assert error.value.param == "messages" and "where user was expected" in error.value.message
    for bad in ({"n": 0}, {"max_tokens": 0}, {"top_p": 0}, {"stop": ["a", "b", "c", "d", "e"]},
                {"frequency_penalty": 0.5}, {"seed": -1}):
        with pytest.raises(openai.BadRequestError) as error:
            client.completions.create(model="talk", prompt=PROMPT, **bad)
        assert error.value.param == next(iter(bad)), bad
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="talk", prompt=PROMPT, extra_body={"colour": "red"})
    assert error.value.param == "colour"


def test_malformed_json_unknown_paths_and_huge_bodies_get_errors_in_the_apis_shape(api):
    auth = {"Authorization": f"Bearer {KEY}"}
    status, body, _ = api.raw("/v1/completions", b'{"model": "talk", "prompt": ', auth)
    assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"].startswith("the request body is not JSON")
    status, body, _ = api.raw("/v1/completions", b'["talk"]', auth)
    assert (status, body["error"]["message"]) == (400, "the request body must be a JSON object")
    status, body, _ = api.raw("/v1/completions", '{"model": "talk", "prompt": "话说"}'.encode("utf-16"), auth)
    assert (status, body["error"]["message"]) == (400, "the request body is not UTF-8 text (invalid start byte at "
                                                  "byte 0)")
    status, body, _ = api.raw("/v1/completions", b'{"model": "talk", "prompt": "\\ud800"}', auth)
    assert status == 400 and body["error"]["message"].startswith("the request holds the escape \\ud800, half of")
    status, body, _ = api.raw("/v1/embeddings", b"{}", auth)
    assert (status, body["error"]["code"]) == (404, "unknown_url")
    status, body, _ = api.raw("/v1/completions", None, auth)
    assert (status, body["error"]["message"]) == (405, "GET /v1/completions: Method Not Allowed")
    status, body, _ = api.raw("/v1/completions", b" " * 2**21, auth)
    assert status == 413 and body["error"]["type"] == "invalid_request_error"


def test_every_request_needs_the_api_key(api):
    for path, data in (("/v1/models", None), ("/v1/completions", b"{}"), ("/health", None), ("/nowhere", None)):
        status, body, headers = api.raw(path, data)
        assert (status, body["error"]["code"], headers["WWW-Authenticate"]) == (401, "invalid_api_key", "Bearer")
    with pytest.raises(openai.AuthenticationError) as error:
        api.client(api_key="wrong").completions.create(model="talk", prompt=PROMPT, max_tokens=2)
    assert error.value.body["message"] == "the API key is not this server's (--api-key)"


def test_a_key_that_is_not_utf8_is_refused_with_401_not_a_server_failure(api):
    """A header's bytes are the client's: a key in Latin-1 is a wrong key, not a crash."""
    with socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1].split("/")[0])), WAIT_S) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\xe9st-key\r\n"
                     b"Connection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 401 Unauthorized"
    assert b"the API key is not this server's" in reply


# ---------------------------------------------------------------------------------------
# The queue, clients that leave, stopping


def test_a_burst_past_the_queue_gets_429_and_a_client_that_leaves_frees_its_slot(endless):
    server = HttpServer(endless, "--queue", "1")
    try:
        client = server.client()
        with pytest.raises(openai.NotFoundError) as error:
            client.chat.completions.create(model="step_0000007", messages=[user("曹操呢？")])
        assert error.value.code == "model_not_chat" and "the tokenizer has no chat tokens" in error.value.message
        # Long enough to outlast the requests below even unread: 2,000 tokens once ended first in CI.
        long = client.completions.create(model="step_0000007", prompt=PROMPT, max_tokens=16000, temperature=0,
                                         stream=True)
        assert next(iter(long)).choices[0].text
        with pytest.raises(openai.APITimeoutError):  # a client that gives up while it waits
            client.with_options(timeout=0.5).completions.create(model="step_0000007", prompt="曹操", max_tokens=3)
        server.wait_for(lambda: server.health()["queued"] == 0, "the client that left gives up its place")
        waiting = {}
        thread = threading.Thread(target=lambda: waiting.setdefault("reply", client.completions.create(
            model="step_0000007", prompt="曹操", max_tokens=3, temperature=0)))
        thread.start()
        server.wait_for(lambda: server.health() == {"status": "ok", "running": 1, "queued": 1, "queue": 1},
                        "the second request waits")
        with pytest.raises(openai.RateLimitError) as error:
            client.completions.create(model="step_0000007", prompt=PROMPT, max_tokens=3)
        assert (error.value.status_code, error.value.code) == (429, "queue_full")
        long.close()  # the client leaves mid-stream
        thread.join(WAIT_S)
        assert waiting["reply"].usage.completion_tokens == 3
        stopped = [line for line in server.log if "stopped after" in line]
        assert len(stopped) == 1, server.log
        assert int(stopped[0].split("stopped after ")[1].split()[0]) < 16000
        assert server.health()["running"] == 0
    finally:
        assert server.stop() == 0


def test_sigterm_ends_the_stream_under_way_with_an_error_refuses_the_waiting_and_exits_zero(endless):
    server = HttpServer(endless)
    client = server.client()
    long = client.completions.create(model="step_0000007", prompt=PROMPT, max_tokens=2000, temperature=0, stream=True)
    chunks = iter(long)
    next(chunks)
    waiting = {}

    def wait():
        try:
            client.completions.create(model="step_0000007", prompt="曹操", max_tokens=3)
        except openai.APIStatusError as e:
            waiting["error"] = e

    thread = threading.Thread(target=wait)
    thread.start()
    server.wait_for(lambda: server.health()["queued"] == 1, "the second request waits")
    server.process.send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError, match="the server is shutting down"):
        list(chunks)
    thread.join(WAIT_S)
    assert waiting["error"].status_code == 503
    assert server.process.wait(timeout=WAIT_S) == 0
    server.stop()
    assert any("stopping (SIGTERM)" in line for line in server.log)
    assert server.log[-1] == "babyllama serve: stopped"


def test_a_port_in_use_or_a_bad_address_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for address, message in ((f"127.0.0.1:{port}", f"--http 127.0.0.1:{port}: the port is in use (another "
                                  "server?); choose another with --http [HOST:]PORT"),
                                 ("localhost:http", "--http localhost:http: expected [HOST:]PORT")):
            done = subprocess.run([sys.executable, "-m", "babyllama", "serve", "--http", address, "--ckpt",
                                   str(tmp_path)], capture_output=True, text=True, timeout=WAIT_S)
            assert (done.returncode, done.stdout) == (2, "")
            assert done.stderr.startswith(f"babyllama serve: error: {message}") and done.stderr.count("\n") == 1


def test_the_address_is_this_machine_only_unless_a_host_is_given():
    assert parse_address("8000") == ("127.0.0.1", 8000)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("0.0.0.0:8000") == ("0.0.0.0", 8000)
    assert parse_address("[::1]:8000") == ("::1", 8000)
    for bad in ("::1:8000", "localhost:", "8000000", "host:-1"):
        with pytest.raises(UserError, match=f"--http {bad}: expected"):
            parse_address(bad)


def test_the_sampling_defaults_come_from_the_command_line(talking):
    server = HttpServer(talking, "--temperature", "0", "--max-new-tokens", "5")
    try:
        completion = server.client().completions.create(model="talk", prompt=PROMPT)
        greedy = expected(talking, PROMPT, temperature=0, max_new_tokens=5)
        assert (completion.choices[0].text, completion.usage.completion_tokens) == (greedy.text, 5)
    finally:
        assert server.stop() == 0


def test_unseeded_requests_draw_their_own_seed(api):
    client = api.client()
    texts = {client.completions.create(model="talk", prompt=PROMPT, max_tokens=12, temperature=1.0).choices[0].text
             for _ in range(3)}
    assert len(texts) > 1
