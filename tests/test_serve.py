"""`babyllama serve --stdio` end to end: a real server process speaking JSON lines."""

from __future__ import annotations

import dataclasses
import json
import queue
import subprocess
import sys
import threading

import pytest
from test_chat import ROOMY, SYSTEM, answer, assistant, older_tokenizer, user, write_talking_checkpoint
from test_generate import TINY, write_checkpoint

# A long context, so a generation runs long enough to be cancelled in the middle.
LONG = dataclasses.replace(TINY, max_seq_len=1024)
WAIT_S = 60


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sp_tokenizer):
    folder = tmp_path_factory.mktemp("serve") / "step_0000001"
    write_checkpoint(folder, LONG, sp_tokenizer, seed=1)
    return folder


class ServerProcess:
    def __init__(self, checkpoint):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "babyllama", "serve", "--stdio", "--ckpt", str(checkpoint)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, *requests):
        self.process.stdin.write("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests))
        self.process.stdin.flush()

    def send_bytes(self, *lines: bytes):
        self.process.stdin.flush()
        self.process.stdin.buffer.write(b"".join(line + b"\n" for line in lines))
        self.process.stdin.buffer.flush()

    def next_event(self):
        event = self.events.get(timeout=WAIT_S)
        assert event is not None, f"the server ended: {self.process.stderr.read()}"
        return event

    def until_done(self, request_id):
        """(token texts, done event) of one generation."""
        tokens, done = self.token_events_until_done(request_id)
        return [event["text"] for event in tokens], done

    def token_events_until_done(self, request_id):
        """(token events, done event) of one generation."""
        tokens = []
        while True:
            event = self.next_event()
            assert event.get("id") == request_id, event
            if event["event"] == "token":
                tokens.append(event)
            else:
                assert event["event"] == "done", event
                return tokens, event

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT_S)
        if not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.stderr.close()


@pytest.fixture
def server(checkpoint):
    process = ServerProcess(checkpoint)
    ready = process.next_event()
    assert ready["event"] == "ready", ready
    yield process
    process.close()


@pytest.fixture(scope="module")
def talking(tmp_path_factory, sp_tokenizer):
    """A model that says different things to different conversations and ends its answers itself."""
    return write_talking_checkpoint(tmp_path_factory.mktemp("serve") / "step_0000002", sp_tokenizer, ROOMY)


@pytest.fixture
def start():
    """Starts servers on checkpoints: start(checkpoint) -> (ServerProcess, its ready event)."""
    started = []

    def start(checkpoint):
        started.append(ServerProcess(checkpoint))
        return started[-1], started[-1].next_event()

    yield start
    for process in started:
        process.close()


def test_ready_and_info_describe_the_loaded_model(server, checkpoint):
    server.send({"op": "info"})
    info = server.next_event()
    assert info["event"] == "info"
    assert info["protocol"] == 2
    assert (info["chat"], info["chat_template"]) == (True, "babyllama-chat-v1")
    assert info["checkpoint"] == str(checkpoint)
    assert info["model"]["max_seq_len"] == 1024 and info["model"]["n_kv_heads"] == 2
    assert (info["running"], info["queued"]) == (None, 0)


def test_streamed_tokens_join_to_what_the_generate_command_writes(server, checkpoint, tmp_path):
    params = {"max_new_tokens": 24, "temperature": 0.9, "top_k": 50, "top_p": 0.95,
              "repetition_penalty": 1.1, "seed": 7}
    server.send({"op": "generate", "id": "a", "prompt": "话说天下大势", **params})
    texts, done = server.until_done("a")
    assert done["stopped"] in ("eos", "length")
    assert done["tokens"] >= 1 and done["tokens_per_s"] > 0 and done["ttft_ms"] is not None
    assert all(texts) and not any(t.endswith("\ufffd") for t in texts[:-1])

    prompts = tmp_path / "prompt.txt"
    prompts.write_text("话说天下大势\n", encoding="utf-8")
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in params.items()]
    cli = subprocess.run([sys.executable, "-m", "babyllama", "generate", "--ckpt", str(checkpoint),
                          "--prompt-file", str(prompts), *flags], capture_output=True, text=True, timeout=WAIT_S)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["answer"] == "".join(texts)


def test_token_events_count_the_tokens_generated_so_far(server):
    server.send({"op": "generate", "id": "n", "prompt": "话说", "temperature": 1.0, "max_new_tokens": 40, "seed": 3})
    tokens, done = server.token_events_until_done("n")
    counts = [event["tokens"] for event in tokens]
    assert counts == sorted(counts) and counts[0] >= 1
    assert counts[-1] <= done["tokens"]


