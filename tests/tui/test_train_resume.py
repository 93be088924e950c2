"""The Resume dialog proposes a value it accepts, and names only the field that is wrong."""

from __future__ import annotations

import time

from babyllama.runs import RunDir, stop_run
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.resume import ResumeScreen, proposed_max_steps, resume_errors
from babyllama_tui.widgets.field_input import FieldInput
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import wait_until
from run_fixtures import read_argv, write_standin


def ended_run(root, name: str, *, step: int, max_steps: int, state: str) -> RunDir:
    run = RunDir(root / "out" / "runs" / name)
    run.create({"model": {}, "train": {"max_steps": max_steps}})
    temp = run.checkpoint_temp_path(step)
    temp.mkdir()
    run.publish_checkpoint(temp, step)
    run.write_status(state=state, step=step, max_steps=max_steps, world_size=1, started=time.time() - 60)
    return run


def test_the_proposal_is_the_planned_end_or_twice_as_far():
    assert proposed_max_steps(74, 100) == 100
    assert proposed_max_steps(60, 60) == 120
    assert proposed_max_steps(60, None) == 120


def test_each_error_names_only_its_field():
    assert resume_errors("60", "1", 60) == ["max steps must be a whole number above 60, the checkpoint's step"]
    assert resume_errors("61", "0", 60) == ["workers must be a whole number, at least 1"]
    assert len(resume_errors("", "x", 60)) == 2
    assert resume_errors("61", "1", 60) == []


async def test_enter_on_a_finished_run_resumes_to_twice_its_steps(tmp_path):
    run = ended_run(tmp_path, "done", step=60, max_steps=60, state="finished")
    app = BabyLlamaApp(root=tmp_path, train_program=[str(write_standin(tmp_path))])
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one(RunsTable)
            await wait_until(pilot, lambda: table.highlighted_run is not None, "the table")
            await pilot.press("r")
            assert isinstance(app.screen, ResumeScreen)
            assert app.screen.query_one("#resume-max-steps", FieldInput).value == "120"
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
            await wait_until(pilot, lambda: (run.path / "argv.json").exists(), "the trainer to start")
            assert read_argv(run.path) == ["--run", str(run.path.resolve()), "--resume", "--max_steps=120"]
    finally:
        stop_run(run.path, wait=True, timeout=30)


async def resume_dialog(pilot, app: BabyLlamaApp) -> ResumeScreen:
    """r on the runs table's one run: its Resume dialog."""
    table = app.screen.query_one(RunsTable)
    await wait_until(pilot, lambda: table.highlighted_run is not None, "the table")
    await pilot.press("r")
    assert isinstance(app.screen, ResumeScreen)
    return app.screen


async def test_a_max_steps_at_the_checkpoint_is_refused_without_blaming_workers(tmp_path):
    ended_run(tmp_path, "short", step=74, max_steps=100, state="stopped")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await resume_dialog(pilot, app)
        assert dialog.query_one("#resume-max-steps", FieldInput).value == "100"
        await pilot.press("backspace", "backspace", "backspace", "7", "4", "enter")
        assert app.screen is dialog
        error = str(dialog.query_one("#resume-error").render())
        assert "max steps must be a whole number above 74" in error and "workers" not in error


async def test_an_error_goes_once_its_value_is_fixed(tmp_path):
    ended_run(tmp_path, "short", step=74, max_steps=100, state="stopped")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await resume_dialog(pilot, app)
        error = dialog.query_one("#resume-error")
        await pilot.press("backspace", "backspace", "backspace", "7", "enter")
        assert "max steps must be a whole number above 74" in str(error.render())
        await pilot.press("4")
        assert "max steps must be a whole number above 74" in str(error.render()), "74 is still wrong"
        await pilot.press("0")
        assert str(error.render()) == "", "740 is right: the error has gone before enter"
        assert app.screen is dialog
