"""The app starts, the number keys move between its four screens, and each screen keeps its
footer, size classes and theme right while it is not re-styled on every showing (Textual's Pilot)."""

from __future__ import annotations

import time
from pathlib import Path

from textual import events
from textual.color import Color
from textual.command import CommandList, CommandPalette
from textual.screen import Screen
from textual.widgets import Checkbox, Input
from textual.widgets._footer import FooterKey

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.corpora import CorporaScreen
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.playground import PlaygroundScreen
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.widgets.field_input import FieldInput
from babyllama_tui.widgets.runs_table import RunsTable

from pilot_wait import footer_settled, wait_until
from run_fixtures import fill_run

SCREEN_KEYS = [("1", CorporaScreen), ("3", MonitorScreen), ("4", PlaygroundScreen), ("2", TrainScreen)]


def begun(root: Path) -> Path:
    """A project with its out/ folder made: the app opens on the Train screen."""
    (root / "out" / "runs").mkdir(parents=True)
    return root


async def test_number_keys_switch_screens(tmp_path):
    app = BabyLlamaApp(root=begun(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, TrainScreen)
        for key, screen in SCREEN_KEYS:
            await pilot.press(key)
            assert isinstance(app.screen, screen)
        await pilot.press("q")
    assert app.return_code == 0


async def test_an_empty_folder_opens_on_the_corpora_screen(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)):
        assert isinstance(app.screen, CorporaScreen)


async def test_the_new_run_form_is_built_when_the_train_screen_is_first_shown_from_another_screen(tmp_path):
    """An empty folder opens on Corpora; the Train screen shown from there built no form and stayed
    at its "Reading the form's fields…" line until n was pressed."""
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        await wait_until(pilot, lambda: screen.form is not None and screen.form.is_mounted, "the form", limit=10)
        assert not screen.query("#form-loading")


async def test_the_footer_shows_the_keys_of_the_highlighted_run(tmp_path):
    runs = tmp_path / "out" / "runs"
    ended = RunDir(runs / "ended")
    fill_run(ended, steps=50, max_steps=50, started=time.time() - 7200, state="finished")
    saved = ended.checkpoint_temp_path(50)
    saved.mkdir()
    ended.publish_checkpoint(saved, 50)  # resume is offered only with a checkpoint to resume from
    fill_run(RunDir(runs / "live"), steps=40, max_steps=1000, started=time.time() - 60, state="running")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.row_count == 2 and table.has_focus, "the runs")
        shown = []
        for key in ("", "down", "up"):
            if key:
                await pilot.press(key)
            await wait_until(pilot, lambda: footer_settled(screen), "the footer")
            actions = {active.binding.action for active in screen.active_bindings.values() if active.binding.show}
            shown.append((table.highlighted_run.name, "stop_run" in actions, "resume_run" in actions))
        assert shown == [("live", True, False), ("ended", False, True), ("live", True, False)]


