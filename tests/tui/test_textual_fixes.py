"""The workarounds in babyllama_tui/textual_fixes.py hold for the Textual they were written against:
the installed Textual is the pinned one, and the header's title follows the terminal's width."""

from __future__ import annotations

import re
import time
from importlib.metadata import version
from pathlib import Path

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.textual_fixes import TEXTUAL_VERSION
from babyllama_tui.widgets.mode_header import ModeHeader

from pilot_wait import wait_until
from run_fixtures import fill_run

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pinned(package: str) -> str | None:
    match = re.search(rf'"{re.escape(package)}==([^"]+)"', PYPROJECT.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def test_the_installed_textual_is_the_one_the_fixes_were_written_for():
    assert pinned("textual") == TEXTUAL_VERSION, "pyproject.toml pins the version textual_fixes.py names"
    assert version("textual") == TEXTUAL_VERSION, (
        f"Textual {version('textual')} is installed, the fixes were written for {TEXTUAL_VERSION}: "
        "re-check each workaround in babyllama_tui/textual_fixes.py, then move the pin and TEXTUAL_VERSION")


def test_the_installed_textual_plotext_is_the_pinned_one():
    assert version("textual-plotext") == pinned("textual-plotext")


async def test_the_header_shows_the_run_s_name_only_while_it_fits(tmp_path):
    fill_run(RunDir(tmp_path / "out" / "runs" / "done-run"), steps=40, max_steps=40, started=time.time() - 100)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        header = app.screen.query_one(ModeHeader)
        title = header.query_one("HeaderTitle")
        await wait_until(pilot, lambda: "done-run" in str(title.render()), "the run's name in the header")
        await pilot.resize_terminal(70, 30)
        await wait_until(pilot, lambda: "done-run" not in str(title.render()), "the name gone at 70 columns")
        await pilot.resize_terminal(100, 30)
        await wait_until(pilot, lambda: "done-run" in str(title.render()), "the name back")