def test_a_full_context_stops_a_generation_with_its_own_reason(server):
    server.send({"op": "generate", "id": "c", "prompt": "话说", "temperature": 0, "max_new_tokens": 5000})
    _, done = server.until_done("c")
    assert done["stopped"] == "context"
    assert done["prompt_tokens"] + done["tokens"] == LONG.max_seq_len


def test_cancel_stops_a_generation_in_the_middle(server):
    server.send({"op": "generate", "id": 1, "prompt": "话说", "temperature": 0, "max_new_tokens": 1000})
    first = server.next_event()
    assert first["event"] == "token" and first["id"] == 1
    server.send({"op": "cancel", "id": 1})
    texts, done = server.until_done(1)
    assert done["stopped"] == "cancelled"
    assert 1 <= done["tokens"] < 1000
    server.send({"op": "generate", "id": 2, "prompt": "话说", "temperature": 0, "max_new_tokens": 3})
    _, done = server.until_done(2)
    assert (done["stopped"], done["tokens"]) == ("length", 3)


def test_malformed_requests_get_errors_and_the_server_keeps_serving(server):
    server.send("{not json", '["a list"]', {"op": "fly"},
                {"op": "generate", "id": "t", "prompt": "话说", "temperature": -1},
                {"op": "generate", "prompt": "话说"},
                {"op": "generate", "id": "u", "prompt": "话说", "colour": "red"},
                {"op": "cancel", "id": "nobody"})
    errors = [server.next_event() for _ in range(7)]
    assert [e["event"] for e in errors] == ["error"] * 7
    assert "JSON" in errors[0]["message"]
    assert "unknown op" in errors[2]["message"]
    assert errors[3]["id"] == "t" and "temperature" in errors[3]["message"]
    assert "id" in errors[4]["message"]
    assert "colour" in errors[5]["message"]
    assert "nobody" in errors[6]["message"]
    server.send({"op": "generate", "id": "ok", "prompt": "话说", "max_new_tokens": 2, "temperature": 0})
    _, done = server.until_done("ok")
    assert done["tokens"] == 2


def test_requests_that_are_not_unicode_text_get_one_error_each_and_the_server_keeps_serving(server):
    cut_character = '{"op": "generate", "id": "b", "prompt": "话'.encode() + b'\xe8"}'
    server.send_bytes(b'\xff\xfe{"op": "info"}', cut_character)
    # json.dumps escapes the lone surrogates: the lines are "\\ud800" and "\\udc00" on the wire.
    server.send({"op": "generate", "id": "s", "prompt": "\ud800"}, {"op": "cancel", "id": "\udc00"})
    errors = [server.next_event() for _ in range(4)]
    assert [e["event"] for e in errors] == ["error"] * 4
    assert errors[0] == {"event": "error", "message": "the request is not UTF-8 text (invalid start byte 0xff at "
                         "byte 0); send one JSON object a line, encoded as UTF-8"}
    assert "id" not in errors[1]
    assert f"(invalid continuation byte 0xe8 at byte {len(cut_character) - 3})" in errors[1]["message"]
    assert errors[2]["id"] == "s"
    assert errors[2]["message"].startswith("the request holds the escape \\ud800, half of a UTF-16 surrogate pair")
    assert "both halves (\\ud83d\\ude00) or as itself in UTF-8" in errors[2]["message"]
    assert "id" not in errors[3] and "\\udc00" in errors[3]["message"]
    server.send({"op": "generate", "id": "ok", "prompt": "话说\ud83d\ude00", "max_new_tokens": 2, "temperature": 0})
    _, done = server.until_done("ok")
    assert done["tokens"] == 2


def test_shutdown_cancels_and_exits_zero(server):
    server.send({"op": "generate", "id": "long", "prompt": "话说", "temperature": 0, "max_new_tokens": 1000},
                {"op": "shutdown"})
    texts, done = server.until_done("long")
    assert done["stopped"] == "cancelled" and done["tokens"] < 1000
    assert server.process.wait(timeout=WAIT_S) == 0


def test_end_of_input_finishes_the_queued_generations_then_exits_zero(server):
    server.send({"op": "generate", "id": "a", "prompt": "话说", "temperature": 0, "max_new_tokens": 4},
                {"op": "generate", "id": "b", "prompt": "曹操", "temperature": 0, "max_new_tokens": 4})
    server.process.stdin.close()
    assert [server.until_done(name)[1]["stopped"] for name in ("a", "b")] == ["length", "length"]
    assert server.process.wait(timeout=WAIT_S) == 0


