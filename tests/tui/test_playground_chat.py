"""The Playground's chat mode under Pilot: a stand-in server speaking serve protocol 2 that records
every request it gets (so the tests see what each panel sent), a snapshot at 80x24, and one test
against real `babyllama serve` processes, which runs once serve speaks protocol 2."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
from test_generate import TINY, write_checkpoint
from test_playground import messages, open_playground, stand_in, state_of

from babyllama import serve
from babyllama.runs import RunDir
from babyllama_tui import app as app_module
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.playground.backends import NUMPY
from babyllama_tui.screens.playground import PlaygroundScreen
from babyllama_tui.widgets.checkpoint_picker import list_checkpoints

from pilot_wait import footer_settled, wait_until

# Answers "<step> answers <n>" to the n-th user turn of the conversation it is sent; the checkpoints
# of the run "nochat" have no chat template; a user turn "hold" streams one piece and waits for
# a cancel; more than TRIM_AFTER messages get a warning that the oldest turns were dropped.
TRIM_AFTER = 4
CHAT_SERVER = '''
import json, sys
from pathlib import Path
checkpoint = Path(sys.argv[sys.argv.index("--ckpt") + 1])
chat = checkpoint.parent.parent.name != "nochat"
step = checkpoint.name.rsplit("_", 1)[-1].lstrip("0")
def emit(**event):
    print(json.dumps(event, ensure_ascii=False), flush=True)
emit(event="ready", protocol=2, checkpoint=str(checkpoint), parameters=226624, model={"max_seq_len": 256},
     defaults={}, chat=chat, chat_template="babyllama-chat-v1" if chat else None)
held = None
for line in sys.stdin:
    with (checkpoint / "requests.jsonl").open("a", encoding="utf-8") as log:
        log.write(line)
    request = json.loads(line)
    if request["op"] == "shutdown":
        break
    if request["op"] == "cancel" and request["id"] == held:
        emit(event="done", id=held, tokens=1, prompt_tokens=9, tokens_per_s=1.0, ttft_ms=1.0, stopped="cancelled")
    if request["op"] != "generate":
        continue
    if "messages" not in request:
        emit(event="token", id=request["id"], text="续写", tokens=1)
        emit(event="done", id=request["id"], tokens=1, prompt_tokens=3, tokens_per_s=9.0, ttft_ms=1.0, stopped="eos")
        continue
    turns = request["messages"]
    if turns[-1]["content"] == "hold":
        held = request["id"]
        emit(event="token", id=held, text="半", tokens=1)
        continue
    if len(turns) > %(trim)d:
        emit(event="warning", id=request["id"], message="dropped the 2 oldest turns to fit the 256-token context")
    answer = f"{step} answers {sum(turn['role'] == 'user' for turn in turns)}"
    for n, piece in enumerate(answer.split(" "), 1):
        emit(event="token", id=request["id"], text=piece if n == 1 else " " + piece, tokens=n)
    emit(event="done", id=request["id"], tokens=3, prompt_tokens=20, tokens_per_s=30.0, ttft_ms=2.0, stopped="eos")
''' % {"trim": TRIM_AFTER}

STEPS = (1000, 5000)


def chat_app(root: Path, tmp_path: Path, nochat: bool = False) -> BabyLlamaApp:
    """The app, its playground serving with CHAT_SERVER, over a run that saved STEPS (empty folders);
    with `nochat`, the run "nochat" whose one checkpoint has no chat template."""
    server = stand_in(tmp_path, "chat_server", CHAT_SERVER)
    run = RunDir(root / "out" / "runs" / "tiny")
    for step in STEPS:
        run.checkpoint_path(step).mkdir(parents=True)
    run.latest_path.write_text(f"{run.checkpoint_path(STEPS[-1]).name}\n")
    if nochat:
        RunDir(root / "out" / "runs" / "nochat").checkpoint_path(7).mkdir(parents=True)

    class ChatApp(BabyLlamaApp):
        CSS_PATH = Path(app_module.__file__).with_name("app.tcss")
        MODES = {**BabyLlamaApp.MODES, "playground": lambda: PlaygroundScreen(serve_program=server,
                                                                                    backends=(NUMPY,))}

    app = ChatApp(root=root)
    app.animation_level = "none"
    return app


def checkpoint_of(root: Path, step: int) -> Path:
    return RunDir(root / "out" / "runs" / "tiny").checkpoint_path(step)


def requests_to(folder: Path) -> list[dict]:
    """The generate requests the stand-in server for `folder` got, in order."""
    path = folder / "requests.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [request for request in map(json.loads, lines) if request["op"] == "generate"]


def answered(screen: PlaygroundScreen, slots: str = "AB") -> bool:
    """Every panel named has an answer to the newest turn, ended."""
    exchanges = screen.conversation.exchanges
    return bool(exchanges) and all(slot in exchanges[-1].answers and not exchanges[-1].answers[slot].streaming
                                   for slot in slots)


async def chatting_side_by_side(pilot, root: Path) -> PlaygroundScreen:
    """The playground in chat mode with step 5,000 in A and step 1,000 in B, both ready."""
    screen = await open_playground(pilot)
    await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
    screen.load("B", list_checkpoints(root)[1])
    await wait_until(pilot, lambda: state_of(screen, "B") == "ready", "B")
    await pilot.press("ctrl+t")
    assert screen.chatting and screen.has_class("-chat")
    return screen


async def say(pilot, screen: PlaygroundScreen, text: str, slots: str = "AB") -> None:
    screen.prompt_input.focus()
    await pilot.press(*text, "enter")
    await wait_until(pilot, lambda: answered(screen, slots), f"the answers to {text}")


async def test_two_checkpoints_answer_one_conversation_each_with_its_own_answers(tmp_path):
    app = chat_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chatting_side_by_side(pilot, tmp_path)
        assert screen.query_one("#system-row").display and screen.prompt_label.render().plain == "you"
        screen.system_input.focus()
        await pilot.press(*"be brief", "enter")
        assert screen.focused is screen.prompt_input, "enter in the system field goes on to the message"
        await say(pilot, screen, "hi")
        assert screen.prompt_input.value == "", "a message sent leaves the line empty for the next"
        await say(pilot, screen, "again")
        system = {"role": "system", "content": "be brief"}
        for slot, step in (("A", 5000), ("B", 1000)):
            sent = requests_to(checkpoint_of(tmp_path, step))
            assert [request["messages"] for request in sent] == [
                [system, {"role": "user", "content": "hi"}],
                [system, {"role": "user", "content": "hi"}, {"role": "assistant", "content": f"{step} answers 1"},
                 {"role": "user", "content": "again"}],
            ]
            assert "prompt" not in sent[0] and sent[0]["temperature"] == 0.8
            shown = screen.chat_panels[slot].render().plain
            assert "system be brief" in shown and "› hi" in shown and f"{step} answers 2" in shown
        assert "1000 answers" not in screen.chat_panels["A"].render().plain


async def test_a_checkpoint_without_a_chat_template_says_why_in_one_line_and_is_not_asked(tmp_path):
    app = chat_app(tmp_path, tmp_path, nochat=True)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        choices = {choice.label: choice for choice in list_checkpoints(tmp_path)}
        screen.load("A", choices["tiny step 5,000"])
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        nochat = choices["nochat step 7"]
        screen.load("B", nochat)
        await wait_until(pilot, lambda: state_of(screen, "B") == "ready", "B")
        await pilot.press("ctrl+t")
        reason = "No chat: the checkpoint has no chat template (its tokenizer has no chat tokens)"
        assert screen.chat_panels["B"].notice == reason
        await wait_until(pilot, lambda: reason in " ".join(screen.chat_panels["B"].render().plain.split()),
                         "the reason shown")
        await say(pilot, screen, "hi", slots="A")
        assert list(screen.conversation.exchanges[-1].answers) == ["A"]
        assert requests_to(nochat.path) == []
        screen.unload("A")
        await pilot.pause()
        screen.prompt_input.value = "hi"
        assert not screen.ask("hi")
        await pilot.pause()
        assert messages(app)[-1] == "Not sent: No loaded checkpoint can chat: its panel says why"


async def test_esc_stops_an_answer_which_is_kept_as_far_as_it_got_and_a_message_waits_for_it(tmp_path):
    app = chat_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        await pilot.press("ctrl+t")
        screen.prompt_input.focus()
        await pilot.press(*"hold", "enter")
        answer = screen.conversation.exchanges[-1].answers["A"]
        await wait_until(pilot, lambda: answer.text == "半", "the first piece")
        await pilot.press(*"next", "enter")
        assert messages(app)[-1] == "An answer is still coming: esc stops it, then send again"
        assert screen.prompt_input.value == "next"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not answer.streaming, "the stop")
        assert answer.notes == [("stopped", "(stopped)")] and "stopped" in answer.outcome
        await pilot.press("enter")
        await wait_until(pilot, lambda: answered(screen, "A") and len(screen.conversation.exchanges) == 2, "the answer")
        assert requests_to(checkpoint_of(tmp_path, 5000))[-1]["messages"] == [
            {"role": "user", "content": "hold"}, {"role": "assistant", "content": "半"},
            {"role": "user", "content": "next"}]
        assert "(stopped)" in screen.chat_panels["A"].render().plain


async def test_a_continuation_started_during_an_answer_ends_it_and_a_server_that_dies_fails_it(tmp_path):
    app = chat_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        await pilot.press("ctrl+t")
        assert screen.ask("hold")
        first = screen.conversation.exchanges[-1].answers["A"]
        await wait_until(pilot, lambda: first.text == "半", "the first piece")
        await pilot.press("ctrl+t")
        assert screen.continue_prompt("话说")
        assert first.outcome == "1 tokens · stopped" and first.notes == [("stopped", "(stopped)")]
        await wait_until(pilot, lambda: screen.panels["A"].text == "续写", "the continuation")

        await pilot.press("ctrl+t")
        assert screen.ask("hold")
        second = screen.conversation.exchanges[-1].answers["A"]
        await wait_until(pilot, lambda: second.text == "半", "the first piece")
        os.kill(screen.engines["A"].client.pid, signal.SIGKILL)
        await wait_until(pilot, lambda: state_of(screen, "A") == "exited", "the exit")
        assert second.failed and second.notes == [("error", "error: the server exited before the answer ended")]
        assert screen.chat_panels["A"].notice == "serve exited with status -9; ctrl+o loads a checkpoint again"
        assert screen.engines["A"].answer is None


async def test_the_server_s_notice_of_dropped_turns_is_shown_under_the_answer(tmp_path):
    app = chat_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        await pilot.press("ctrl+t")
        for text in ("one", "two", "three"):
            await say(pilot, screen, text, slots="A")
        notes = [answer.notes for _, answer in screen.conversation.answered("A")]
        assert notes == [[], [], [("warning", "note: dropped the 2 oldest turns to fit the 256-token context")]]
        await wait_until(pilot, lambda: "note: dropped the 2 oldest turns" in screen.chat_panels["A"].render().plain,
                         "the note shown")


async def test_ctrl_r_starts_over_and_ctrl_t_keeps_each_mode_s_text(tmp_path):
    app = chat_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        assert screen.continue_prompt("话说")
        await wait_until(pilot, lambda: screen.panels["A"].text == "续写", "the continuation")
        await pilot.press("escape", "ctrl+t")
        assert screen.focused is screen.chat_panels["A"]
        assert "ctrl+r starts a new chat" in screen.chat_panels["A"].render().plain
        await say(pilot, screen, "hi", slots="A")
        await pilot.press("escape", "ctrl+r")
        assert screen.conversation.exchanges == []
        await say(pilot, screen, "anew", slots="A")
        assert requests_to(checkpoint_of(tmp_path, 5000))[-1]["messages"] == [{"role": "user", "content": "anew"}]
        await pilot.press("escape", "ctrl+t")
        assert not screen.chatting and screen.focused is screen.panels["A"]
        assert screen.panels["A"].prompt + screen.panels["A"].text == "话说续写"
        assert not screen.query_one("#system-row").display


async def test_copy_and_save_hold_the_conversation(tmp_path):
    app = chat_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chatting_side_by_side(pilot, tmp_path)
        await say(pilot, screen, "hi")
        await pilot.press("escape")
        screen.chat_panels["B"].focus()
        await pilot.press("ctrl+c")
        assert app.clipboard == "user: hi\n\nassistant: 1000 answers 1"
        await pilot.press("ctrl+y")
        assert app.clipboard == ("[A · tiny step 5,000 · numpy f32]\nuser: hi\n\nassistant: 5000 answers 1\n\n"
                                 "[B · tiny step 1,000 · numpy f32]\nuser: hi\n\nassistant: 1000 answers 1")
        await pilot.press("ctrl+s")
        saved = sorted((tmp_path / "out" / "playground").iterdir())
        assert len(saved) == 1 and messages(app)[-1] == f"Saved the session to out/playground/{saved[0].name}"
        text = saved[0].read_text(encoding="utf-8")
        settings = "--max-new-tokens 256 --temperature 0.8 --top-k 0 --top-p 1.0 --repetition-penalty 1.0 --seed 0"
        assert text.split("\n", 2)[2] == f"""## Chat: A · tiny step 5,000 · numpy f32

