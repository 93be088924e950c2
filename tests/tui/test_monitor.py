"""The Monitor screen under Pilot, following real run directories while rows are appended."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from textual.command import CommandList, CommandPalette

from babyllama.runs import RunDir, launch_detached, stop_run
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.pick_run import PickRunsScreen
from babyllama_tui.widgets.log_tail import LogTail
from babyllama_tui.widgets.run_status import RunStatusBar

from pilot_wait import wait_until
from run_fixtures import fill_run, train_row, wait_for


def running_run(root, name: str = "live", steps: int = 100) -> RunDir:
    run = RunDir(root / "out" / "runs" / name)
    fill_run(run, steps=steps, max_steps=1000, started=time.time() - 120, state="running")
    return run


def status_text(screen: MonitorScreen) -> str:
    return screen.status_bar.render().plain


def shown_step(screen: MonitorScreen) -> int | None:
    status = screen.status_bar.status
    return status.step if status else None


async def open_monitor(pilot, run: RunDir | None = None) -> MonitorScreen:
    if run is not None:
        pilot.app.monitor_run(run.path)
    else:
        await pilot.press("3")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen), "the monitor")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: screen.query(RunStatusBar), "the monitor's widgets")
    return screen


async def test_rows_appended_while_watching_appear(tmp_path):
    run = running_run(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot)
        await wait_until(pilot, lambda: shown_step(screen) == 100, "the newest running run to be followed")
        assert screen.follower.path == run.path
        chart = screen.chart
        assert "step 100/1,000" in status_text(screen)

        run.append_metrics(train_row(110, loss=1.234, time=time.time()))
        run.write_status(step=110)
        await wait_until(pilot, lambda: shown_step(screen) == 110, "the new row")
        await wait_until(pilot, lambda: "loss 1.234" in str(chart.border_title), "the chart to redraw")
        assert "step 110/1,000" in status_text(screen)
        with open(run.log_path, "a") as log:
            log.write("step 110 loss 1.2340\n")
        log_tail = screen.query_one(LogTail)
        await wait_until(pilot, lambda: log_tail.lines and log_tail.lines[-1] == "step 110 loss 1.2340", "the log line")


async def test_a_half_written_last_line_waits_for_its_end(tmp_path):
    run = running_run(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot, run)
        await wait_until(pilot, lambda: shown_step(screen) == 100, "the run")
        line = b'{"kind":"train","step":110,"loss":0.5,"tokens":225280,"time":1}\n'
        with open(run.metrics_path, "ab") as f:
            f.write(line[:30])
        size = run.metrics_path.stat().st_size
        await wait_until(pilot, lambda: screen.follower.metrics_offset == size, "a poll past the half line")
        await pilot.pause()
        assert shown_step(screen) == 100
        assert screen.follower.bad_lines == 0
        with open(run.metrics_path, "ab") as f:
            f.write(line[30:])
        await wait_until(pilot, lambda: shown_step(screen) == 110, "the completed line")
        assert "225k tokens" in status_text(screen)


async def test_a_failed_run_shows_its_error(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "crashed")
    fill_run(run, steps=230, max_steps=2000, started=time.time() - 3600, state="failed",
             error="RuntimeError: out of memory allocating 1.2 GiB")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot, run)
        await wait_until(pilot, lambda: shown_step(screen) == 230, "the run")
        text = status_text(screen)
        assert "failed: RuntimeError: out of memory allocating 1.2 GiB" in text
        assert "ETA" not in text, "an ended run has no time to finish"
        assert screen.check_action("stop_run", ()) is False


async def test_an_empty_project_shows_a_hint_until_a_run_starts(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot)
        await pilot.pause(0.2)
        assert screen.has_class("-no-run")
        assert screen.query_one("#monitor-hint").display
        assert screen.check_action("raw", ()) is False
        run = running_run(tmp_path, "fresh")
        await wait_until(pilot, lambda: shown_step(screen) == 100, "the new run to be followed")
        assert screen.follower.path == run.path
        assert not screen.has_class("-no-run")


async def test_with_nothing_running_the_newest_run_until_one_starts(tmp_path):
    older = RunDir(tmp_path / "out" / "runs" / "older")
    fill_run(older, steps=20, max_steps=20, started=time.time() - 9000, state="finished")
    newest = RunDir(tmp_path / "out" / "runs" / "newest")
    fill_run(newest, steps=50, max_steps=50, started=time.time() - 7200, state="finished")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot)
        await wait_until(pilot, lambda: shown_step(screen) == 50, "the newest run")
        assert screen.follower.path == newest.path
        assert not screen.has_class("-no-run")
        assert "finished" in status_text(screen)
        run = running_run(tmp_path, "started-by-hand")
        await wait_until(pilot, lambda: shown_step(screen) == 100, "the run that started to take its place")
        assert screen.follower.path == run.path


async def test_a_chosen_run_stays_when_another_starts(tmp_path):
    chosen = RunDir(tmp_path / "out" / "runs" / "chosen")
    fill_run(chosen, steps=50, max_steps=50, started=time.time() - 7200, state="finished")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot, chosen)
        await wait_until(pilot, lambda: shown_step(screen) == 50, "the chosen run")
        running_run(tmp_path, "started-later")
        await pilot.pause(1.2)
        assert screen.follower.path == chosen.path
        assert shown_step(screen) == 50


async def test_chart_toggles_and_a_second_run_to_compare(tmp_path):
    run = running_run(tmp_path, "main", steps=400)
    other = RunDir(tmp_path / "out" / "runs" / "baseline")
    fill_run(other, steps=300, max_steps=300, started=time.time() - 9000, state="finished")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot, run)
        chart = screen.chart
        await wait_until(pilot, lambda: shown_step(screen) == 400, "the run")
        await pilot.press("l")
        assert chart.log_scale and "log y" in str(chart.border_subtitle)
        await pilot.press("w")
        assert chart.window == 10_000
        await pilot.press("w", "w")
        assert chart.window == 100 and "last 100 steps" in str(chart.border_subtitle)
        await pilot.press("r")
        assert not chart.show_raw

        await pilot.press("c")
        assert isinstance(app.screen, PickRunsScreen)
        await pilot.press("space", "enter")
        assert app.screen is screen
        await wait_until(pilot, lambda: chart.compared and len(chart.compared[0].follower.history) == 30,
                         "the other run")
        assert chart.compared[0].path == other.path
        assert "2 runs" in str(chart.border_title)
        # The picker opens with the run compared now chosen; space unchooses it.
        await pilot.press("c", "space", "enter")
        assert chart.compared == []


def palette_hits(app) -> int:
    return app.screen.query_one(CommandList).option_count if isinstance(app.screen, CommandPalette) else 0


async def test_monitor_keys_are_in_the_command_palette(tmp_path):
    run = running_run(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot, run)
        await wait_until(pilot, lambda: shown_step(screen) == 100, "the run")
        await pilot.press("ctrl+p", *"Log y")
        await wait_until(pilot, lambda: palette_hits(app), "the palette's hits")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen and screen.chart.log_scale, "the palette's Log y")
        await pilot.press("ctrl+p", *"Compare")
        await wait_until(pilot, lambda: palette_hits(app), "the palette's hits")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PickRunsScreen), "the palette's Compare")


async def test_a_run_waiting_for_its_first_row_shows_no_figures_of_the_run_before(tmp_path):
    finished = RunDir(tmp_path / "out" / "runs" / "finished")
    fill_run(finished, steps=50, max_steps=50, started=time.time() - 7200, state="finished")
    fresh = RunDir(tmp_path / "out" / "runs" / "fresh")
    fresh.create({"model": {"dim": 256}, "train": {"max_steps": 60}})
    fresh.write_status(state="running", step=0, max_steps=60, started=time.time(), pid=4242, world_size=1)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot, finished)
        await wait_until(pilot, lambda: "tok/s 4.00k" in screen.cards["speed"].value.text.plain, "the finished run's figures")
        app.monitor_run(fresh.path)
        await wait_until(pilot, lambda: screen.follower.path == fresh.path, "the fresh run")
        await wait_until(pilot, lambda: screen.cards["speed"].value.text.plain == "tok/s -", "its empty speed card")
        assert all(card.value.text.plain.endswith(" -") for card in screen.cards.values())


async def test_the_device_card_shows_the_hosts_gpus_when_nvidia_smi_is_there(tmp_path, monkeypatch):
    run = running_run(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_monitor(pilot, run)
        device = screen.cards["device"]
        await wait_until(pilot, lambda: shown_step(screen) == 100, "the run")
        assert device.value.text.plain == "device cpu (host mem)"

        tools = tmp_path / "bin"
        tools.mkdir()
        sample = Path(__file__).parents[1] / "data" / "accelerator_tools" / "nvidia-smi.csv"
        (tools / "nvidia-smi").write_text(f"#!/bin/sh\nexec cat '{sample}'\n")
        (tools / "nvidia-smi").chmod(0o755)
        monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
        # Two A100s (1,843 and 5 MiB of 40,960 used, 37% and 0% busy) and a 24,576 MiB GPU that says N/A.
        await wait_until(pilot, lambda: device.value.text.plain == "device 1.8G/104G gpu 18%", "the GPUs' reading")
        assert [reading.index for reading in screen.accelerators] == [0, 1, 2]


# A trainer that holds 64 MiB and logs no step, as one compiling its first step does.
SILENT_TRAINER = """
import signal, sys, time
from babyllama.runs import RunDir
run = RunDir(sys.argv[sys.argv.index("--run") + 1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
held = b"x" * (64 * 2**20)
run.mark_running(step=0, max_steps=1000)
while True:
    time.sleep(0.05)
"""


async def test_a_run_that_has_not_logged_a_step_shows_the_memory_of_its_process(tmp_path):
    script = tmp_path / "silent_trainer.py"
    script.write_text(SILENT_TRAINER)
    run = RunDir(tmp_path / "out" / "runs" / "compiling")
    launch_detached(run, program=[str(script)])
    try:
        wait_for(lambda: run.state().state == "running", "the trainer to claim the run")
        app = BabyLlamaApp(root=tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_monitor(pilot, run)
            memory = screen.cards["memory"]
            await wait_until(pilot, lambda: re.fullmatch(r"mem \d+M host \S+/\S+", memory.value.text.plain),
                             "the process's memory")
            assert int(re.search(r"mem (\d+)M", memory.value.text.plain).group(1)) >= 64
            assert screen.cards["speed"].value.text.plain == "tok/s -", "no step, no speed"
    finally:
        stop_run(run.path, wait=True, timeout=30)


async def test_the_memory_card_shows_each_host_of_a_run_across_hosts(tmp_path):
    run = running_run(tmp_path)
    hosts = [{"host": "node-a", "rss_mb": 1100.0, "host_used_mb": 6000.0, "host_total_mb": 24000.0},
             {"host": "node-b", "rss_mb": 900.0, "host_used_mb": 3000.0, "host_total_mb": 16000.0}]
    row = train_row(110, loss=3.0, time=time.time(), rss_mb=1100.0)
    run.append_metrics({**row, "mem": {**row["mem"], "hosts": hosts}})
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_monitor(pilot, run)
        await wait_until(pilot, lambda: "node-b" in screen.cards["memory"].value.text.plain, "the hosts' memory")
        assert screen.cards["memory"].value.text.plain.endswith("node-a 1.1G (5.9G/23G)  node-b 900M (2.9G/16G)")
