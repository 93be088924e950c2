"""Managing runs from the Train screen, on real run folders: delete (to the trash, after asking),
rename and note a run, each offered only where it applies; resume offered only where there is a
checkpoint to resume from; and what followed a run by its folder follows its new name."""

from __future__ import annotations

import time
from pathlib import Path

from test_playground import open_playground, stand_in_app, state_of
from textual.widgets import Static
from textual.widgets._footer import FooterKey

from babyllama.runs import RunDir, rename_run
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.run_text import RunTextScreen
from babyllama_tui.widgets.field_input import FieldInput
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import footer_settled, wait_until
from run_fixtures import fill_run


def ended(
    root: Path,
    name: str,
    *,
    started: float,
    state: str = "failed",
    checkpoint: int | None = None,
    error: str | None = None,
) -> RunDir:
    run = RunDir(root / "out" / "runs" / name)
    run.create({"model": {}, "train": {"max_steps": 100}})
    if checkpoint is not None:
        temp = run.checkpoint_temp_path(checkpoint)
        temp.mkdir()
        run.publish_checkpoint(temp, checkpoint)
    run.write_status(state=state, step=checkpoint or 3, max_steps=100, world_size=1, started=started, error=error)
    return run


async def choose(pilot, name: str) -> RunsTable:
    """Put the runs table's cursor on the run `name`."""
    table = pilot.app.screen.query_one(RunsTable)
    await wait_until(pilot, lambda: name in [row.name for row in table.runs.values()], f"{name} in the table")
    while table.highlighted_run.name != name:
        await pilot.press("down")
    return table


async def footer_keys(pilot) -> set[str]:
    screen = pilot.app.screen
    await wait_until(pilot, lambda: footer_settled(screen), "the footer")
    return {key.key for key in screen.query(FooterKey)}


def shown(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def type_over(pilot, text: str) -> None:
    """Replace what the dialog's field holds with `text`."""
    field = pilot.app.screen.query_one(FieldInput)
    await pilot.press(*["backspace"] * len(field.value), *text)


async def test_resume_is_offered_only_for_an_ended_run_with_a_checkpoint(tmp_path):
    now = time.time()
    ended(tmp_path, "doomed", started=now - 60, error="data/doomed.bin: cannot open the token file")
    ended(tmp_path, "paused", started=now - 120, state="stopped", checkpoint=40)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await choose(pilot, "doomed")
        assert "r" not in await footer_keys(pilot)
        assert screen.check_action("resume_run", ()) is False
        await pilot.press("r")
        assert app.screen is screen
        await choose(pilot, "paused")
        assert "r" in await footer_keys(pilot)


async def test_d_moves_an_ended_run_to_the_trash_after_saying_where(tmp_path):
    run = ended(tmp_path, "doomed", started=time.time() - 60)
    run.log_path.write_text("Traceback: no such file\n")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await choose(pilot, "doomed")
        assert "d" in await footer_keys(pilot)
        await pilot.press("d")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        body = " ".join(shown(dialog, ".dialog-body").split())
        assert "out/trash/doomed-<time>" in body and "move it back to out/runs/doomed to restore it" in body
        await pilot.press("n")
        assert run.path.is_dir()
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: not table.runs, "the run to leave the table")
        assert not run.path.exists()
        [trashed] = (tmp_path / "out" / "trash").iterdir()
        assert trashed.name.startswith("doomed-") and (trashed / "train.log").read_text() == "Traceback: no such file\n"
        assert any(f"moved doomed to out/trash/{trashed.name}" == str(n.message) for n in app._notifications)


async def test_a_running_run_takes_a_note_but_is_neither_deleted_nor_renamed(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "live")
    run.create({"model": {}, "train": {"max_steps": 100}})
    run.mark_running(step=0, max_steps=100)  # this test's process is its trainer, and alive
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await choose(pilot, "live")
        keys = await footer_keys(pilot)
        assert "N" in keys and "d" not in keys and "R" not in keys
        await pilot.press("d", "R")
        assert app.screen is screen and run.path.is_dir()

        await pilot.press("N")
        assert isinstance(app.screen, RunTextScreen)
        await pilot.press(*"warm-up, lr 3e-4", "enter")
        assert app.screen is screen
        assert run.note_path.read_text() == "warm-up, lr 3e-4\n"
        await wait_until(pilot, lambda: "warm-up, lr 3e-4" in shown(screen, "#run-detail"), "the note below the table")

        await pilot.press("N")
        assert app.screen.query_one(FieldInput).value == "warm-up, lr 3e-4"
        await pilot.press(*"x" * 190, "enter")
        assert app.screen.problem == "a note is at most 200 characters; this one has 206"
        await pilot.press(*["backspace"] * 10)
        assert app.screen.problem is None  # gone once the note is short enough


