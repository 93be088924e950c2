"""The Train screen under Pilot, on a real token file made by `babyllama prepare`, with a real
stand-in trainer process: the form validates as typed, Launch starts a detached process with
the form's arguments, and the runs table stops and resumes runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from textual import events
from textual.widgets._footer import FooterKey

from babyllama.prepare import prepare
from babyllama.runs import ACTIVE_STATES, RunDir, kill_run, launch_detached, stop_run
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.resume import ResumeScreen
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.training.new_run import RunForm, check_form, find_token_files, preset_values
from babyllama_tui.widgets.new_run_form import NewRunForm
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import footer_settled, wait_until
from run_fixtures import read_argv, wait_for, write_standin


@pytest.fixture(scope="module")
def prepared_token_file(tmp_path_factory, sample_jsonl, sp_tokenizer_dir) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    chapters = sample_jsonl.read_text(encoding="utf-8").splitlines()[:4]
    corpus = folder / "sanguo.jsonl"
    corpus.write_text("\n".join(chapters) + "\n", encoding="utf-8")
    out = folder / "sanguo.bin"
    prepare([corpus], "auto", sp_tokenizer_dir, out, workers=1)
    return out


@pytest.fixture
def project(tmp_path, prepared_token_file) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for path in (prepared_token_file, prepared_token_file.with_name("sanguo.bin.json")):
        shutil.copy(path, data / path.name)
    return tmp_path


@pytest.fixture
def stop_afterwards():
    """Runs a test started; each is stopped at the end, whatever the test did (killed if it does not stop)."""
    runs: list[Path] = []
    yield runs
    for run in runs:
        if stop_run(run, wait=True, timeout=30).state in ACTIVE_STATES:
            kill_run(run)


async def open_form(pilot) -> tuple[TrainScreen, NewRunForm]:
    screen = pilot.app.screen
    assert isinstance(screen, TrainScreen)
    await wait_until(pilot, lambda: screen.form is not None and screen.form_check is not None, "the form")
    return screen, screen.form


async def retype(pilot, form: NewRunForm, key: str, text: str) -> None:
    editor = form.rows[key].editor
    editor.focus()
    editor.value = ""
    await pilot.press(*text)
    await pilot.pause()


def test_check_form_names_the_field_and_builds_the_trainer_arguments(project, sp_tokenizer_dir):
    entries = find_token_files(project / "data")
    assert [e.path.name for e in entries] == ["sanguo.bin"] and entries[0].token_file is not None
    token_file = entries[0].token_file
    fields = {k: (v if isinstance(v, bool) else "" if v is None else str(v)) for k, v in preset_values("tiny").items()}
    fields["model.vocab_size"] = "1000"
    form = RunForm([token_file], str(sp_tokenizer_dir), "tiny", fields, "first", "1")
    check = check_form(form, project / "out" / "runs", project)
    assert list(check.errors) == ["model.vocab_size"]
    assert "vocab_size 1,000 does not cover the token files' ids" in check.errors["model.vocab_size"]

    form.fields["model.vocab_size"] = str(token_file.vocab_size)
    form.fields["model.n_kv_heads"] = "3"
    form.fields["train.max_steps"] = "0"
    check = check_form(form, project / "out" / "runs", project)
    assert set(check.errors) == {"model.n_kv_heads", "train.max_steps"}
    assert check.plan is None

    form.fields["model.n_kv_heads"] = "2"
    form.fields["train.max_steps"] = "80"
    form.fields["train.learning_rate"] = "3e-4"
    form.workers = "0"
    check = check_form(form, project / "out" / "runs", project)
    assert list(check.errors) == ["workers"]
    form.workers = "2"
    check = check_form(form, project / "out" / "runs", project)
    assert check.errors == {}
    assert check.plan.workers == 2
    assert check.plan.args == [
        "--data", str(token_file.path.resolve()), "--tokenizer", str(sp_tokenizer_dir.resolve()), "--preset", "tiny",
        f"--vocab_size={token_file.vocab_size}", "--n_kv_heads=2", "--learning_rate=0.0003", "--max_steps=80",
    ]


async def test_a_bad_n_heads_is_named_beside_the_field_and_blocks_launch(project):
    app = BabyLlamaApp(root=project, train_program=[str(write_standin(project))])
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        assert screen.pane == "new", "with no runs yet the form comes first"
        assert form.token_file_list.selected == [project / "data" / "sanguo.bin"], "the only token file is chosen"
        assert screen.form_check.plan is not None
        assert not screen.query_one("#launch").disabled

        await retype(pilot, form, "model.n_heads", "5")
        await wait_until(pilot, lambda: form.rows["model.n_heads"].error is not None, "the error")
        row = form.rows["model.n_heads"]
        assert row.has_class("-invalid")
        assert str(row.note.render()) == "model.n_heads (5) must divide model.dim (256)"
        assert screen.query_one("#launch").disabled
        assert screen.check_action("launch", ()) is True, "ctrl+l stays live to say what to fix"
        form.rows["train.batch_size"].editor.focus()
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert not (project / "out" / "runs").exists()
        assert app.focused is row.editor, "the first field to fix is focused"
        assert any(n.message.startswith("cannot launch: fix n_heads. n_heads: model.n_heads (5) must divide")
                   for n in app._notifications)

        await retype(pilot, form, "model.n_heads", "8")
        await wait_until(pilot, lambda: form.rows["model.n_heads"].error is None, "the error to clear")
        assert str(row.note.render()) == "attention heads (query heads)"
        assert not screen.query_one("#launch").disabled


async def test_a_number_field_edits_at_its_cursor_and_keeps_typed_keys_from_the_screen(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        batch_size = form.rows["train.batch_size"].editor
        assert batch_size.value == "8"
        batch_size.focus()
        await pilot.press("backspace", "1", "x", "q", "2", "home", "3", "delete")
        assert batch_size.value == "32", "x and q are refused; home and delete work at the cursor"
        assert app.screen is screen, "1 and q were typed, not taken as the app's keys"
        await wait_until(pilot, lambda: screen.form_check.plan is not None
                         and screen.form_check.plan.train.batch_size == 32, "the check to read 32")

        learning_rate = form.rows["train.learning_rate"].editor
        learning_rate.focus()
        learning_rate.value = ""
        learning_rate.post_message(events.Paste("abc"))
        learning_rate.post_message(events.Paste("4e-4\nmore"))
        await pilot.pause()
        assert learning_rate.value == "4e-4"
        batch_size.focus()
        form.set_value("train.batch_size", 16)
        await pilot.press("backspace", "2")
        assert batch_size.value == "12", "a value set from outside leaves the cursor at its end"


async def test_the_summary_follows_the_model_size(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        summary = screen.query_one("#summary-text")
        before = str(summary.render())
        assert "tokens/step" in before and "2,048 tokens/step" in before
        await retype(pilot, form, "train.batch_size", "16")
        await wait_until(pilot, lambda: "4,096 tokens/step" in str(summary.render()), "the new tokens per step")


async def test_launch_starts_a_detached_trainer_and_shows_it_on_the_monitor(project, sp_tokenizer_dir, stop_afterwards):
    app = BabyLlamaApp(root=project, train_program=[str(write_standin(project))])
    async with app.run_test(size=(140, 45)) as pilot:
        screen, form = await open_form(pilot)
        await retype(pilot, form, "name", "first-run")
        await retype(pilot, form, "train.max_steps", "80")
        await wait_until(pilot, lambda: screen.form_check.plan is not None
                         and screen.form_check.plan.run.path.name == "first-run"
                         and screen.form_check.plan.train.max_steps == 80, "a valid form")
        await pilot.press("ctrl+l")
        run_path = project / "out" / "runs" / "first-run"
        stop_afterwards.append(run_path)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        assert app.current_run == run_path
        await wait_until(pilot, lambda: (run_path / "argv.json").exists(), "the trainer to start")
        token_file = project / "data" / "sanguo.bin"
        assert read_argv(run_path) == [
            "--run", str(run_path.resolve()), "--data", str(token_file.resolve()),
            "--tokenizer", str(sp_tokenizer_dir.resolve()), "--preset", "tiny", "--vocab_size=2000", "--max_steps=80",
        ]
        status = RunDir(run_path).read_status()
        assert status["launcher"] == "python" and status["world_size"] == 1
        wait_for(lambda: RunDir(run_path).state().state == "running", "the stand-in to claim the run")
        assert psutil.Process(status["launcher_pid"]).is_running()
        # The next run gets a fresh default name, and the taken one is refused.
        await pilot.press("2")
        assert form.name_input.value != "first-run"
        await retype(pilot, form, "name", "first-run")
        await wait_until(pilot, lambda: form.rows["name"].error is not None, "the name to be refused")
        assert "taken" in form.rows["name"].error


def running_standin(project: Path, name: str, stop_afterwards: list, *args: str,
                    clock=time.time) -> tuple[RunDir, int, BabyLlamaApp]:
    """A stand-in trainer launched detached as run `name` (with `args`) and seen running, and an app on the project."""
    script = write_standin(project)
    run = RunDir(project / "out" / "runs" / name)
    stop_afterwards.append(run.path)
    pid = launch_detached(run, ["--data", "x", *args], program=[str(script)])
    wait_for(lambda: run.state().state == "running" and run.read_status().get("pid") == pid, "the stand-in")
    return run, pid, BabyLlamaApp(root=project, train_program=[str(script)], clock=clock)


async def test_stop_from_the_table_stops_the_process(project, stop_afterwards):
    run, pid, app = running_standin(project, "standing", stop_afterwards)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(RunsTable)
        assert screen.pane == "runs"
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the table")
        assert table.highlighted_run.state == "running"
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: run.state().state == "stopped", "the run to stop")
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        await wait_until(pilot, lambda: table.highlighted_run.state == "stopped", "the table to say stopped")
        assert screen.check_action("stop_run", ()) is False
        # The stand-in saves no checkpoint, so there is nothing to resume from.
        assert screen.check_action("resume_run", ()) is False


async def test_a_stop_shows_stopping_with_its_time_and_offers_kill_after_30_s(project, stop_afterwards):
    later = [0.0]
    run, pid, app = running_standin(project, "compiling", stop_afterwards, "--slow-stop",
                                    clock=lambda: time.time() + later[0])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(RunsTable)

        def state_cell() -> str:
            return str(table.get_cell(str(run.path), "state"))

        await wait_until(pilot, lambda: table.highlighted_run is not None, "the table")
        await pilot.press("s")
        await pilot.press("y")
        # The trainer goes on with its step; the run says stopping from the moment the signal is sent.
        await wait_until(pilot, lambda: state_cell().startswith("stopping "), "the table to say stopping", limit=20)
        assert "K kills" not in state_cell()
        assert run.read_status()["state"] == "stopping"
        assert screen.check_action("stop_run", ()) is False, "a second stop would end it without its checkpoint"
        listed = subprocess.run([sys.executable, "-m", "babyllama", "runs"], cwd=project, capture_output=True,
                                text=True, timeout=60)
        assert listed.stdout.splitlines()[1].split()[1] == "stopping", listed.stdout

        later[0] = 31.0
        detail = screen.query_one("#run-detail")
        await wait_until(pilot, lambda: "stopping 3" in str(detail.render()) and "K kills" in str(detail.render()),
                         "the run's detail to offer kill")
        assert state_cell().startswith("stopping 3")
        assert table.get_cell(str(run.path), "state").style == "bold red"
        assert screen.check_action("kill_run", ())

        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        monitor = app.screen
        await wait_until(pilot, lambda: "K kills" in monitor.status_bar.render().plain, "the monitor to offer kill")
        assert "stopping 3" in monitor.status_bar.render().plain
        assert monitor.check_action("kill_run", ()) and not monitor.check_action("stop_run", ())
        await wait_until(pilot, lambda: footer_settled(monitor), "the footer")
        assert "kill_run" in {key.action for key in monitor.query(FooterKey)}
        await pilot.press("K")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: run.state().state == "stopped", "the kill")
        assert run.read_status()["error"].startswith("killed with SIGKILL")
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        await wait_until(pilot, lambda: monitor.status_bar.status.state == "stopped", "the monitor to say stopped")
        assert "K kills" not in monitor.status_bar.render().plain


async def test_kill_from_the_table_ends_the_process_after_asking(project, stop_afterwards):
    run, pid, app = running_standin(project, "stuck", stop_afterwards)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the table")
        await pilot.press("K")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: run.state().state not in ("running", "stopping"), "the run to end")
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        await wait_until(pilot, lambda: any("kill" in str(n.message).lower() for n in app._notifications),
                         "the kill's report")


async def test_resume_from_the_table_continues_from_the_checkpoint(project, stop_afterwards):
    script = write_standin(project)
    run = RunDir(project / "out" / "runs" / "paused")
    run.create({"model": {}, "train": {"max_steps": 100}})
    temp = run.checkpoint_temp_path(40)
    temp.mkdir()
    run.publish_checkpoint(temp, 40)
    run.write_status(state="stopped", step=40, max_steps=100, world_size=1, started=time.time() - 60)
    stop_afterwards.append(run.path)
    app = BabyLlamaApp(root=project, train_program=[str(script)])
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the table")
        await pilot.press("r")
        assert isinstance(app.screen, ResumeScreen)
        max_steps = app.screen.query_one("#resume-max-steps")
        max_steps.focus()
        max_steps.value = ""
        await pilot.press(*"200", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        await wait_until(pilot, lambda: (run.path / "argv.json").exists(), "the trainer to start")
        assert read_argv(run.path) == ["--run", str(run.path.resolve()), "--resume", "--max_steps=200"]


async def test_a_run_that_cannot_fit_is_launched_only_when_asked_to(project, stop_afterwards):
    app = BabyLlamaApp(root=project, train_program=[str(write_standin(project))])
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        form.preset.value = "1b"
        await retype(pilot, form, "name", "huge")
        # The 1b preset at batch 64 needs terabytes, more than any host has free.
        await retype(pilot, form, "train.batch_size", "64")
        await wait_until(pilot, lambda: screen.form_check.plan is not None
                         and screen.form_check.plan.run.path.name == "huge"
                         and screen.form_check.plan.train.batch_size == 64, "the 1b form")
        summary = screen.query_one("#summary-text")
        assert re.search(r" a worker \(float32\) > host \d+\.\d GiB free", str(summary.render()))
        run_path = project / "out" / "runs" / "huge"

        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        body = str(app.screen.query_one(".dialog-body").render())
        assert re.match(r"The run needs ≈\d+\.\d GiB \(float32\) but the host has \d+\.\d GiB free: choose a "
                        r"smaller preset, a smaller batch_size", body), body
        assert app.focused.id == "no", "Cancel is the default"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, "the form again")
        assert not run_path.exists(), "cancelled: nothing launched"

        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question again")
        stop_afterwards.append(run_path)
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        await wait_until(pilot, lambda: (run_path / "argv.json").exists(), "the trainer to start")
        assert "--batch_size=64" in read_argv(run_path)


async def test_the_run_launched_has_the_name_shown_though_the_minute_turned(project, stop_afterwards):
    clock = [time.time()]
    app = BabyLlamaApp(root=project, train_program=[str(write_standin(project))], clock=lambda: clock[0])
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        shown = form.name_input.value
        table = screen.query_one(RunsTable)
        clock[0] += 120
        # A run made now shows in the table once the screen has looked again, at the new minute.
        RunDir(project / "out" / "runs" / "other").create({"model": {}, "train": {}})
        await wait_until(pilot, lambda: len(table.runs) == 1, "the screen to look again")
        assert form.name_input.value == shown, "the name does not change under the user's eyes"
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        stop_afterwards.append(project / "out" / "runs" / shown)
        await wait_until(pilot, lambda: (project / "out" / "runs" / shown / "argv.json").exists(), "the trainer")


QUIET_TRAINER = '''
import signal, sys, time
from babyllama.runs import RunDir

run = RunDir(sys.argv[sys.argv.index("--run") + 1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
run.mark_running(step=0, max_steps=1000)
while True:
    time.sleep(0.05)
'''


@pytest.fixture
def small_disk(tmp_path, prepared_token_file):
    """A project on a 1 MiB tmpfs (root only), unmounted at the end whatever happened."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True, timeout=30, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted (not root?): {mounted.stderr.strip()}")
    try:
        (folder / "data").mkdir()
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30, check=False)


