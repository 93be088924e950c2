"""The Playground: ServeClient against real `babyllama serve` processes, the screen under Pilot
streaming from them, and a snapshot at 80x24 fed by a stand-in server with fixed output."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_generate import TINY, write_checkpoint
from textual.command import CommandList, CommandPalette
from textual.widgets import Input

from babyllama.generate import SEED_PROMPTS
from babyllama.runs import RunDir
from babyllama_tui import app as app_module
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.playground.backends import LLAMACPP, NUMPY
from babyllama_tui.playground.serve_client import ServeClient, ServeError
from babyllama_tui.playground.session import PanelRecord, session_markdown
from babyllama_tui.screens.playground import PlaygroundScreen, token_count
from babyllama_tui.widgets.checkpoint_picker import CheckpointPicker, list_checkpoints
from babyllama_tui.widgets.continuation_panel import printable
from babyllama_tui.widgets.sampling_form import check_value, default_params

from pilot_wait import footer_settled, wait_until

# A long context, so a generation runs long enough (seconds, at a thousand tokens a second) to be
# stopped in the middle.
LONG = dataclasses.replace(TINY, max_seq_len=8192)
MANY = 8000
WAIT_LIMIT_S = 60.0
STEPS = (1000, 5000)


@pytest.fixture(scope="module")
def project(tmp_path_factory, sp_tokenizer) -> Path:
    """A project folder with one run that saved two steps of a tiny random model (different seeds)."""
    root = tmp_path_factory.mktemp("playground")
    run = RunDir(root / "out" / "runs" / "tiny")
    run.create({"model": dataclasses.asdict(LONG), "train": {}})
    for seed, step in enumerate(STEPS, start=1):
        write_checkpoint(run.checkpoint_path(step), LONG, sp_tokenizer, seed=seed)
    run.latest_path.write_text(f"{run.checkpoint_path(STEPS[-1]).name}\n")
    return root


@pytest.fixture(scope="module")
def short_project(tmp_path_factory, sp_tokenizer) -> Path:
    """A project whose one checkpoint has TINY's 64-token context, which a generation fills in a blink."""
    root = tmp_path_factory.mktemp("short")
    run = RunDir(root / "out" / "runs" / "short")
    run.create({"model": dataclasses.asdict(TINY), "train": {}})
    write_checkpoint(run.checkpoint_path(10), TINY, sp_tokenizer, seed=1)
    run.latest_path.write_text(f"{run.checkpoint_path(10).name}\n")
    return root


def checkpoint(project: Path, step: int) -> Path:
    return RunDir(project / "out" / "runs" / "tiny").checkpoint_path(step)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# ServeClient alone


async def next_event(events) -> dict:
    return await asyncio.wait_for(anext(events), WAIT_LIMIT_S)


async def until_done(events, request_id: int) -> tuple[str, dict]:
    text = ""
    while True:
        event = await next_event(events)
        assert event.get("id") == request_id, event
        if event["event"] == "done":
            return text, event
        assert event["event"] == "token", event
        text += event["text"]


async def started(path: Path, **kwargs) -> tuple[ServeClient, object]:
    client = ServeClient(path, **kwargs)
    await client.start()
    events = client.events()
    ready = await next_event(events)
    assert ready["event"] == "ready", ready
    return client, events


async def test_client_streams_a_generation_then_shuts_the_server_down(project):
    client, events = await started(checkpoint(project, 1000))
    assert client.ready["checkpoint"] == str(checkpoint(project, 1000))
    request = client.generate("话说天下大势", {"temperature": 0, "max_new_tokens": 6})
    text, done = await until_done(events, request)
    assert done["stopped"] in ("eos", "length") and 1 <= done["tokens"] <= 6
    assert text
    pid = client.pid
    assert await client.close() == 0
    ended = await next_event(events)
    assert (ended["event"], ended["returncode"]) == ("exit", 0)
    assert gone(pid)
    with pytest.raises(ServeError):
        client.generate("话说", {})


async def test_client_cancel_stops_a_generation_in_the_middle(project):
    client, events = await started(checkpoint(project, 1000))
    try:
        request = client.generate("话说", {"temperature": 0, "max_new_tokens": MANY})
        first = await next_event(events)
        assert first["event"] == "token" and first["id"] == request
        client.cancel(request)
        _, done = await until_done(events, request)
        assert done["stopped"] == "cancelled" and done["tokens"] < MANY
    finally:
        await client.close()


