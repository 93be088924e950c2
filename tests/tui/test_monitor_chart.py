"""The Monitor's loss chart under Pilot: its legend when another run is opened, the compared run's
name and smoothing, and the log-y axis."""

from __future__ import annotations

import time

import numpy as np
from rich.text import Text

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.pick_run import PickRunScreen
from babyllama_tui.training.history import MetricsHistory
from babyllama_tui.widgets.loss_chart import loss_ticks

from pilot_wait import wait_until
from run_fixtures import fill_run, loss_at, train_row

# A legend that should be there shows within a few polls; failing fast beats a minute's wait.
LEGEND_WAIT_S = 8.0


def finished_run(root, name: str, steps: int, *, every: int = 10, started_ago: float = 7200) -> RunDir:
    run = RunDir(root / "out" / "runs" / name)
    fill_run(run, steps=steps, max_steps=steps, started=time.time() - started_ago, every=every, state="finished")
    return run


async def monitor_following(pilot, run: RunDir, rows: int) -> MonitorScreen:
    pilot.app.monitor_run(run.path)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen), "the monitor")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: screen.follower is not None and screen.follower.path == run.path
                     and len(screen.follower.history) == rows, f"{run.path.name}'s rows")
    return screen


async def test_the_legend_follows_a_run_opened_after_another(tmp_path):
    # Both runs are read in one poll each, so their histories reach the same version number.
    first = finished_run(tmp_path, "first", 50, started_ago=9000)
    second = finished_run(tmp_path, "second", 300)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_following(pilot, first, 5)
        chart = screen.chart
        await wait_until(pilot, lambda: f"loss {loss_at(50):.3f}" in str(chart.border_title), "the first legend")
        assert first.path != second.path
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickRunScreen), "the run picker")
        await pilot.press("up", "enter")
        await monitor_following(pilot, second, 30)
        await wait_until(pilot, lambda: f"loss {loss_at(300):.3f}" in str(chart.border_title),
                         "the second run's legend", limit=LEGEND_WAIT_S)
        assert "val" in str(chart.border_title) and "val -" not in str(chart.border_title)


async def test_the_compared_run_is_named_whole_at_80_columns(tmp_path):
    main = finished_run(tmp_path, "tiny-20261128-1037", 400)
    other = finished_run(tmp_path, "tiny-20261128-0806", 600, started_ago=90_000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_following(pilot, main, 40)
        chart = screen.chart
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, PickRunScreen), "the run picker")
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: chart.other is not None and chart.other.path == other.path, "the comparison")
        subtitle = str(chart.border_subtitle)
        assert "vs tiny-20261128-0806" in subtitle
        # The whole subtitle fits the chart's bottom border beside its corners.
        assert Text.from_markup(chart.border_subtitle).cell_len <= chart.size.width - 2


def smoothed(every: int, steps: int = 400) -> dict[int, float]:
    history = MetricsHistory()
    history.add([train_row(step, loss=loss_at(step), time=float(step)) for step in range(every, steps + 1, every)])
    return dict(zip(history.steps.values.tolist(), history.series["ema"].values.tolist()))


def test_runs_logged_at_different_intervals_smooth_to_the_same_curve():
    every_two, every_ten = smoothed(2), smoothed(10)
    shared = [step for step in every_ten if step >= 50]
    gaps = [abs(every_two[step] - every_ten[step]) for step in shared]
    # Row by row, the run logged every 10 steps lagged 0.5 behind at step 50 and 0.3 at step 100.
    assert max(gaps) < 0.1, gaps
    # And neither lags far behind the loss it smooths while it falls.
    assert abs(every_ten[30] - loss_at(30)) < 0.6
    assert abs(every_two[400] - every_ten[400]) < 0.02


def test_log_ticks_give_three_labels_for_a_narrow_range():
    for count in range(2, 8):
        ticks = loss_ticks(5.5, 9.0, count, log=True)
        assert len(ticks) >= 3, (count, ticks)
        assert all(5.5 <= tick <= 9.0 for tick in ticks)
    assert loss_ticks(0.5, 9.0, 4, log=True) == [0.5, 1.0, 2.0, 5.0]


async def test_log_y_draws_at_least_three_tick_labels(tmp_path):
    run = finished_run(tmp_path, "narrow", 100)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_following(pilot, run, 10)
        await pilot.press("l")
        assert screen.chart.log_scale
        await pilot.pause()
        y_labels = [line.split("┤")[0].strip() for line in screen.chart.render().plain.splitlines() if "┤" in line]
        assert len([label for label in y_labels if label]) >= 3, y_labels
        values = [float(label) for label in y_labels]
        assert values == sorted(values, reverse=True) and np.isfinite(values).all()
