"""Snapshots of the Train and Monitor screens at 80x24 with fixed data and a fixed "now".

Update them with `pytest tests/tui/test_train_monitor_snapshots.py --snapshot-update` after a
deliberate change to how the screens look, and look at the report before committing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import footer_settled, wait_until
from run_fixtures import FIXED_NOW, fill_run, write_token_file

SIZE = (80, 24)


@pytest.fixture
def fixed_project(tmp_path, monkeypatch) -> Path:
    """Paths relative to the project folder and times in UTC, so nothing in a snapshot depends on the machine."""
    monkeypatch.chdir(tmp_path)
    previous_tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    root = Path(".")
    tokenizer = root / "out" / "tokenizers" / "sanguo"
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.model").write_bytes(b"stand-in")
    write_token_file(root / "data", "sanguo.bin", tokens=500_000, vocab_size=2000, tokenizer_path=str(tokenizer))
    runs = root / "out" / "runs"
    fill_run(RunDir(runs / "tiny-long"), steps=1000, max_steps=1000, started=FIXED_NOW - 86_400, state="finished")
    fill_run(RunDir(runs / "small-oom"), steps=230, max_steps=2000, started=FIXED_NOW - 7200, state="failed",
             error="RuntimeError: out of memory allocating 1.2 GiB")
    fill_run(RunDir(runs / "tiny-live"), steps=600, max_steps=2000, started=FIXED_NOW - 330, state="running")
    yield root
    if previous_tz is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous_tz
    time.tzset()


def fixed_app(root: Path) -> BabyLlamaApp:
    app = BabyLlamaApp(root=root, clock=lambda: FIXED_NOW)
    app.animation_level = "none"
    return app


async def train_screen_ready(pilot) -> TrainScreen:
    screen = pilot.app.screen
    await wait_until(pilot, lambda: screen.form_check is not None, "the form's first check")
    await wait_until(pilot, lambda: screen.query(RunsTable) and screen.query_one(RunsTable).row_count == 3, "the runs")
    await wait_until(pilot, lambda: footer_settled(screen), "the footer")
    return screen


async def monitor_ready(pilot, run: str, step: int) -> None:
    pilot.app.monitor_run(Path("out/runs") / run)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen), "the monitor")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: screen.status_bar.status is not None and screen.status_bar.status.step == step,
                     "the run's rows")
    await wait_until(pilot, lambda: screen.log_tail.lines, "the log")
    # The log scrolls to its newest line and the samples are laid out after a refresh; their
    # scrollbars follow a refresh later.
    await wait_until(pilot, lambda: screen.log_tail.scroll_y == screen.log_tail.max_scroll_y > 0, "the log's end")
    await wait_until(pilot, lambda: screen.sample_view.virtual_size.height > 1, "the samples")
    for panel in (screen.log_tail, screen.sample_view):
        await wait_until(pilot, lambda: scrollbar_shows(panel), "the scrollbars")
    await wait_until(pilot, lambda: footer_settled(screen), "the footer")


def scrollbar_shows(panel) -> bool:
    if not panel.show_vertical_scrollbar:
        return True
    bar = panel.vertical_scrollbar
    return (bar.window_virtual_size, bar.window_size, bar.position) == (
        panel.virtual_size.height, panel.scrollable_content_region.height, panel.scroll_y)


def test_train_screen_runs_table(fixed_project, snap_compare):
    async def run_before(pilot) -> None:
        await train_screen_ready(pilot)

    assert snap_compare(fixed_app(fixed_project), terminal_size=SIZE, run_before=run_before)


def test_train_screen_new_run_form(fixed_project, snap_compare):
    async def run_before(pilot) -> None:
        await train_screen_ready(pilot)
        await pilot.press("n")
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.pane == "new" and footer_settled(screen), "the form's keys")

    assert snap_compare(fixed_app(fixed_project), terminal_size=SIZE, run_before=run_before)


def test_monitor_screen_live_run(fixed_project, snap_compare):
    async def run_before(pilot) -> None:
        await monitor_ready(pilot, "tiny-live", 600)

    assert snap_compare(fixed_app(fixed_project), terminal_size=SIZE, run_before=run_before)


def test_monitor_screen_failed_run(fixed_project, snap_compare):
    async def run_before(pilot) -> None:
        await monitor_ready(pilot, "small-oom", 230)

    assert snap_compare(fixed_app(fixed_project), terminal_size=SIZE, run_before=run_before)