async def test_R_renames_a_run_and_the_monitor_follows_the_new_name(tmp_path):
    now = time.time()
    run = ended(tmp_path, "tiny-1100", started=now - 60, state="finished", checkpoint=100)
    ended(tmp_path, "taken", started=now - 120)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.current_run = run.path
        table = await choose(pilot, "tiny-1100")
        await pilot.press("R")
        dialog = app.screen
        assert isinstance(dialog, RunTextScreen) and dialog.query_one(FieldInput).value == "tiny-1100"
        await type_over(pilot, "taken")
        await pilot.press("enter")
        assert app.screen is dialog and dialog.problem.endswith("out/runs/taken exists; choose another name")
        await type_over(pilot, "base line")
        assert dialog.problem.startswith("a run name is letters, digits")
        await type_over(pilot, "baseline")
        assert dialog.problem is None
        await pilot.press("enter")

        renamed = tmp_path / "out" / "runs" / "baseline"
        assert renamed.is_dir() and not run.path.exists()
        assert app.current_run == renamed
        await wait_until(pilot, lambda: table.highlighted_run.path == renamed, "the renamed run highlighted")
        await pilot.press("3")
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_until(
            pilot,
            lambda: monitor.follower is not None and monitor.follower.path == renamed,
            "the monitor on the renamed run",
        )


async def test_a_run_compared_on_the_monitor_follows_its_new_name_and_leaves_when_trashed(tmp_path):
    now = time.time()
    main = RunDir(tmp_path / "out" / "runs" / "main")
    fill_run(main, steps=400, max_steps=400, started=now - 600)
    fill_run(RunDir(tmp_path / "out" / "runs" / "third"), steps=200, max_steps=200, started=now - 20000)
    other = RunDir(tmp_path / "out" / "runs" / "baseline")
    fill_run(other, steps=300, max_steps=300, started=now - 9000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.monitor_run(main.path)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        monitor = app.screen
        await pilot.press("c")
        await pilot.press("space", "enter")
        chart = monitor.chart
        await wait_until(pilot, lambda: chart.compared and len(chart.compared[0].follower.history) == 30, "baseline")
        slot = chart.compared[0].slot

        await pilot.press("2")
        await choose(pilot, "baseline")
        await pilot.press("R")
        await type_over(pilot, "baseline-v2")
        await pilot.press("enter", "3")
        renamed = tmp_path / "out" / "runs" / "baseline-v2"
        assert monitor.follower.path == main.path
        assert [(run.path, run.slot) for run in chart.compared] == [(renamed, slot)]
        await wait_until(pilot, lambda: len(chart.compared[0].follower.history) == 30, "the renamed run read")
        assert "baseline-v2" in chart.render().plain

        await pilot.press("2")
        await choose(pilot, "baseline-v2")
        await pilot.press("d", "y", "3")
        await wait_until(pilot, lambda: not renamed.exists(), "the run in the trash")
        assert chart.compared == [] and monitor.compared.paths == []

        # Renamed outside the app (`babyllama runs rename`), whose new name the app does not learn: let go.
        await pilot.press("c", "space", "enter")
        await wait_until(pilot, lambda: chart.compared, "the second compared run")
        assert monitor.compared.paths == [tmp_path / "out" / "runs" / "third"]
        rename_run(RunDir(monitor.compared.paths[0]), "elsewhere")
        await wait_until(pilot, lambda: chart.compared == [], "the monitor to let go of the compared run", limit=10)


async def test_the_monitor_lets_go_of_a_run_renamed_outside_the_app(tmp_path):
    now = time.time()
    run = ended(tmp_path, "old", started=now - 120, state="finished")
    other = ended(tmp_path, "other", started=now - 60, state="finished")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.current_run = run.path
        await pilot.press("3")
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_until(
            pilot, lambda: monitor.follower is not None and monitor.follower.path == run.path, "the monitor on the run"
        )
        rename_run(run, "new")  # as `babyllama runs rename old new` does
        await wait_until(pilot, lambda: app.current_run is None, "the monitor to let go of the old folder", limit=10)
        await wait_until(
            pilot,
            lambda: monitor.follower is not None and monitor.follower.path == other.path,
            "the monitor on the run that is left",
        )


async def test_a_checkpoint_loaded_in_the_playground_follows_its_run_s_new_name(tmp_path):
    ended(tmp_path, "tiny", started=time.time() - 60, state="finished")
    app = stand_in_app(tmp_path, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        playground = await open_playground(pilot)
        await wait_until(pilot, lambda: state_of(playground, "A") == "ready", "the checkpoint to load")
        assert playground.panels["A"].border_title == "A · tiny step 5,000 · numpy f32"
        await pilot.press("2")
        await choose(pilot, "tiny")
        await pilot.press("R")
        await type_over(pilot, "tiny-v2")
        await pilot.press("enter", "4")
        engine = playground.engines["A"]
        assert engine.choice.path == tmp_path / "out" / "runs" / "tiny-v2" / "checkpoints" / "step_0005000"
        assert playground.panels["A"].border_title == "A · tiny-v2 step 5,000 · numpy f32"
