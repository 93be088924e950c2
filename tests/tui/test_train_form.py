"""The new-run form at 80 columns: choosing token files by keyboard, states readable without
colour, messages below their field, ctrl+l saying what to fix, warnings that do not block,
a default name that follows the clock out of sight, ctrl+u and its kin in every field, and a
project without token files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.corpora import CorporaScreen
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.training.new_run import NO_TOKEN_FILES
from babyllama_tui.widgets.new_run_form import NewRunForm

from pilot_wait import wait_until
from run_fixtures import fill_run, write_token_file

FILES = ("big-sample.bin", "big.bin", "sanguo.bin", "small.bin")


@pytest.fixture
def project(tmp_path) -> Path:
    tokenizer = tmp_path / "out" / "tokenizers" / "sanguo-bpe"
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer.model").write_bytes(b"stand-in")
    for name in FILES:
        write_token_file(tmp_path / "data", name, tokens=30_000, vocab_size=2000, tokenizer_path=str(tokenizer))
    return tmp_path


async def open_form(pilot) -> tuple[TrainScreen, NewRunForm]:
    screen = pilot.app.screen
    assert isinstance(screen, TrainScreen)
    if screen.pane != "new":
        await pilot.press("n")
    await wait_until(pilot, lambda: screen.form is not None and screen.form_check is not None, "the form")
    await pilot.pause()
    return screen, screen.form


def line_texts(widget) -> list[str]:
    return ["".join(segment.text for segment in widget.render_line(y)) for y in range(widget.size.height)]


async def test_down_moves_from_the_highlighted_file_and_the_choice_shows_without_colour(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        files = form.token_file_list
        assert app.focused is files and files.highlighted == 0, "the first file is highlighted on focus"
        await pilot.press("down", "down", "down", "space")
        await wait_until(pilot, lambda: files.selected, "a choice")
        assert files.selected == [project / "data" / "small.bin"]
        await pilot.pause()
        lines = [line for line in line_texts(files) if ".bin" in line]
        assert [line.split()[0:2] for line in lines] == [
            ["▐", "▌"], ["▐", "▌"], ["▐", "▌"], ["▐X▌", "small.bin"],
        ], lines
        assert all("30.0k tokens · sanguo-bpe, vocab 2,000" in line for line in lines), "nothing cut at 80 columns"
        assert form.tokenizer.value == "out/tokenizers/sanguo-bpe", "the files' tokenizer, relative to the project"


async def test_a_switch_shows_its_mark_only_when_on(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        on, off = form.rows["train.decay_lr"].editor, form.rows["train.eval_only"].editor
        assert on.value and not off.value
        assert str(on.render()).startswith("▐X▌") and str(off.render()).startswith("▐ ▌")
        off.value = True
        assert str(off.render()).startswith("▐X▌")


async def test_a_taken_name_is_explained_below_the_field_at_full_width(project):
    fill_run(RunDir(project / "out" / "runs" / "tiny-20261128-0806"), steps=40, max_steps=40,
             started=time.time() - 100)
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        form.name_input.focus()
        form.name_input.value = ""
        await pilot.press(*"tiny-20261128-0806")
        row = form.rows["name"]
        await wait_until(pilot, lambda: row.error is not None, "the name to be refused")
        assert row.error == ("tiny-20261128-0806 is taken: out/runs/tiny-20261128-0806 holds a run; "
                             "choose another name")
        await pilot.pause()
        assert row.has_class("-note-below")
        assert row.note.region.y > row.editor.region.y, "below the editor"
        assert row.note.region.width >= 70 and row.note.region.height <= 2


async def test_ctrl_l_names_the_fields_to_fix_and_focuses_the_first(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        form.workers_input.value = "0"
        await wait_until(pilot, lambda: set(screen.form_check.errors) == {"data", "workers"}, "two errors")
        form.rows["train.batch_size"].editor.focus()
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.focused is form.token_file_list
        messages = [n.message for n in app._notifications]
        assert any(m.startswith("cannot launch: fix token files, workers. token files: choose at least one")
                   for m in messages), messages
        assert not (project / "out" / "runs").exists()


async def test_intervals_beyond_max_steps_warn_without_blocking(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        await pilot.press("space")
        max_steps = form.rows["train.max_steps"].editor
        max_steps.value = "80"
        await wait_until(pilot, lambda: screen.form_check.warnings, "a warning")
        assert screen.form_check.plan is not None, "a warning does not block the launch"
        save, evaluation = form.rows["train.save_interval"], form.rows["train.eval_interval"]
        assert save.warning == "save_interval 200 is beyond max_steps 80: no checkpoint before the end"
        assert evaluation.warning.startswith("eval_interval")
        assert save.has_class("-warned") and not save.has_class("-invalid")
        assert "no checkpoint before the end" in str(screen.query_one("#summary-text").render())
        max_steps.value = "1000"
        await wait_until(pilot, lambda: not screen.form_check.warnings, "no warning")
        assert save.warning is None and not save.has_class("-note-below")


async def test_the_default_name_follows_the_clock_out_of_sight_until_a_name_is_typed(project):
    now = [time.mktime((2026, 11, 28, 10, 41, 5, 0, 0, -1))]
    app = BabyLlamaApp(root=project, clock=lambda: now[0])
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        assert form.name_input.value == "tiny-20261128-1041"
        # The runs pane hides the form at 80 columns.
        await pilot.press("escape")
        now[0] += 4 * 60
        await wait_until(pilot, lambda: form.name_input.value == "tiny-20261128-1045", "the name to follow")
        form.name_input.value = "mine"
        now[0] += 60
        await pilot.pause(0.6)
        assert form.name_input.value == "mine"


async def test_ctrl_u_clears_a_field_up_to_its_cursor_in_every_field_of_the_form(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        for editor in (form.name_input, form.tokenizer, form.workers_input, form.rows["train.learning_rate"].editor):
            editor.focus()
            await pilot.press("ctrl+u")
            assert editor.value == "", editor.id
        form.name_input.focus()
        await pilot.press(*"my first-run", "ctrl+w")
        assert form.name_input.value == "my first-"
        await pilot.press("home", "right", "right", "ctrl+k")
        assert form.name_input.value == "my"
        await pilot.press(*"-run", "left", "left", "left", "ctrl+u")
        assert form.name_input.value == "run" and form.name_input.cursor == 0
        assert app.screen is screen


async def test_a_project_without_token_files_says_so_plainly(tmp_path):
    # A corpus but no token file yet (an empty project opens on the Corpora screen instead).
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.jsonl").write_text('{"text": "话说天下大势"}\n', encoding="utf-8")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await open_form(pilot)
        assert screen.form_check.errors == {"data": NO_TOKEN_FILES}
        assert not form.token_file_list.display
        row = form.rows["data"]
        assert str(row.note.render()) == NO_TOKEN_FILES
        assert row.note.region.y == row.region.y and row.note.region.x >= 18, "beside the label, in the list's place"
        assert "1 to fix: no token files in data/ yet" in str(screen.query_one("#summary-text").render())
        assert app.focused is None
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert any(n.message == f"cannot launch: {NO_TOKEN_FILES}" for n in app._notifications)
        await pilot.press("1")
        await wait_until(pilot, lambda: isinstance(app.screen, CorporaScreen), "the Corpora screen")
        write_token_file(tmp_path / "data", "made.bin", tokens=30_000, vocab_size=2000, tokenizer_path="")
        await pilot.press("2")
        await wait_until(pilot, lambda: form.token_file_list.display, "the new token file")
        assert not row.has_class("-no-files")
        assert form.token_file_list.selected == [tmp_path / "data" / "made.bin"], "the first file made is chosen"
        await wait_until(pilot, lambda: "data" not in screen.form_check.errors, "the files' error to go")