async def test_a_stop_that_cannot_write_the_full_disk_says_so(small_disk, stop_afterwards):
    script = small_disk / "quiet_trainer.py"
    script.write_text(QUIET_TRAINER)
    run = RunDir(small_disk / "out" / "runs" / "cramped")
    stop_afterwards.append(run.path)
    pid = launch_detached(run, ["--data", "x"], program=[str(script)])
    wait_for(lambda: run.state().state == "running" and run.read_status().get("pid") == pid, "the quiet trainer")
    app = BabyLlamaApp(root=small_disk, train_program=[str(script)])
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the table")
        fill(small_disk / "filler")
        try:
            await pilot.press("s")
            await pilot.press("y")
            await wait_until(pilot, lambda: any("No space left" in str(n.message) for n in app._notifications),
                             "the stop to say the disk is full")
        finally:
            (small_disk / "filler").unlink()
        said = next(n for n in app._notifications if "No space left" in str(n.message))
        assert said.severity == "error"
        assert "cramped" in str(said.message) and "status.json" in str(said.message)


def fill(path: Path) -> None:
    """Write zeros to `path` until its filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


async def test_the_form_writes_each_hosts_msrun_command_into_a_script(project):
    from babyllama_tui.screens.run_text import RunTextScreen

    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(140, 45)) as pilot:
        screen, form = await open_form(pilot)
        await retype(pilot, form, "name", "pair")
        await retype(pilot, form, "workers", "2")
        await wait_until(pilot, lambda: screen.form_check.plan is not None
                         and screen.form_check.plan.run.path.name == "pair"
                         and screen.form_check.plan.workers == 2, "a valid form")
        screen.set_focus(None)
        await pilot.press("H")
        await wait_until(pilot, lambda: isinstance(app.screen, RunTextScreen), "the hosts question")
        value = app.screen.query_one("#run-text-value")
        value.value = "1 10.0.0.1"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.problem is not None, "the refusal")
        assert app.screen.problem == "a launch across hosts needs at least 2 hosts"
        value.value = "3 10.0.0.1"
        await pilot.press("enter")
        script = project / "out" / "hosts" / "pair.sh"
        await wait_until(pilot, lambda: script.exists(), "the script")
        plan = screen.form_check.plan
    text = script.read_text()
    run = (project / "out" / "runs" / "pair").resolve()
    for node in range(3):
        assert (f"  {node}) exec msrun --worker_num=6 --local_worker_num=2 --master_addr=10.0.0.1 --master_port=8118 "
                f"--node_rank={node} --log_dir={run / 'msrun'} --join=True python -m babyllama train --run {run} "
                f"{' '.join(plan.args)} ;;") in text
    assert not run.exists(), "nothing is launched on this host"
    done = subprocess.run(["sh", str(script), "7"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: sh pair.sh NODE_RANK (0 to 2)" in done.stderr
