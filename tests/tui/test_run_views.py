"""How a run was started (its config view, from the Monitor and the runs table) and its whole train.log
from the first line, under Pilot on real run directories."""

from __future__ import annotations

import time

from rich.console import Console

from babyllama.config import config_to_dict, preset
from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.full_log import FullLogScreen
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.run_config import RunConfigScreen, settings_table
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import wait_until
from run_fixtures import fill_run

LAUNCH_LINE = "=== 2025-03-01 12:00:00 launching: python -m babyllama train --preset tiny"


def started_run(root, name: str = "tiny-sanguo", log_lines: int = 50) -> RunDir:
    """A finished run whose config.json, status and log are what a real trainer leaves."""
    run = RunDir(root / "out" / "runs" / name)
    fill_run(run, steps=100, max_steps=100, started=time.time() - 600)
    model, train = preset("tiny")
    data = root / "data" / "sample" / "sanguo-bpe-guo4k.bin"
    run.create(
        {
            **config_to_dict(model, train),
            "data": {"files": [{"path": str(data), "tokens": 812345}], "train_windows": 3000, "val_windows": 30},
            "tokenizer": {
                "name": "sanguo-bpe",
                "kind": "sentencepiece",
                "path": str(root / "out" / "tokenizers" / "sb"),
                "vocab_size": 8000,
            },
            "world_size": 1,
            "preset": "tiny",
            "babyllama_version": "0.1.0",
        },
        overwrite=True,
    )
    run.write_status(
        command=[
            "/usr/bin/python3",
            "-m",
            "babyllama",
            "train",
            "--run",
            str(run.path),
            "--data",
            str(data),
            "--preset",
            "tiny",
            "--learning_rate",
            "0.001",
            "--max_steps",
            "100",
        ]
    )
    run.log_path.write_text(LAUNCH_LINE + "\n" + "".join(f"step {n} loss 4.{n:04d}\n" for n in range(log_lines)))
    return run


def wrapped(screen: RunConfigScreen) -> list[str]:
    """The settings as the dialog shows them, at its width."""
    static = screen.query_one("#run-config-settings")
    console = Console(width=static.size.width, record=True, file=open("/dev/null", "w"))
    console.print(settings_table(screen.run))
    return console.export_text().splitlines()


async def test_i_shows_how_the_run_was_started_from_the_monitor_and_from_the_runs_table(tmp_path):
    run = started_run(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the runs table")
        await pilot.press("i")
        await wait_until(pilot, lambda: isinstance(app.screen, RunConfigScreen), "the config view from the table")
        lines = wrapped(app.screen)
        assert max(len(line) for line in lines) <= 80 and app.screen.query_one("#run-config").region.right <= 80
        text = " ".join(" ".join(lines).split())
        # A long path or command line is folded over lines, so those are compared without spaces.
        solid = "".join(text.split())
        assert "parameters 19,800,832 (3,213,568 without the embedding)" in text
        assert "= 2,048 tokens per step" in text
        assert "lr warm-up 50 steps to 0.001, cosine decay to 0.0001 at step 1,000" in text
        assert f"data{tmp_path}/data/sample/sanguo-bpe-guo4k.bin(812,345tokens)" in solid
        assert "tokenizer sanguo-bpe (sentencepiece, vocab 8,000)" in text
        # The whole command line, wrapped, not cut.
        assert f"--run{run.path}--data{tmp_path}/data/sample/sanguo-bpe-guo4k.bin--presettiny" in solid
        assert solid.endswith("--learning_rate0.001--max_steps100versionbabyllama0.1.0")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, RunConfigScreen), "the view to close")

        await pilot.press("3")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.follower, "the monitor")
        await pilot.press("i")
        await wait_until(pilot, lambda: isinstance(app.screen, RunConfigScreen), "the config view from the monitor")
        assert app.screen.run == run.path and "tokens per step" in " ".join(" ".join(wrapped(app.screen)).split())


async def test_the_config_view_of_a_fine_tuning_run_names_its_parent(tmp_path):
    run = started_run(tmp_path, name="chat")
    parent = tmp_path / "out" / "runs" / "tiny-sanguo"
    config = run.read_config()
    config["init_from"] = {"run": str(parent), "checkpoint": str(parent / "checkpoints" / "step_0001200"),
                           "step": 1200}
    run.create(config, overwrite=True)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the runs table")
        await pilot.press("i")
        await wait_until(pilot, lambda: isinstance(app.screen, RunConfigScreen), "the config view")
        lines = wrapped(app.screen)
        assert max(len(line) for line in lines) <= 80
        solid = "".join(" ".join(lines).split())
        assert f"parenttiny-sanguoatstep1,200({parent}/checkpoints/step_0001200)" in solid


async def test_shift_l_reads_the_whole_log_from_its_first_line(tmp_path):
    run = started_run(tmp_path, log_lines=250_000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.monitor_run(run.path)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.follower, "the monitor")
        monitor = app.screen
        await wait_until(pilot, lambda: monitor.log_tail.lines, "the log's tail")
        assert LAUNCH_LINE not in monitor.log_tail.lines, "the launch line is out of the tail's reach"
        await pilot.press("L")
        await wait_until(pilot, lambda: isinstance(app.screen, FullLogScreen), "the whole log")
        view = app.screen.view
        await wait_until(pilot, lambda: view.index.caught_up and len(view.index) == 250_001, "the log indexed")
        assert view.scroll_y == 0 and view.index.line(0) == LAUNCH_LINE
        assert "".join(segment.text for segment in view.render_line(0)).strip() == LAUNCH_LINE
        await pilot.press("end")
        await wait_until(pilot, lambda: view.scroll_y == view.max_scroll_y, "the end")
        last = view.render_line(view.scrollable_content_region.height - 1)
        assert "".join(segment.text for segment in last).strip() == "step 249999 loss 4.249999"
        assert "of 250,001" in str(view.border_subtitle)
        # Lines appended while it is open are read too.
        with open(run.log_path, "a") as log:
            log.write("saved checkpoint step_0000100\n")
        await wait_until(pilot, lambda: len(view.index) == 250_002, "the appended line")
        await pilot.press("home")
        await wait_until(pilot, lambda: view.scroll_y == 0, "the top again")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is monitor, "back on the monitor")
