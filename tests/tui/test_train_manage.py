"""Managing runs from the Train screen, on real run folders: resume offered only where there is a
checkpoint to resume from."""

from __future__ import annotations

import time
from pathlib import Path

from textual.widgets._footer import FooterKey

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import footer_settled, wait_until


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
