"""The Train screen's runs table and panes: columns fit their values as they grow, age counts
from a run's creation, and resizing shows both panes whenever the terminal is wide."""

from __future__ import annotations

import os
import time

from textual.widgets.data_table import ColumnKey

from babyllama.files import atomic_write_json
from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.training.runs_watcher import RunsWatcher
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import wait_until
from run_fixtures import fill_run


def table_text(table: RunsTable) -> list[str]:
    return ["".join(segment.text for segment in table.render_line(y)) for y in range(table.row_count + 1)]


async def test_the_step_column_widens_as_the_step_grows_and_stays_wide_when_the_run_ends(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "growing")
    run.create({"model": {}, "train": {"max_steps": 100}})
    run.write_status(state="stopped", step=0, max_steps=100, world_size=1, started=time.time())
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: any("0/100" in line for line in table_text(table)), "0/100")
        run.write_status(step=28)
        await wait_until(pilot, lambda: any(" 28/100 " in line for line in table_text(table)), "28/100 in full")
        run.write_status(state="finished", step=32)
        await wait_until(pilot, lambda: any("finished" in line for line in table_text(table)), "the end")
        await pilot.pause()
        assert any(" 32/100 " in line for line in table_text(table))
        run.write_status(step=5)
        await wait_until(pilot, lambda: any(" 5/100 " in line for line in table_text(table)), "5/100")
        assert table.columns[ColumnKey("step")].content_width == len("32/100"), "no narrowing while the rows stay"


async def test_the_table_marks_a_runs_alerts_and_a_stall_with_the_reason_in_the_detail(tmp_path):
    bumpy = RunDir(tmp_path / "out" / "runs" / "bumpy")
    fill_run(bumpy, steps=300, max_steps=300, started=time.time() - 7200)
    bumpy.append_alert(step=120, alert="spike", action="skipped", message="loss 9.1 far above its recent 5.2")
    bumpy.append_alert(step=130, alert="rollback", action="rolled_back", message="step 130: rolled back to step 100")
    stuck = RunDir(tmp_path / "out" / "runs" / "stuck")
    fill_run(stuck, steps=100, max_steps=1000, started=time.time() - 3600, state="running")
    # Its heartbeat is fresh (fill_run's status), but its last metrics row was written 15 minutes ago.
    os.utime(stuck.metrics_path, (time.time() - 900, time.time() - 900))
    app = BabyLlamaApp(root=tmp_path, stall_after_s=600)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: len(table.runs) == 2, "both runs")
        header, stuck_line, bumpy_line = (line.split() for line in table_text(table))
        assert header[-2:] == ["alerts", "MFU"] and stuck_line[1] == "stalled" and bumpy_line[-1] == "2"
        assert stuck_line[6] == "-", "a stalled run has no ETA"
        detail = app.screen.query_one("#run-detail")
        await wait_until(pilot, lambda: "no new metrics row for 15m" in str(detail.render()), "the stall's reason")
        assert "running, stalled: no new metrics row for 15m" in str(detail.render())
        await pilot.press("down")
        await wait_until(pilot, lambda: "2 alerts, the last at step 130: rolled back to step 100"
                         in str(detail.render()), "the alerts in the detail")
    app = BabyLlamaApp(root=tmp_path, stall_after_s=1200)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: len(table.runs) == 2, "both runs")
        assert table_text(table)[1].split()[1] == "running", "15 minutes is no stall when 20 are allowed"


async def test_the_table_shows_each_runs_model_flops_utilisation_in_its_last_column(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "measured")
    fill_run(run, steps=100, max_steps=200, started=time.time() - 600)
    run.append_metrics({"kind": "train", "step": 110, "loss": 3.0, "tokens_per_s": 500.0, "mfu": 0.123,
                        "time": time.time()})
    unmeasured = RunDir(tmp_path / "out" / "runs" / "unmeasured")
    fill_run(unmeasured, steps=100, max_steps=200, started=time.time() - 1200)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: len(table.runs) == 2, "both runs")
        header, measured_line, unmeasured_line = (line.split() for line in table_text(table))
        assert header[-1] == "MFU" and measured_line[0] == "measured" and measured_line[-1] == "12.3%"
        assert unmeasured_line[-1] != "-" and "%" not in unmeasured_line[-1], "no MFU where none was measured"


