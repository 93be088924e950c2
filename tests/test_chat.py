"""`babyllama chat`: the conversation kept inside the context, and the command through a real
subprocess reading turns from a pipe, against answers computed here from the template's prompt."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from numpy_checkpoints import weight_shapes
from test_generate import TINY

from babyllama.chat import fit_conversation
from babyllama.chat_template import template_for
from babyllama.checkpoint import load_model_for_inference
from babyllama.decode import NumpyDecoder
from babyllama.errors import UserError
from babyllama.generate import SamplingParams, generate
from babyllama.tokenizer import CHAT_TOKENS, load_tokenizer

WAIT_S = 120
ROOMY = dataclasses.replace(TINY, max_seq_len=256)
SYSTEM = {"role": "system", "content": "你是说书人。"}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def write_talking_checkpoint(folder, tokenizer, cfg=TINY, ends=True, **config):
    """A checkpoint of a random model whose greedy answers differ from question to question and
    end with <|end|>: weights far larger than training's initialisation, so the layers decide
    rather than the tied embedding's echo of the last token, and <|end|>'s embedding three
    times as long (zero with `ends` False, and end-of-text's too, so greedy answers never end).
    `config` goes into its config.json (a recorded "chat_template")."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    weights = {name: (np.ones(shape) if len(shape) == 1 else rng.normal(0, 0.3, shape)).astype(np.float32)
               for name, shape in weight_shapes(cfg).items()}
    end = tokenizer.special_ids().get("<|end|>")
    if end is not None and ends:
        weights["tok_embeddings.weight"][end] *= 3
    elif end is not None:
        weights["tok_embeddings.weight"][[end, tokenizer.eos_id]] = 0
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    record = {"model": dataclasses.asdict(cfg), "train": {}, "tokenizer": tokenizer.describe(), "preset": None,
              **config}
    (folder / "config.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def answer(checkpoint, messages, max_new_tokens: int):
    """The greedy answer to `messages` (ending with a user turn), from the template's prompt as it is."""
    loaded = load_model_for_inference(checkpoint)
    tokenizer = load_tokenizer(loaded.tokenizer_path)
    template = template_for(tokenizer)
    return generate(NumpyDecoder(loaded.cfg, loaded.weights), tokenizer, template.prompt(messages),
                    SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens), stop_ids=template.stop_ids)


