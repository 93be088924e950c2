"""The help screen under Pilot: `?` on every screen and dialog lists the keys that screen has now,
its panels' scroll keys and where things are; esc or `?` closes it; it scrolls at 80x24."""

from __future__ import annotations

import json
import re
import time

import pytest
from rich.console import Console

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.help import HelpScreen
from babyllama_tui.screens.pick_run import PickRunScreen
from babyllama_tui.widgets.corpus_list import CorpusList

from pilot_wait import wait_until
from run_fixtures import fill_run

SCREEN_KEYS = {"1": "corpora", "2": "train", "3": "monitor", "4": "playground"}


def shown_text(help_screen: HelpScreen, width: int) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(help_screen.text)
    return console.export_text()


def key_rows(shown: str) -> dict[str, list[str]]:
    """The help's key rows, "esc t   Runs (not now)", as {"Runs": ["esc", "t"]} (rows of the same
    description, such as the Train screen's Monitor and the app's, together)."""
    rows = {}
    for line in shown.splitlines():
        row = re.match(r"^(\S+(?: \S+)*?) {2,}(.+?)(?: \(not now\))?$", line.strip())
        if row:
            rows.setdefault(row[2], []).extend(row[1].split())
    return rows


async def open_help(pilot) -> HelpScreen:
    await pilot.press("question_mark")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "the help screen")
    return pilot.app.screen


def a_project(root):
    """A run and a corpus, so each screen has its panels."""
    fill_run(RunDir(root / "out" / "runs" / "first"), steps=300, max_steps=300, started=time.time() - 600)
    corpus = root / "data" / "c4" / "part-0.jsonl"
    corpus.parent.mkdir(parents=True)
    corpus.write_text(json.dumps({"text": "滚滚长江东逝水"}, ensure_ascii=False) + "\n")
    return root


def panels_ready(screen) -> bool:
    """The screen's panels hold what they list (the corpora are read by a worker)."""
    lists = screen.query(CorpusList)
    return not lists or bool(lists.first().entries)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_question_mark_opens_help_on_every_screen_with_its_keys_panels_and_where_things_are(tmp_path, size):
    app = BabyLlamaApp(root=a_project(tmp_path))
    async with app.run_test(size=size) as pilot:
        for key, mode in SCREEN_KEYS.items():
            await pilot.press(key)
            await wait_until(
                pilot, lambda: app.current_mode == mode and not isinstance(app.screen, HelpScreen), f"the {mode} screen"
            )
            screen = app.screen
            await wait_until(pilot, lambda: panels_ready(screen), f"the {mode} screen's panels")
            help_screen = await open_help(pilot)
            shown = shown_text(help_screen, help_screen.query_one("#help-text").size.width)
            text = " ".join(shown.split())
            # Every key the screen declares is listed with what it does (those of no use now marked so),
            rows = key_rows(shown)
            for binding in type(screen).BINDINGS:
                assert app.get_key_display(binding) in rows[binding.description], binding
            # with the app's keys, the panels' scroll keys, and where its things are on disk.
            assert "q ^q Quit" in text and "? Help" in text and "1 Corpora" in text
            assert f"Project folder: {tmp_path}" in text
            assert "pgdn Page down" in text, f"{mode}: a panel's page key"
            assert {
                "corpora": "data/NAME.bin",
                "train": "out/runs/NAME/",
                "monitor": "train.log",
                "playground": "checkpoints/step_NNNNNNN/",
            }[mode] in text
            scroll = help_screen.query_one("#help")
            assert scroll.region.width <= min(size[0], 102) and scroll.region.bottom <= size[1]
            if size == (80, 24):
                # Longer than the terminal: it scrolls, with the keys its subtitle names.
                assert scroll.max_scroll_y > 0
                await pilot.press("end")
                await wait_until(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y, "the end of the help")
            # ? closes it as esc does.
            await pilot.press("question_mark" if mode in ("train", "playground") else "escape")
            await wait_until(pilot, lambda: app.screen is screen, "the help to close")


async def test_help_on_a_dialog_lists_the_dialog_s_keys_and_in_a_text_field_question_mark_is_typed(tmp_path):
    app = BabyLlamaApp(root=a_project(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.follower, "the monitor")
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, PickRunScreen), "the run picker")
        dialog = app.screen
        help_screen = await open_help(pilot)
        text = " ".join(shown_text(help_screen, 76).split())
        assert "Keys of the dialog 'Monitor which run?'" in text and "esc Cancel" in text
        assert "Option list" in text and "⏎ Select" in text
        assert "only its own keys work" in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is dialog, "back on the dialog")
        await pilot.press("escape", "4")
        await wait_until(pilot, lambda: app.current_mode == "playground", "the playground")
        playground = app.screen
        playground.prompt_input.focus()
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: playground.prompt_input.value == "?", "the ? typed into the prompt")
        assert app.screen is playground
