"""The Monitor's loss chart under Pilot: its legend when another run is opened, runs compared (their
axis, legend and smoothing), and the log-y axis."""

from __future__ import annotations

import re
import time

import numpy as np
from rich.text import Text
from textual import events

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.pick_run import PickRunScreen, PickRunsScreen, RunChoiceList
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


def chart_text(chart) -> str:
    return chart.render().plain


def axis_end(chart) -> float | None:
    """The last step on the chart's axis as last drawn."""
    return chart.step_range[1] if chart.step_range else None


def fits_in_border(chart, markup) -> bool:
    return Text.from_markup(markup).cell_len <= chart.size.width - 2


def in_legend(chart, run: RunDir, steps: int, val: bool = False) -> bool:
    """Whether the legend names `run` with its last loss, at its last step (and its last validation loss)."""
    entry = rf"{run.path.name} +{loss_at(steps):.3f} @{steps}" + (rf" +val {loss_at(steps) + 0.2:.3f}" if val else "")
    return re.search(entry, chart_text(chart)) is not None


async def choose_runs(pilot, *keys: str) -> list:
    """Open the compare picker, type `keys` in it, and confirm with Enter; returns the runs chosen
    in the picker as it opened."""
    app = pilot.app
    monitor = app.screen
    await pilot.press("c")
    await wait_until(pilot, lambda: isinstance(app.screen, PickRunsScreen), "the compare picker")
    chosen = list(app.screen.query_one(RunChoiceList).selected)
    await pilot.press(*keys, "enter")
    await wait_until(pilot, lambda: app.screen is monitor, "the monitor again")
    return chosen


async def test_runs_compared_share_an_axis_that_covers_them_all_and_each_shows_its_last_loss(tmp_path):
    short = finished_run(tmp_path, "short-0300", 300)
    long = finished_run(tmp_path, "long-0700", 700, started_ago=90_000)
    mid = finished_run(tmp_path, "mid-0500", 500, started_ago=190_000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_following(pilot, short, 30)
        chart = screen.chart
        await wait_until(pilot, lambda: axis_end(chart) == 300, "the short run's axis")
        # The picker lists the other runs, newest first: the long run, then the middle one.
        await choose_runs(pilot, "space")
        assert screen.compared.paths == [long.path]
        await wait_until(pilot, lambda: axis_end(chart) == 700, "an axis that reaches the long run's end",
                         limit=LEGEND_WAIT_S)
        await wait_until(pilot, lambda: in_legend(chart, long, 700), "the long run's last loss",
                         limit=LEGEND_WAIT_S)
        assert in_legend(chart, short, 300, val=True) and in_legend(chart, long, 700, val=True)
        assert Text.from_markup(chart.border_title).plain == "loss · 2 runs  ━ raw"
        assert fits_in_border(chart, chart.border_title) and fits_in_border(chart, chart.border_subtitle)

        # The picker opens with the compared run chosen; a third run is added to it.
        assert await choose_runs(pilot, "down", "space") == [long.path]
        assert screen.compared.paths == [long.path, mid.path]
        await wait_until(pilot, lambda: in_legend(chart, mid, 500), "the third run's last loss",
                         limit=LEGEND_WAIT_S)
        assert in_legend(chart, short, 300) and in_legend(chart, long, 700)
        assert axis_end(chart) == 700
        assert Text.from_markup(chart.border_title).plain.startswith("loss · 3 runs")
        # Each compared run has its own marker on the chart and in the legend.
        legend = [line for line in chart_text(chart).splitlines() if line.startswith("━")]
        assert len({line.split(" ")[0] for line in legend}) == 3, legend


async def test_clear_all_ends_the_comparison(tmp_path):
    main = finished_run(tmp_path, "main", 300)
    other = finished_run(tmp_path, "other", 700, started_ago=90_000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_following(pilot, main, 30)
        chart = screen.chart
        await choose_runs(pilot, "space")
        assert screen.compared.paths == [other.path]
        await wait_until(pilot, lambda: axis_end(chart) == 700, "the comparison", limit=LEGEND_WAIT_S)
        await choose_runs(pilot, "c")
        assert screen.compared.paths == []
        await wait_until(pilot, lambda: axis_end(chart) == 300, "the main run alone")
        assert Text.from_markup(chart.border_title).plain.startswith("━ loss 3.")
        # Escape leaves the choice as it was.
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, PickRunsScreen), "the compare picker")
        await pilot.press("space", "escape")
        await wait_until(pilot, lambda: app.screen is screen, "the monitor again")
        assert screen.compared.paths == []


async def test_a_choice_typed_in_one_packet_is_kept(tmp_path):
    main = finished_run(tmp_path, "main", 300)
    finished_run(tmp_path, "other", 700, started_ago=90_000)
    third = finished_run(tmp_path, "third", 500, started_ago=190_000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_following(pilot, main, 30)
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, PickRunsScreen), "the compare picker")
        await wait_until(pilot, lambda: app.focused is not None and app.focused.highlighted == 0, "the first run")
        # Down, space and Enter together, as over SSH: Enter sees the run space chose.
        for key, character in (("down", None), ("space", " "), ("enter", None)):
            app.post_message(events.Key(key, character))
        await wait_until(pilot, lambda: app.screen is screen, "the monitor again")
        assert screen.compared.paths == [third.path]


async def test_the_compared_runs_are_named_whole_at_80_columns(tmp_path):
    main = finished_run(tmp_path, "tiny-20261128-1037", 400)
    other = finished_run(tmp_path, "tiny-20261128-0806", 600, started_ago=90_000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_following(pilot, main, 40)
        chart = screen.chart
        await choose_runs(pilot, "space")
        await wait_until(pilot, lambda: in_legend(chart, other, 600), "the legend",
                         limit=LEGEND_WAIT_S)
        lines = chart_text(chart).splitlines()
        assert all(len(line) <= chart.size.width for line in lines)
        assert len(lines) <= chart.size.height
        assert fits_in_border(chart, chart.border_title) and fits_in_border(chart, chart.border_subtitle)


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