def chat(checkpoint, lines, *flags, stdin: bytes | None = None) -> tuple[int, str, str]:
    """(status, stdout, stderr) of `babyllama chat` given `lines` on a pipe, greedy."""
    done = subprocess.run(
        [sys.executable, "-m", "babyllama", "chat", "--ckpt", str(checkpoint), "--temperature", "0", *map(str, flags)],
        input=stdin if stdin is not None else "".join(f"{line}\n" for line in lines).encode(),
        capture_output=True, timeout=WAIT_S,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture(scope="module")
def talking(tmp_path_factory, sp_tokenizer):
    return write_talking_checkpoint(tmp_path_factory.mktemp("chat") / "step_0000003", sp_tokenizer, ROOMY)


@pytest.fixture(scope="module")
def short(tmp_path_factory, sp_tokenizer):
    """The same kind of model with a 64-token context, which a few turns fill."""
    return write_talking_checkpoint(tmp_path_factory.mktemp("chat") / "step_0000004", sp_tokenizer)


# ---------------------------------------------------------------------------------------
# The context


def test_the_oldest_question_and_answer_go_first_and_the_system_turn_stays(sp_tokenizer):
    template = template_for(sp_tokenizer)
    turns = [user("桃园结义的是谁？"), assistant("刘备、关羽、张飞。"), user("谁年纪最大？"), assistant("刘备。"),
             user("曹操呢？")]
    full = template.prompt([SYSTEM, *turns])
    assert fit_conversation(template, [SYSTEM, *turns], 2 * len(full), len(full)) == (full, 0)
    # max_new_tokens 40 keeps 32 of a 64-token context for the answer.
    without_first = template.prompt([SYSTEM, *turns[2:]])
    assert len(without_first) <= 32 < len(full)
    assert fit_conversation(template, [SYSTEM, *turns], 64, 40) == (without_first, 2)
    last = template.prompt([SYSTEM, turns[-1]])
    assert fit_conversation(template, [SYSTEM, *turns], 2 * len(last), len(last)) == (last, 4)
    later = template.prompt(turns[2:])
    assert fit_conversation(template, turns, 2 * len(later), len(later)) == (later, 2)


def test_a_long_conversation_is_fitted_in_a_few_encodings_to_the_fewest_turns_dropped(sp_tokenizer):
    # The Playground (and any serve client) sends the whole conversation at every turn: encoding it
    # again for each pair dropped took seconds per answer after some hundreds of turns.
    template = template_for(sp_tokenizer)
    turns = [turn for i in range(300) for turn in (user(f"第{i}回的回目是什么？"), assistant(f"第{i}回。"))]
    messages = [SYSTEM, *turns, user("曹操呢？")]
    room = 64 - 32
    fewest = next(k for k in range(0, len(turns) + 1, 2) if len(template.prompt([SYSTEM, *messages[1 + k:]])) <= room)
    encoded = []

    class Counting:
        def prompt(self, asked):
            encoded.append(len(asked))
            return template.prompt(asked)

    assert fit_conversation(Counting(), messages, 64, 40) == (template.prompt([SYSTEM, *messages[1 + fewest:]]),
                                                              fewest)
    assert len(encoded) <= 12


def test_a_question_that_alone_does_not_fit_is_refused_saying_the_sizes(sp_tokenizer):
    template = template_for(sp_tokenizer)
    asked = [SYSTEM, user("话说天下大势，分久必合，合久必分。")]
    size = len(template.prompt(asked))
    with pytest.raises(UserError, match=f"it takes {size} tokens with the system prompt, and the model's "
                       f"{size + 3}-token context keeps 4 for the answer, leaving {size - 1}; write a shorter "
                       "one or shorten the system prompt"):
        fit_conversation(template, asked, size + 3, 4)


def test_a_recorded_template_is_checked_against_the_tokenizer(tmp_path, sp_tokenizer, chatglm_shaped):
    ours = template_for(sp_tokenizer).describe()
    folder = write_talking_checkpoint(tmp_path / "recorded", sp_tokenizer, chat_template=ours)
    assert load_model_for_inference(folder).chat_template(sp_tokenizer).describe() == ours
    wrong = write_talking_checkpoint(tmp_path / "wrong", sp_tokenizer,
                                     chat_template={**ours, "special_ids": {token: 9 for token in CHAT_TOKENS}})
    with pytest.raises(UserError, match=f"{wrong / 'config.json'}: records the chat template 'babyllama-chat-v1'"):
        load_model_for_inference(wrong).chat_template(sp_tokenizer)
    status, _, stderr = chat(wrong, ["桃园结义的是谁？"])
    assert status == 2 and len(stderr.splitlines()) == 1
    assert stderr.startswith(f"babyllama chat: error: {wrong} cannot chat: {wrong / 'config.json'}: records")


# ---------------------------------------------------------------------------------------
# The command


def test_chat_streams_answers_to_each_turn_with_reset_and_system(talking):
    lines = ["桃园结义的是谁？", "曹操呢？", "/system 你是说书人。", "刘备呢？", "/reset", "刘备呢？", "/quit", "never read"]
    status, stdout, stderr = chat(talking, lines, "--max-new-tokens", 24)
    assert status == 0, stderr
    first = answer(talking, [user(lines[0])], 24)
    second = answer(talking, [user(lines[0]), assistant(first.text), user(lines[1])], 24)
    third = answer(talking, [SYSTEM, user(lines[0]), assistant(first.text), user(lines[1]), assistant(second.text),
                             user(lines[3])], 24)
    after_reset = answer(talking, [SYSTEM, user(lines[5])], 24)
    answers = [first, second, third, after_reset]
    # The model ends some answers itself (at <|end|>) and says different things to different turns.
    assert "eos" in {a.stopped for a in answers} and len({a.text for a in answers}) == 4
    assert stdout == "".join(f"{a.text}\n" for a in answers)
    notes = [line for line in stderr.splitlines() if line.startswith("[")]
    assert notes[2] == "[system prompt: 你是说书人。]"
    assert notes[4] == "[the conversation starts over; the system prompt is kept]"
    assert [note.rpartition("stopped: ")[2].rstrip("]").split()[0] for i, note in enumerate(notes) if i not in (2, 4)] == \
        [a.stopped for a in answers]


def test_chat_drops_the_oldest_turns_when_the_context_fills_and_says_so(short, sp_tokenizer):
    questions = ["桃园结义的是谁？", "曹操呢？", "刘备呢？", "关羽呢？", "张飞呢？"]
    template = template_for(sp_tokenizer)
    # The rule, spelled out: max_new_tokens 16 leaves 48 of the 64 tokens to the conversation.
    history, expected, drops = [], [], []
    for question in questions:
        asked = history + [user(question)]
        dropped = 0
        while len(template.prompt([SYSTEM, *asked])) > 48:
            asked, dropped = asked[2:], dropped + 2
        reply = answer(short, [SYSTEM, *asked], 16)
        history = asked + [assistant(reply.text)]
        expected.append(reply.text)
        drops.append(dropped)
    assert any(drops)
    status, stdout, stderr = chat(short, questions, "--max-new-tokens", 16, "--system", SYSTEM["content"])
    assert status == 0, stderr
    assert stdout == "".join(f"{text}\n" for text in expected)
    notices = [line for line in stderr.splitlines() if line.startswith("[dropped")]
    assert notices == [f"[dropped the oldest {n} turns to fit the 64-token context; system prompt kept]"
                       for n in drops if n]


def test_a_message_too_long_for_the_context_is_refused_and_the_chat_goes_on(short):
    status, stdout, stderr = chat(short, ["话说天下大势，分久必合，合久必分。" * 4, "曹操呢？"], "--max-new-tokens", 16)
    assert status == 0, stderr
    assert "[the message does not fit: it takes " in stderr and "; write a shorter one]" in stderr
    assert stdout == f"{answer(short, [user('曹操呢？')], 16).text}\n"


def test_unknown_commands_and_lines_that_are_not_utf8_are_said_and_skipped(talking):
    status, stdout, stderr = chat(talking, [], "--max-new-tokens", 8, stdin="/help\n".encode() + b"\xff\n\n" +
                                  "曹操呢？\n".encode())
    assert status == 0, stderr
    assert "[unknown command /help; the commands: /system TEXT, /reset, /quit]" in stderr
    assert "[line 2 is not UTF-8 text (invalid start byte at byte 0); skipped]" in stderr
    assert stdout == f"{answer(talking, [user('曹操呢？')], 8).text}\n"


def older_tokenizer(folder, sp_tokenizer_dir):
    """The session's tokenizer without the chat tokens, as one trained before they were reserved."""
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((sp_tokenizer_dir / "tokenizer.model").read_bytes())
    for piece in model.pieces:
        if piece.piece in CHAT_TOKENS:
            piece.piece = f"<older{piece.piece}>"
    (folder / "older.model").write_bytes(model.SerializeToString())
    return load_tokenizer(folder / "older.model")


def test_a_checkpoint_whose_tokenizer_has_no_chat_tokens_is_refused_in_one_line(tmp_path, sp_tokenizer_dir):
    older = older_tokenizer(tmp_path, sp_tokenizer_dir)
    folder = write_talking_checkpoint(tmp_path / "step_0000001", older)
    status, stdout, stderr = chat(folder, ["曹操呢？"])
    assert (status, stdout) == (2, "")
    assert stderr == (f"babyllama chat: error: {folder} cannot chat: {older.path}: the tokenizer has no chat tokens "
                      "(<|system|>, <|user|>, <|assistant|>, <|end|>), so it cannot encode conversations; train one "
                      "with `babyllama tokenizer train` (which reserves them), or use ChatGLM2-6B's tokenizer\n")


def test_ctrl_c_stops_an_answer_and_the_chat_goes_on(tmp_path, sp_tokenizer):
    import signal

    endless = write_talking_checkpoint(tmp_path / "step_0000001", sp_tokenizer,
                                       dataclasses.replace(TINY, max_seq_len=16384), ends=False)
    process = subprocess.Popen([sys.executable, "-m", "babyllama", "chat", "--ckpt", str(endless), "--temperature",
                                "0", "--max-new-tokens", "8000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        process.stdin.write("桃园结义的是谁？\n".encode())
        process.stdin.flush()
        assert process.stdout.read(1)  # the answer has begun: 8,000 tokens take seconds, a signal far less
        process.send_signal(signal.SIGINT)
        process.stdin.write("/quit\n".encode())
        process.stdin.close()
        assert process.wait(timeout=WAIT_S) == 0
        notes = process.stderr.read().decode().splitlines()
        assert notes[2:] == ["[stopped: cancelled]"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT_S)
        process.stdout.close()
        process.stderr.close()


def test_a_typed_line_that_is_not_utf8_is_said_and_skipped_and_the_chat_goes_on(talking):
    import os
    import pty

    main, terminal = pty.openpty()  # stdin a terminal: the interactive chat, lines read by input()
    try:
        process = subprocess.Popen([sys.executable, "-m", "babyllama", "chat", "--ckpt", str(talking), "--temperature",
                                    "0", "--max-new-tokens", "8"], stdin=terminal, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        os.write(main, b"\xff\xfe bad\n" + "曹操呢？\n".encode() + b"/quit\n")
        stdout, stderr = process.communicate(timeout=WAIT_S)
    finally:
        os.close(main)
        os.close(terminal)
    assert process.returncode == 0, stderr.decode()
    assert "[the line is not UTF-8 text; skipped]" in stderr.decode()
    # stdout redirected: the answers alone there, the prompts (one before each line read) on stderr.
    assert stdout.decode() == f"{answer(talking, [user('曹操呢？')], 8).text}\n", stderr.decode()
    assert stderr.decode().count("> ") == 3


def test_ctrl_c_at_the_prompt_drops_the_line_says_how_to_leave_and_the_chat_goes_on(talking):
    import os
    import pty
    import select
    import signal

    main, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "babyllama", "chat", "--ckpt", str(talking), "--temperature",
                                "0", "--max-new-tokens", "8"], stdin=terminal, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        def until_prompt() -> str:
            shown = b""
            while not shown.endswith(b"> "):
                assert select.select([process.stderr], [], [], WAIT_S)[0], shown
                shown += os.read(process.stderr.fileno(), 1)
            return shown.decode()

        until_prompt()
        process.send_signal(signal.SIGINT)
        assert until_prompt() == "\n[ctrl-c drops the line typed; /quit or ctrl-d ends the chat]\n> "
        os.write(main, "曹操呢？\n".encode() + b"/quit\n")
        stdout, stderr = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT_S)
        os.close(main)
        os.close(terminal)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode() == f"{answer(talking, [user('曹操呢？')], 8).text}\n", stderr.decode()


@pytest.mark.parametrize("command, flag, named", [("chat", "--system", "--system"), ("generate", "--prompt", "--prompt"),
                                                  ("train", "--sample_question", "--sample_question/--sample-question")])
def test_a_text_argument_that_is_not_utf8_is_refused_in_one_line(talking, tmp_path, command, flag, named):
    import os

    args = [b"--ckpt", os.fsencode(talking)] if command != "train" else [b"--run", os.fsencode(tmp_path / "run")]
    done = subprocess.run([sys.executable.encode(), b"-m", b"babyllama", command.encode(), *args, flag.encode(),
                           b"\xff\xfe"], input=b"", capture_output=True, timeout=WAIT_S)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines()[-1] == (f"babyllama {command}: error: argument {named}: not UTF-8 text "
                                                     "(b'\\xff\\xfe'); check the terminal's encoding")
    assert not (tmp_path / "run").exists()