async def test_each_screen_takes_its_size_class_before_it_shows_and_follows_a_resize(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        for key, screen_type in SCREEN_KEYS:
            await pilot.press(key)
            if screen_type.HORIZONTAL_BREAKPOINTS:
                assert app.screen.has_class("-narrow") and not app.screen.has_class("-wide"), screen_type
        train = app.screen
        await pilot.resize_terminal(200, 50)
        await wait_until(pilot, lambda: train.has_class("-wide") and not train.has_class("-narrow"), "the wide layout")
        await wait_until(pilot, lambda: train.query_one("#runs-pane").display and train.query_one("#new-run-pane").display,
                         "both panes side by side")
        await pilot.press("3")
        monitor = app.screen
        await wait_until(pilot, lambda: monitor.has_class("-wide") and monitor.has_class("-tall"),
                         "the monitor, hidden while the terminal grew, to take the wide layout")


async def test_a_theme_chosen_while_a_screen_is_hidden_restyles_it_when_shown(tmp_path):
    app = BabyLlamaApp(root=begun(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        train = app.screen
        dark = train.styles.background
        await pilot.press("3")
        app.theme = "textual-light"
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        assert app.screen is train
        assert train.styles.background != dark
        assert train.styles.background == Color.parse(app.current_theme.background)


class TwoFields(Screen):
    """Two text fields one after the other, on top of the app's screens; up is the screen's key."""

    BINDINGS = [("up", "count_up", "Up")]

    def __init__(self) -> None:
        super().__init__()
        self.ups = 0

    def action_count_up(self) -> None:
        self.ups += 1

    def compose(self):
        yield Input("ab", id="first", select_on_focus=False)
        yield Input("", id="second", select_on_focus=False)
        yield FieldInput("8", kind="integer", id="third")
        yield Checkbox("fourth", id="fourth")
        yield Input("", id="fifth", select_on_focus=False)


async def keys_at_once(pilot, *keys: str) -> None:
    """Keys arriving together, as several keys in one packet over SSH: nothing runs between them."""
    for key in keys:
        character = key if len(key) == 1 else None
        pilot.app.post_message(events.Key(key, character))
    await pilot.pause(0.3)


async def test_keys_arriving_together_are_applied_in_order(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.push_screen(TwoFields())
        first, second = app.screen.query_one("#first", Input), app.screen.query_one("#second", Input)
        first.focus()
        first.cursor_position = 2
        await pilot.pause()
        await keys_at_once(pilot, "backspace", "c", "left", "x", "home", "y", "end", "z")
        assert first.value == "yaxcz"
        await keys_at_once(pilot, "tab", "4", "2", "shift+tab", "!")
        assert (first.value, second.value) == ("yaxcz!", "42")
        assert app.focused is first
        # A field cannot scroll, so its own up declines and the screen's up runs, as in Textual.
        await keys_at_once(pilot, "up", "?")
        assert (app.screen.ups, first.value) == (1, "yaxcz!?")
        third = app.screen.query_one("#third", FieldInput)
        third.focus()
        await pilot.pause()
        await keys_at_once(pilot, "backspace", "9", "shift+tab", "7")
        assert (second.value, third.value) == ("427", "9")
        app.screen.query_one("#fourth", Checkbox).focus()
        await pilot.pause()
        # From a widget that takes no text, the keys after tab go to the field it moves to.
        await keys_at_once(pilot, "tab", "1", "2", "backspace", "3")
        assert app.screen.query_one("#fifth", Input).value == "13"


def palette_entries(app) -> list[tuple[str, str]]:
    """(title, help) of each entry the open command palette lists."""
    options = app.screen.query_one(CommandList)
    entries = []
    for index in range(options.option_count):
        hit = options.get_option_at_index(index)
        lines = str(hit.prompt).splitlines()
        entries.append((lines[0].strip(), " ".join(lines[1:]).strip()))
    return entries


async def test_the_palette_lists_each_key_once_under_the_footer_s_key(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette)
                         and app.screen.query_one(CommandList).option_count > 5, "the palette's entries")
        entries = palette_entries(app)
        titles = [title for title, _ in entries]
        assert titles.count("Quit") == 1 and ("Quit", "key: q") in entries
        assert "palette" not in titles and "Keys" not in titles
        assert {"Corpora", "Train", "Monitor", "Playground"} <= set(titles)


async def test_back_on_a_screen_the_number_keys_switch_screens_and_are_not_typed(tmp_path):
    app = BabyLlamaApp(root=begun(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        train = app.screen
        await wait_until(pilot, lambda: train.form is not None and train.query(FieldInput), "the form")
        field = train.query(FieldInput).last()
        field.focus()
        await pilot.pause()
        before = field.value
        assert "escape" in {key.key for key in train.query(FooterKey)}, "the way out of a field is shown"
        await pilot.press("3")
        assert app.screen is train and field.value.endswith("3"), "in a field the 3 is typed"
        await pilot.press("backspace")
        assert field.value == before
        # Leaving with the field focused, as a launch does (it shows the Monitor), or the palette.
        await app.run_action("switch_mode('monitor')")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)
        await pilot.press("2")
        assert app.screen is train and not app.focused.check_consume_key("x", "x")
        await pilot.press("4")
        assert isinstance(app.screen, PlaygroundScreen) and field.value == before
