"""The Train screen's twice-a-second refresh reads the clock once and lists the highlighted run's
jobs once (Pilot, real run folders; the clock and the listing counted where the app calls them)."""

from __future__ import annotations

import time

import babyllama_tui.training.run_jobs as run_jobs
from babyllama.runs import RunDir, rename_run
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.widgets.jobs_strip import JobsStrip

from run_fixtures import fill_run


class CountedClock:
    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return time.time()


async def test_one_refresh_reads_the_clock_once_and_lists_jobs_once(tmp_path, monkeypatch):
    runs = tmp_path / "out" / "runs"
    runs.mkdir(parents=True)
    listed = []
    real_list_jobs = run_jobs.list_jobs
    monkeypatch.setattr(run_jobs, "list_jobs", lambda path: listed.append(path) or real_list_jobs(path))
    clock = CountedClock()
    app = BabyLlamaApp(root=tmp_path, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        strip = screen.query_one(JobsStrip)
        # The first run appears, then the steady state, then the highlighted run goes (renamed outside
        # the app): each time the strip shows the highlighted run, its jobs read once.
        fill_run(RunDir(runs / "first"), steps=100, max_steps=100, started=time.time() - 600)
        fill_run(RunDir(runs / "second"), steps=100, max_steps=100, started=time.time() - 300)
        for change in (None, None, lambda: rename_run(RunDir(strip.run_path), "renamed")):
            await pilot.pause()
            shown = strip.run_path
            if change is not None:
                change()
            clock.reads, listed[:] = 0, []
            screen._refresh_runs()
            assert clock.reads == 1
            assert listed == [strip.run_path] and strip.run_path is not None
        assert strip.run_path != shown