def test_age_counts_from_the_first_metrics_row_not_from_the_last_resume(tmp_path):
    created = 1_800_000_000.0
    run = RunDir(tmp_path / "resumed")
    fill_run(run, steps=100, max_steps=200, started=created, state="stopped")
    # A resume rewrites status.json's `started` (the current attempt) and appends to the metrics.
    status = run.read_status()
    atomic_write_json(run.status_path, {**status, "started": created + 840})
    watcher = RunsWatcher(tmp_path)
    (row,) = watcher.poll(created + 1000)
    assert row.started == created + 840
    assert row.age_s(created + 1000) == 1000 - 5, "the first row, 10 steps of 0.5 s after the start"
    run.append_metrics({"kind": "train", "step": 110, "loss": 3.0, "time": created + 900})
    (row,) = watcher.poll(created + 1000)
    assert row.age_s(created + 1000) == 1000 - 5


def test_age_of_a_run_without_metrics_yet_is_from_its_start(tmp_path):
    run = RunDir(tmp_path / "starting")
    run.create({"model": {}, "train": {}})
    run.write_status(state="stopped", step=0, max_steps=10, started=1_800_000_000.0)
    (row,) = RunsWatcher(tmp_path).poll(1_800_000_060.0)
    assert row.age_s(1_800_000_060.0) == 60


async def test_growing_the_terminal_past_the_breakpoint_shows_both_panes(tmp_path):
    fill_run(RunDir(tmp_path / "out" / "runs" / "done"), steps=40, max_steps=40, started=time.time() - 100)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        await pilot.press("n")
        await wait_until(pilot, lambda: screen.form is not None, "the form")
        runs_pane, form_pane = screen.query_one("#runs-pane"), screen.query_one("#new-run-pane")
        assert form_pane.display and not runs_pane.display
        await pilot.resize_terminal(200, 50)
        await wait_until(pilot, lambda: screen.has_class("-wide"), "the wide layout")
        await pilot.pause()
        assert form_pane.display and runs_pane.display
        assert runs_pane.region.width > 80 and form_pane.region.width > 80
        await pilot.resize_terminal(80, 24)
        await wait_until(pilot, lambda: screen.has_class("-narrow"), "the narrow layout")
        await pilot.pause()
        assert form_pane.display and not runs_pane.display, "back to the pane that was shown"


async def test_a_resize_while_another_screen_is_shown_applies_on_return(tmp_path):
    fill_run(RunDir(tmp_path / "out" / "runs" / "done"), steps=40, max_steps=40, started=time.time() - 100)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("n")
        await wait_until(pilot, lambda: screen.form is not None, "the form")
        await pilot.press("3")
        await wait_until(pilot, lambda: app.screen is not screen, "the monitor")
        await pilot.resize_terminal(200, 50)
        await pilot.pause()
        await pilot.press("2")
        await wait_until(pilot, lambda: app.screen is screen, "the train screen")
        await pilot.pause()
        assert screen.query_one("#new-run-pane").display and screen.query_one("#runs-pane").display
        assert screen.has_class("-wide"), "the panes' borders come with the wide class"


async def test_the_run_detail_shows_why_a_run_failed_whole_at_80_columns(tmp_path):
    reason = ("/tmp/a-rather-long-project-folder/data/corpora/wikipedia-cn-20230720-filtered-sanguo-4k.bin: "
              "cannot open the token file (No such file or directory); prepare it again with `babyllama prepare` "
              "on the Corpora screen, or pick another token file in the new-run form, then launch the run again; "
              "nothing was trained, so no checkpoint was saved")
    run = RunDir(tmp_path / "out" / "runs" / "tiny-20261205-1353")
    fill_run(run, steps=0, max_steps=1000, started=time.time() - 60, state="failed", error=reason)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        detail = app.screen.query_one("#run-detail")
        await wait_until(pilot, lambda: detail.display and detail.size.height > 0, "the run's detail")
        await pilot.pause()
        shown = "".join("".join(s.text for s in detail.render_line(y)) for y in range(detail.size.height))
        # Compared without spaces: a long path is folded across lines.
        assert "".join(f"failed: {reason}".split()) in "".join(shown.split())