async def test_client_passes_on_a_refused_request_and_the_server_keeps_serving(project):
    client, events = await started(checkpoint(project, 1000))
    try:
        refused = client.generate("话说", {"temperature": -1})
        error = await next_event(events)
        assert error["event"] == "error" and error["id"] == refused and "temperature" in error["message"]
        request = client.generate("话说", {"temperature": 0, "max_new_tokens": 2})
        _, done = await until_done(events, request)
        assert done["tokens"] == 2
    finally:
        await client.close()


MUMBLING_SERVER = '''
import sys
print("Loading weights... not a protocol line", flush=True)
print('{"event": "ready", "protocol": 1}', flush=True)
print('[1, 2, 3]', flush=True)
sys.stderr.write("Traceback: something broke\\n")
sys.exit(3)
'''

DEAF_SERVER = '''
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print('{"event": "ready", "protocol": 1}', flush=True)
while True:
    time.sleep(1)
'''


def stand_in(tmp_path: Path, name: str, source: str) -> tuple[str, ...]:
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    return (str(script),)


async def test_client_reports_malformed_output_and_how_the_server_ended(tmp_path):
    client = ServeClient(tmp_path, program=stand_in(tmp_path, "mumbling", MUMBLING_SERVER))
    await client.start()
    events = [event async for event in client.events()]
    assert [e["event"] for e in events] == ["error", "ready", "error", "exit"]
    assert "not a protocol event: Loading weights" in events[0]["message"]
    assert "[1, 2, 3]" in events[2]["message"]
    assert events[3]["returncode"] == 3 and "something broke" in events[3]["stderr"]
    with pytest.raises(ServeError):
        client.cancel(1)


async def test_close_kills_a_server_that_does_not_shut_down(tmp_path):
    client = ServeClient(tmp_path, program=stand_in(tmp_path, "deaf", DEAF_SERVER))
    await client.start()
    events = client.events()
    assert (await next_event(events))["event"] == "ready"
    pid = client.pid
    assert await client.close(timeout=0.5) == -signal.SIGKILL
    assert gone(pid)


CLIENT_THEN_EXIT = '''
import asyncio, sys
from pathlib import Path
from babyllama_tui.playground.serve_client import SERVE_PROGRAM, ServeClient

async def main(checkpoint, how, *program):
    client = ServeClient(Path(checkpoint), program=program or SERVE_PROGRAM)
    await client.start()
    async for event in client.events():
        if event["event"] == "ready":
            print(client.pid, flush=True)
            if how == "hang":
                await asyncio.sleep(3600)
            return

asyncio.run(main(*sys.argv[1:]))
'''