def test_a_checkpoint_that_does_not_load_gives_an_error_event_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "babyllama", "serve", "--stdio", "--ckpt", str(tmp_path / "none")],
                          input="", capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 2
    event = json.loads(done.stdout)
    assert event["event"] == "error" and "no such file or folder" in event["message"]


# ---------------------------------------------------------------------------------------
# Conversations (protocol 2)


def test_a_messages_request_is_answered_in_the_chat_template_up_to_the_end_of_the_answer(start, talking):
    server, ready = start(talking)
    assert (ready["protocol"], ready["chat"], ready["chat_template"]) == (2, True, "babyllama-chat-v1")
    conversations = [[user("桃园结义的是谁？")],
                     [SYSTEM, user("桃园结义的是谁？"), assistant("刘备、关羽、张飞。"), user("曹操呢？")]]
    for number, messages in enumerate(conversations):
        server.send({"op": "generate", "id": number, "messages": messages, "temperature": 0, "max_new_tokens": 24})
        texts, done = server.until_done(number)
        expected = answer(talking, messages, 24)
        assert ("".join(texts), done["tokens"], done["stopped"]) == \
            (expected.text, len(expected.token_ids), expected.stopped)
        assert done["prompt_tokens"] == expected.prompt_tokens
    assert expected.stopped == "eos"


def test_a_request_with_both_prompt_and_messages_or_neither_or_a_bad_conversation_is_an_error(start, talking):
    server, _ = start(talking)
    server.send({"op": "generate", "id": "both", "prompt": "话说", "messages": [user("曹操呢？")]},
                {"op": "generate", "id": "neither", "temperature": 0},
                {"op": "generate", "id": "order", "messages": [assistant("刘备。")]},
                {"op": "generate", "id": "list", "messages": "曹操呢？"})
    errors = [server.next_event() for _ in range(4)]
    assert [(e["event"], e["id"]) for e in errors] == [("error", "both"), ("error", "neither"), ("error", "order"),
                                                        ("error", "list")]
    assert errors[0]["message"] == 'generate takes a "prompt" or "messages", not both'
    assert errors[1]["message"] == 'generate needs a "prompt" string or a "messages" list'
    assert errors[2]["message"].startswith("messages: turn 1 is assistant where user was expected")
    assert errors[3]["message"] == '"messages" must be a list of {"role", "content"} objects'
    server.send({"op": "generate", "id": "ok", "messages": [user("曹操呢？")], "temperature": 0, "max_new_tokens": 4})
    assert server.until_done("ok")[1]["stopped"] in ("eos", "length")


def test_a_conversation_past_the_context_loses_its_oldest_turns_with_a_warning(start, tmp_path, sp_tokenizer):
    short = write_talking_checkpoint(tmp_path / "step_0000005", sp_tokenizer)
    server, _ = start(short)
    turns = [user("桃园结义的是谁？"), assistant("刘备、关羽、张飞。"), user("谁年纪最大？"), assistant("刘备。"),
             user("曹操呢？")]
    server.send({"op": "generate", "id": "w", "messages": [SYSTEM, *turns], "temperature": 0, "max_new_tokens": 40})
    warning = server.next_event()
    assert warning == {"event": "warning", "id": "w", "message": "dropped the oldest 2 turns to fit the model's "
                       "64-token context; the system prompt is kept"}
    texts, done = server.until_done("w")
    assert "".join(texts) == answer(short, [SYSTEM, *turns[2:]], 40).text
    server.send({"op": "generate", "id": "long", "messages": [user("话说天下大势，分久必合，合久必分。" * 4)]})
    error = server.next_event()
    assert (error["event"], error["id"]) == ("error", "long")
    assert error["message"].startswith("the message does not fit: it takes ")


def test_a_server_without_a_chat_template_says_so_and_refuses_messages_but_continues_prompts(
        start, tmp_path, sp_tokenizer_dir):
    older = older_tokenizer(tmp_path, sp_tokenizer_dir)
    server, ready = start(write_talking_checkpoint(tmp_path / "step_0000001", older))
    assert (ready["chat"], ready["chat_template"]) == (False, None)
    server.send({"op": "generate", "id": "m", "messages": [user("曹操呢？")]})
    error = server.next_event()
    assert (error["event"], error["id"]) == ("error", "m")
    assert error["message"].startswith(f"this checkpoint cannot chat: {older.path}: the tokenizer has no chat tokens")
    server.send({"op": "generate", "id": "p", "prompt": "话说", "temperature": 0, "max_new_tokens": 3})
    assert server.until_done("p")[1]["tokens"] == 3