- checkpoint: `out/runs/tiny/checkpoints/step_0005000`
- settings (as `babyllama generate` takes them): `{settings}`

User:

```text
hi
```

Assistant (3 tokens · 30.0 tok/s · end of text):

```text
5000 answers 1
```

## Chat: B · tiny step 1,000 · numpy f32

- checkpoint: `out/runs/tiny/checkpoints/step_0001000`
- settings (as `babyllama generate` takes them): `{settings}`

User:

```text
hi
```

Assistant (3 tokens · 30.0 tok/s · end of text):

```text
1000 answers 1
```
"""


async def test_a_checkpoint_loaded_in_place_of_another_answers_from_its_own_first_turn(tmp_path):
    app = chat_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await chatting_side_by_side(pilot, tmp_path)
        await say(pilot, screen, "hi")
        screen.load("B", list_checkpoints(tmp_path)[0])
        await wait_until(pilot, lambda: state_of(screen, "B") == "ready", "the new B")
        assert screen.conversation.answered("B") == []
        await say(pilot, screen, "again")
        assert requests_to(checkpoint_of(tmp_path, 5000))[-1]["messages"] == [{"role": "user", "content": "again"}]


def test_playground_chat_snapshot(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)
    app = chat_app(Path("."), tmp_path)

    async def run_before(pilot) -> None:
        screen = await chatting_side_by_side(pilot, Path("."))
        screen.system_input.value = "你是一个乐于助人的助手。"
        await say(pilot, screen, "hi")
        await say(pilot, screen, "again")
        await pilot.press("escape")
        await pilot.pause(0.3)  # the panels' last throttled repaint
        await wait_until(pilot, lambda: footer_settled(screen), "the footer")

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


# ---------------------------------------------------------------------------------------
# With real servers

LONG = dataclasses.replace(TINY, max_seq_len=1024)


@pytest.mark.slow
@pytest.mark.skipif(serve.PROTOCOL_VERSION < 2, reason="needs `babyllama serve` protocol 2 (messages requests)")
async def test_real_servers_each_answer_from_the_conversation_with_their_own_answers(tmp_path, sp_tokenizer):
    """The server's prompt_tokens equal the ids our chat template gives what the panel sent:
    the system prompt, the shared user turns and that panel's own answers."""
    from babyllama.chat_template import template_for

    run = RunDir(tmp_path / "out" / "runs" / "tiny")
    run.create({"model": dataclasses.asdict(LONG), "train": {}})
    for seed, step in enumerate(STEPS, start=1):
        write_checkpoint(run.checkpoint_path(step), LONG, sp_tokenizer, seed=seed)
    run.latest_path.write_text(f"{run.checkpoint_path(STEPS[-1]).name}\n")
    template = template_for(sp_tokenizer)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A", limit=120)
        screen.load("B", list_checkpoints(tmp_path)[1])
        await wait_until(pilot, lambda: state_of(screen, "B") == "ready", "B", limit=120)
        assert screen.engines["A"].chat_problem is None and screen.engines["B"].chat_problem is None
        await pilot.press("ctrl+t")
        screen.form.inputs["max_new_tokens"].value = "24"
        screen.form.inputs["temperature"].value = "1"
        screen.system_input.value = "你是助手。"
        await pilot.pause()
        await say(pilot, screen, "曹操是谁")
        await say(pilot, screen, "刘备呢")
        first = screen.conversation.exchanges[0].answers
        assert first["A"].text != first["B"].text, "two different models, so a panel sending the other's answer shows"
        for slot in "AB":
            sent = screen.conversation.messages(slot)
            own = screen.conversation.exchanges[0].answers[slot].text
            assert sent[2] == {"role": "assistant", "content": own}
            assert screen.engines[slot].last_done["prompt_tokens"] == len(template.prompt(sent))