def test_a_server_left_running_is_killed_when_the_app_exits(tmp_path):
    """Even a server that would never exit by itself (deaf to end of input and SIGTERM)."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT_THEN_EXIT)
    app = subprocess.Popen([sys.executable, str(script), str(tmp_path), "exit", *stand_in(tmp_path, "deaf", DEAF_SERVER)],
                           stdout=subprocess.PIPE, text=True)
    server_pid = int(app.stdout.readline())
    try:
        assert app.wait(timeout=WAIT_LIMIT_S) == 0
        wait_for(lambda: gone(server_pid), "the server to be killed")
    finally:
        if not gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)
        app.stdout.close()


def test_a_server_whose_app_was_killed_exits_at_end_of_input(project, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CLIENT_THEN_EXIT)
    app = subprocess.Popen([sys.executable, str(script), str(checkpoint(project, 1000)), "hang"],
                           stdout=subprocess.PIPE, text=True)
    server_pid = int(app.stdout.readline())
    try:
        assert not gone(server_pid)
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=WAIT_LIMIT_S)
        wait_for(lambda: gone(server_pid), "the server to exit")
    finally:
        if app.poll() is None:
            app.kill()
        app.stdout.close()


# ---------------------------------------------------------------------------------------
# The screen under Pilot, with real servers


async def open_playground(pilot) -> PlaygroundScreen:
    await pilot.press("4")
    screen = pilot.app.screen
    assert isinstance(screen, PlaygroundScreen)
    return screen


def state_of(screen: PlaygroundScreen, slot: str) -> str | None:
    engine = screen.engines[slot]
    return engine.state if engine is not None else None


def finished(screen: PlaygroundScreen, slot: str) -> bool:
    engine = screen.engines[slot]
    return engine is not None and engine.request is None and engine.last_done is not None


async def set_field(pilot, screen: PlaygroundScreen, key: str, value: str) -> None:
    field = screen.form.inputs[key]
    field.focus()
    field.value = value
    await pilot.pause()


@pytest.mark.slow
async def test_a_prompt_streams_from_the_newest_checkpoint_and_is_kept_in_the_history(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        engine = screen.engines["A"]
        assert engine.choice.path == checkpoint(project, 5000)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "the checkpoint to load")
        await set_field(pilot, screen, "max_new_tokens", "12")
        screen.prompt_input.focus()
        await pilot.press(*"曹操")
        await pilot.press("enter")
        panel = screen.panels["A"]
        await wait_until(pilot, lambda: finished(screen, "A"), "the generation")
        assert panel.prompt == "曹操" and panel.text
        assert engine.last_done["tokens"] <= 12
        assert "tokens" in str(panel.border_subtitle) and "tok/s" in str(panel.border_subtitle)

        await pilot.press("f2")
        await wait_until(pilot, lambda: finished(screen, "A"), "the seed prompt's generation")
        assert panel.prompt == "请你讲一个童话故事："
        screen.prompt_input.value = "draft"
        await pilot.press("up")
        assert screen.prompt_input.value == "请你讲一个童话故事："
        await pilot.press("up")
        assert screen.prompt_input.value == "曹操"
        await pilot.press("down", "down")
        assert screen.prompt_input.value == "draft"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
async def test_checkpoints_run_on_the_fastest_backend_and_ctrl_g_moves_them_to_the_next(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        assert [b.label for b in screen.backends] == ["llama.cpp q8_0", "llama.cpp f16", "llama.cpp f32", "numpy f32"]
        for label in ("llama.cpp q8_0", "llama.cpp f16", "llama.cpp f32", "numpy f32"):
            # What the title says once loaded is what the server reports it runs on.
            await wait_until(pilot, lambda: state_of(screen, "A") == "ready" and screen.engines["A"].served == label,
                             f"the checkpoint to load on {label}")
            assert screen.panels["A"].border_title == f"A · tiny step 5,000 · {label}"
            await set_field(pilot, screen, "max_new_tokens", "4")
            await pilot.press("f1")
            await wait_until(pilot, lambda: finished(screen, "A"), f"a continuation on {label}")
            assert screen.engines["A"].last_done["tokens"] == 4
            await pilot.press("escape", "ctrl+g")
        assert screen.backend.label == "llama.cpp q8_0"
        ckpt = checkpoint(project, 5000)
        assert {"llamacpp-q8_0.gguf", "llamacpp-f16.gguf", "llamacpp-f32.gguf"} <= {p.name for p in ckpt.iterdir()}


async def test_with_numpy_alone_ctrl_g_says_how_to_add_llamacpp(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "the stand-in to load")
        await pilot.press("ctrl+g")
        assert messages(app)[-1] == ('Checkpoints run on numpy f32 (the only backend here: pip install -e ".[llamacpp]" '
                                     "adds llama.cpp); reloading")
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "the stand-in to load again")
        assert screen.panels["A"].border_title == "A · tiny step 5,000 · numpy f32"


@pytest.mark.slow
async def test_escape_stops_a_generation_mid_way(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await set_field(pilot, screen, "max_new_tokens", str(MANY))
        await set_field(pilot, screen, "temperature", "0")
        screen.prompt_input.focus()
        await pilot.press(*"话说", "enter")
        engine = screen.engines["A"]
        await wait_until(pilot, lambda: engine.tokens >= 1, "the first tokens")
        assert screen.generating
        await pilot.press("escape")
        await wait_until(pilot, lambda: finished(screen, "A"), "the stop")
        assert engine.last_done["stopped"] == "cancelled" and engine.last_done["tokens"] < MANY
        assert "(stopped)" in screen.panels["A"].render().plain
        assert "stopped" in str(screen.panels["A"].border_subtitle)


async def test_a_full_context_is_said_plainly_and_max_new_tokens_shows_the_context(short_project):
    app = BabyLlamaApp(root=short_project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "the checkpoint to load")
        assert screen.form.contexts == (64,)
        assert screen.form.context_labels[0].display and "(ctx 64)" in str(screen.form.context_labels[0].render())
        await set_field(pilot, screen, "max_new_tokens", "1000")
        assert "more than the 64-token context holds" in str(screen.form.note.render())
        assert screen.form.note.has_class("-warning") and screen.form.params() is not None
        await set_field(pilot, screen, "max_new_tokens", "20")
        assert "at most this many; the 64-token context" in str(screen.form.note.render())
        await set_field(pilot, screen, "max_new_tokens", "1000")
        await set_field(pilot, screen, "temperature", "0")
        await pilot.press("f1")
        await wait_until(pilot, lambda: finished(screen, "A"), "the generation")
        done = screen.engines["A"].last_done
        assert done["stopped"] == "context" and done["prompt_tokens"] + done["tokens"] == 64
        assert str(screen.panels["A"].border_subtitle).endswith("· context full (64)")
        assert "(stopped: the prompt and the continuation fill the model's 64-token context)" in \
            " ".join(note.plain for note in screen.panels["A"].notes)


async def test_the_live_count_is_of_tokens_not_of_pieces(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        assert screen.continue_prompt(HOLD)
        engine = screen.engines["A"]
        await wait_until(pilot, lambda: engine.tokens == 2 * HELD_PIECES, "the held pieces")
        await wait_until(pilot, lambda: f"▶ {2 * HELD_PIECES} tokens ·" in str(screen.panels["A"].border_subtitle),
                         "the live count")
        await pilot.press("escape")
        await wait_until(pilot, lambda: finished(screen, "A"), "the stop")


def test_a_server_that_does_not_count_tokens_is_counted_one_a_piece():
    assert token_count({"event": "token", "text": "字"}, 4) == 5
    assert token_count({"event": "token", "text": "字", "tokens": 9}, 4) == 9


async def test_a_bad_parameter_is_refused_with_a_message(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await set_field(pilot, screen, "temperature", "-1")
        field = screen.form.inputs["temperature"]
        assert field.has_class("-invalid")
        assert "temperature must be a number in [0.0, inf]" in str(screen.form.note.render())
        await set_field(pilot, screen, "top_k", "many")
        assert "top-k: many is not a whole number" in str(screen.form.note.render())
        screen.prompt_input.focus()
        await pilot.press("enter")
        assert screen.engines["A"].request is None
        assert any("Not started: temperature must be" in n.message for n in app._notifications)
        assert screen.focused is field

        await set_field(pilot, screen, "temperature", "0.5")
        await set_field(pilot, screen, "top_k", "5")
        assert not field.has_class("-invalid") and screen.form.params()["top_k"] == 5


@pytest.mark.slow
async def test_side_by_side_streams_the_same_prompt_on_two_checkpoints(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointPicker), "the picker")
        await pilot.press("enter")  # the highlighted one: the first that is not A's
        await wait_until(pilot, lambda: screen.engines["B"] is not None, "checkpoint B")
        assert screen.engines["B"].choice.path == checkpoint(project, 1000)
        assert screen.panels["B"].display
        await set_field(pilot, screen, "max_new_tokens", "300")
        screen.prompt_input.focus()
        await pilot.press(*"话说", "enter")
        await wait_until(pilot, lambda: all(screen.engines[s].tokens >= 3 for s in "AB"), "both to stream")
        await wait_until(pilot, lambda: finished(screen, "A") and finished(screen, "B"), "both generations")
        for slot in "AB":
            assert screen.panels[slot].prompt == "话说" and screen.panels[slot].text

        pid_b = screen.engines["B"].client.pid
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointPicker), "the picker")
        await pilot.press("up", "up", "enter")  # from B's checkpoint up to "no comparison"
        await wait_until(pilot, lambda: screen.engines["B"] is None and gone(pid_b), "B's server to shut down")
        assert not screen.panels["B"].display


async def test_a_folder_that_does_not_load_shows_the_servers_error(project, tmp_path):
    export = tmp_path / "exports" / "not-really"
    export.mkdir(parents=True)
    (export / "config.json").write_text('{"model_type": "llama"}')
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointPicker), "the picker")
        app.screen.query_one("#checkpoint-filter", Input).value = str(export)
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(pilot, lambda: state_of(screen, "A") in ("failed", "exited"), "the failure")
        shown = " ".join(note.plain for note in screen.panels["A"].notes)
        assert shown.startswith("did not load:") and "not-really" in shown
        assert "failed" in str(screen.panels["A"].border_subtitle)


async def test_a_server_that_dies_is_shown_as_ended(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "the checkpoint to load")
        os.kill(screen.engines["A"].client.pid, signal.SIGKILL)
        await wait_until(pilot, lambda: state_of(screen, "A") == "exited", "the exit")
        assert any("serve exited with status -9" in note.plain for note in screen.panels["A"].notes)
        assert "exited" in str(screen.panels["A"].border_subtitle)
        assert not screen.continue_prompt("话说")


@pytest.mark.slow
async def test_quitting_shuts_every_server_down_even_mid_generation(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        screen.load("B", list_checkpoints(project)[1])
        await wait_until(pilot, lambda: state_of(screen, "A") == state_of(screen, "B") == "ready", "both servers")
        await set_field(pilot, screen, "max_new_tokens", str(MANY))
        assert screen.continue_prompt("话说")
        await wait_until(pilot, lambda: all(screen.engines[s].tokens >= 1 for s in "AB"), "both to stream")
        clients = [screen.engines[slot].client for slot in "AB"]
        await pilot.press("ctrl+q")
    # Shut down, not killed: each stopped its generation and exited when asked.
    assert [client.process.returncode for client in clients] == [0, 0]
    for client in clients:
        assert gone(client.pid)


async def test_typing_goes_to_the_prompt_and_the_number_keys_still_switch_screens(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        assert screen.engines["A"] is None and "No checkpoint is loaded" in screen.panels["A"].hint
        assert not any(label.display for label in screen.form.context_labels)
        await pilot.press("x", "y")
        assert screen.prompt_input.value == "xy" and screen.focused is screen.prompt_input
        await pilot.press("enter")
        assert any("Load a checkpoint first" in n.message for n in app._notifications)
        await pilot.press("escape")
        assert screen.focused is screen.panels["A"]
        await pilot.press("2")
        assert not isinstance(app.screen, PlaygroundScreen)


def palette_hits(app) -> int:
    return app.screen.query_one(CommandList).option_count if isinstance(app.screen, CommandPalette) else 0


@pytest.mark.slow
async def test_the_palette_loads_a_checkpoint_to_compare_and_opens_the_picker(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await pilot.press("ctrl+p", *"Compare with tiny step 1,000")
        await wait_until(pilot, lambda: palette_hits(app), "the palette's hits")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.engines["B"] is not None, "checkpoint B")
        assert screen.engines["B"].choice.path == checkpoint(project, 1000)
        await pilot.press("ctrl+p", *"Checkpoint")
        await wait_until(pilot, lambda: palette_hits(app), "the palette's hits")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointPicker), "the picker")


async def test_the_palette_sets_each_sampling_setting(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        for words, field_id in [("temperature", "sampling-temperature"), ("repetition penalty",
                                                                            "sampling-repetition_penalty")]:
            await pilot.press("ctrl+p", *f"Set the {words}")
            await wait_until(pilot, lambda: palette_hits(app), "the palette's hits")
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen is screen and app.focused is not None
                             and app.focused.id == field_id, f"the {words} field focused")


async def test_the_panel_follows_the_end_and_scrolls_back_when_focused(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        panel = screen.panels["A"]
        panel.start("第一回")
        panel.add("".join(f"第{n}行\n" for n in range(1, 101)))
        await wait_until(pilot, lambda: "第100行" in panel.render().plain, "the end of the text")
        assert "第1行" not in panel.render().plain
        assert screen.focused is panel
        await pilot.press("home")
        assert panel.render().plain.startswith("第一回第1行")
        await pilot.press("end")
        assert "第100行" in panel.render().plain


def test_control_characters_a_model_writes_never_reach_the_terminal():
    """A random model writes ESC and friends, which would start escape sequences in the terminal."""
    assert printable("a\x1b[2Jb\tc\r\nd\x85") == "a\ufffd[2Jb    c\nd\ufffd"


def test_checkpoints_are_listed_newest_run_first_then_exports(tmp_path):
    root = tmp_path
    old, new = RunDir(root / "out" / "runs" / "old"), RunDir(root / "out" / "runs" / "new")
    for run, steps, saved in ((old, (10, 20), 1_700_000_000), (new, (5,), 1_700_000_100)):
        for step in steps:
            run.checkpoint_path(step).mkdir(parents=True)
            os.utime(run.checkpoint_path(step), (saved, saved))
    old.latest_path.write_text("step_0000010\n")
    export = root / "out" / "exports" / "hf-tiny"
    export.mkdir(parents=True)
    (export / "config.json").write_text('{"model_type": "llama"}')
    (root / "out" / "tokenizers" / "x").mkdir(parents=True)
    listed = [(c.label, c.detail) for c in list_checkpoints(root)]
    assert listed == [("new step 5", "latest"), ("old step 20", ""), ("old step 10", "latest"),
                      ("out/exports/hf-tiny", "hf export")]


# ---------------------------------------------------------------------------------------
# Snapshot, with a stand-in server whose output is fixed

# The stand-in server's prompt that streams HELD_PIECES pieces of two tokens each, then waits for a cancel.
HOLD = "hold"
HELD_PIECES = 10
STANDIN_SERVER = '''
import json, sys
checkpoint = sys.argv[sys.argv.index("--ckpt") + 1]
older = checkpoint.endswith("1000")
def emit(**event):
    print(json.dumps(event, ensure_ascii=False), flush=True)
emit(event="ready", protocol=1, checkpoint=checkpoint, parameters=226624, model={"max_seq_len": 256}, defaults={})
held = None
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "shutdown":
        break
    if request["op"] == "cancel" and request["id"] == held:
        emit(event="done", id=held, tokens=%(held)d * 2, prompt_tokens=1, tokens_per_s=1.0, ttft_ms=1.0,
             stopped="cancelled")
    if request["op"] == "generate" and request["prompt"] == %(hold)r:
        held = request["id"]
        for n in range(1, %(held)d + 1):
            emit(event="token", id=held, text="字", tokens=2 * n)
    elif request["op"] == "generate":
        text = "了王子的玩耍，国王一个人说：“你好。”我们到了下的，把她" if older else \\
            "一个来自遥远星球的小王子，他离开了自己的玫瑰，去别的星球旅行。他遇见了国王、商人和点灯人，最后来到地球。"
        pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
        for n, piece in enumerate(pieces, 1):
            emit(event="token", id=request["id"], text=piece, tokens=n)
        emit(event="done", id=request["id"], tokens=247 if older else len(pieces), prompt_tokens=9,
             tokens_per_s=61.5 if older else 58.2, ttft_ms=4.0, stopped="context" if older else "eos")
''' % {"hold": HOLD, "held": HELD_PIECES}


def stand_in_app(root: Path, tmp_path: Path, backends=(NUMPY,)) -> BabyLlamaApp:
    """The app, its playground serving with STANDIN_SERVER, over a run that saved STEPS (empty folders);
    the stand-in takes `backends`' flags and ignores them."""
    server = stand_in(tmp_path, "standin_server", STANDIN_SERVER)
    run = RunDir(root / "out" / "runs" / "tiny")
    for step in STEPS:
        run.checkpoint_path(step).mkdir(parents=True)
    run.latest_path.write_text(f"{run.checkpoint_path(STEPS[-1]).name}\n")

    class StandInApp(BabyLlamaApp):
        CSS_PATH = Path(app_module.__file__).with_name("app.tcss")
        MODES = {**BabyLlamaApp.MODES, "playground": lambda: PlaygroundScreen(serve_program=server,
                                                                                    backends=backends)}

    app = StandInApp(root=root)
    app.animation_level = "none"
    return app


async def test_wide_the_session_prompts_are_listed_and_recalled(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await open_playground(pilot)
        assert screen.history_list.display and screen.has_class("-wide")
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        await pilot.press("f1")
        await wait_until(pilot, lambda: finished(screen, "A"), "the first continuation")
        await pilot.press("f3")
        await wait_until(pilot, lambda: finished(screen, "A"), "the second continuation")
        shown = [str(screen.history_list.get_option_at_index(i).prompt) for i in range(screen.history_list.option_count)]
        assert shown == ["《小王子》是一本畅销童话书，它讲述了：", "床前明月光，疑是地上霜。举头望明月，"]
        screen.history_list.focus()
        await pilot.press("down", "enter")
        assert screen.prompt_input.value == "床前明月光，疑是地上霜。举头望明月，"
        assert screen.focused is screen.prompt_input


# The stand-in's continuations of F3's prompt by step 5,000 (A) and step 1,000 (B).
SEED_3 = SEED_PROMPTS[2]
NEWER = "一个来自遥远星球的小王子，他离开了自己的玫瑰，去别的星球旅行。他遇见了国王、商人和点灯人，最后来到地球。"
OLDER = "了王子的玩耍，国王一个人说：“你好。”我们到了下的，把她"


async def side_by_side(pilot, root: Path) -> PlaygroundScreen:
    """The playground with step 5,000 in A and step 1,000 in B, both done with F3's prompt."""
    screen = await open_playground(pilot)
    await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
    screen.load("B", list_checkpoints(root)[1])
    await wait_until(pilot, lambda: state_of(screen, "B") == "ready", "B")
    await pilot.press("f3")
    await wait_until(pilot, lambda: finished(screen, "A") and finished(screen, "B"), "both continuations")
    return screen


def messages(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_ctrl_c_copies_the_focused_panel_and_ctrl_y_every_panel(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await side_by_side(pilot, tmp_path)
        screen.panels["B"].focus()
        await pilot.press("ctrl+c")
        assert app.clipboard == SEED_3 + OLDER
        assert messages(app)[-1] == f"Copied {len(SEED_3 + OLDER)} characters from B · tiny step 1,000 · numpy f32"
        assert not any("quit" in message for message in messages(app))

        await pilot.press("ctrl+y")
        both = f"[A · tiny step 5,000 · numpy f32]\n{SEED_3}{NEWER}\n\n[B · tiny step 1,000 · numpy f32]\n{SEED_3}{OLDER}"
        assert app.clipboard == both
        assert messages(app)[-1] == f"Copied {len(both)} characters from A · tiny step 5,000 · numpy f32 and B · tiny step 1,000 · numpy f32"

        # In the prompt field, with nothing selected, ctrl+c copies the panels too.
        app.copy_to_clipboard("")
        screen.prompt_input.focus()
        await pilot.press("ctrl+c")
        assert app.clipboard == both


async def test_ctrl_c_in_a_panel_with_no_continuation_says_so_and_does_not_offer_to_quit(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        assert screen.focused is screen.panels["A"]
        await pilot.press("ctrl+c")
        assert app.clipboard == ""
        assert messages(app) == ["Nothing to copy yet: A holds no continuation"]


async def test_ctrl_s_saves_the_session_as_markdown_under_out_playground(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await side_by_side(pilot, tmp_path)
        await set_field(pilot, screen, "seed", "7")  # after the generation: the file keeps the settings it used
        await pilot.press("escape", "ctrl+s")
        saved = sorted((tmp_path / "out" / "playground").iterdir())
        assert len(saved) == 1 and saved[0].suffix == ".md"
        assert messages(app)[-1] == f"Saved the session to out/playground/{saved[0].name}"
        text = saved[0].read_text(encoding="utf-8")
        title, rest = text.split("\n", 1)
        assert title.startswith("# Playground session, 20")
        settings = "--max-new-tokens 256 --temperature 0.8 --top-k 0 --top-p 1.0 --repetition-penalty 1.0 --seed 0"
        assert rest == f"""
Settings (as `babyllama generate` takes them): `{settings}`

Prompt:

```text
{SEED_3}
```

## A · tiny step 5,000 · numpy f32

- checkpoint: `out/runs/tiny/checkpoints/step_0005000`
- {len(range(0, len(NEWER), 3))} tokens · 58.2 tok/s · end of text

```text
{NEWER}
```

## B · tiny step 1,000 · numpy f32

- checkpoint: `out/runs/tiny/checkpoints/step_0001000`
- 247 tokens · 61.5 tok/s · context full (256)

```text
{OLDER}
```
"""
        await pilot.press("ctrl+s")
        assert len(list((tmp_path / "out" / "playground").iterdir())) == 2, "a second save never overwrites the first"


async def test_a_saved_session_names_the_backend_in_its_title_and_in_generates_flags(tmp_path):
    app = stand_in_app(tmp_path, tmp_path, backends=LLAMACPP)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        await pilot.press("f3")
        await wait_until(pilot, lambda: finished(screen, "A"), "the continuation")
        await pilot.press("ctrl+s")
        text = next((tmp_path / "out" / "playground").iterdir()).read_text(encoding="utf-8")
        assert "--seed 0 --backend llamacpp --precision q8_0`" in text
        assert "## A · tiny step 5,000 · llama.cpp q8_0" in text


async def test_a_session_that_cannot_be_written_is_said_in_one_line(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    (tmp_path / "out" / "playground").write_text("a file where the folder would go")
    async with app.run_test(size=(80, 24)) as pilot:
        await side_by_side(pilot, tmp_path)
        await pilot.press("ctrl+s")
        assert messages(app)[-1] == f"Not saved: File exists: {tmp_path / 'out' / 'playground'}"


def test_panels_with_different_prompts_or_settings_each_show_their_own_and_fences_outlast_backticks():
    settings = {"temperature": 0.0, "seed": 1}
    a = PanelRecord("A · x", "a", "prompt", settings, "some ``` code", "3 tokens")
    b = dataclasses.replace(a, title="B · y", settings={**settings, "seed": 2}, continuation="plain")
    text = session_markdown([a, b], "now")
    assert "````text\nsome ``` code\n````" in text
    assert text.count("Prompt:") == 2
    assert text.index("`--temperature 0.0 --seed 1`") < text.index("## B · y") < text.index("`--temperature 0.0 --seed 2`")


async def test_the_rate_stays_in_a_narrow_panels_subtitle_after_a_generation(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await side_by_side(pilot, tmp_path)
        await pilot.press("f3")
        await wait_until(pilot, lambda: finished(screen, "A") and finished(screen, "B"), "both continuations again")
        assert str(screen.panels["A"].border_subtitle).endswith("tok · 58.2 tok/s · end")
        assert str(screen.panels["B"].border_subtitle) == "247 tok · 61.5 tok/s · ctx full"


async def test_choosing_the_loaded_checkpoint_again_keeps_its_panel(tmp_path):
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await side_by_side(pilot, tmp_path)
        engine = screen.engines["A"]
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointPicker), "the picker")
        await pilot.press("enter")  # the highlighted one: A's own
        await wait_until(pilot, lambda: app.screen is screen, "the playground")
        assert screen.engines["A"] is engine and engine.state == "ready"
        assert screen.panels["A"].text == NEWER
        assert messages(app)[-1] == "A has tiny step 5,000 loaded already"


async def test_a_sampling_error_stays_shown_until_it_is_fixed(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_playground(pilot)
        await set_field(pilot, screen, "temperature", "-1")
        await set_field(pilot, screen, "top_k", "5")
        assert screen.focused is screen.form.inputs["top_k"]
        assert "temperature must be a number in [0.0, inf]" in str(screen.form.note.render())
        await pilot.press("escape")
        assert "temperature must be" in str(screen.form.note.render())
        await set_field(pilot, screen, "temperature", "0.5")
        assert "temperature must be" not in str(screen.form.note.render())
        assert not screen.form.note.has_class("-error")


def test_playground_side_by_side_snapshot(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)
    app = stand_in_app(Path("."), tmp_path)

    async def run_before(pilot) -> None:
        screen = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(screen, "A") == "ready", "A")
        screen.load("B", list_checkpoints(Path("."))[1])
        await wait_until(pilot, lambda: state_of(screen, "B") == "ready", "B")
        await pilot.press("f3")
        await wait_until(pilot, lambda: finished(screen, "A") and finished(screen, "B"), "both continuations")
        await pilot.pause(0.3)  # the panels' last throttled repaint
        await wait_until(pilot, lambda: footer_settled(screen), "the footer")

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_a_sampling_error_names_only_the_wrong_field_by_its_label():
    defaults = default_params()
    assert check_value("top_p", "0", defaults) == (None, "top-p must be above 0, got 0")
    assert check_value("top_p", "1.1", defaults)[1] == "top-p must be a number in [0.0, 1.0], got 1.1"
    assert check_value("repetition_penalty", "x", defaults)[1] == "repetition penalty: x is not a number"
    assert check_value("top_p", "0.9", defaults) == (0.9, None)
