"""ctrl+c in the app's dialogs (Pilot): what esc does (no, cancel, close), where Textual 8.2.8 did
nothing at all in a modal screen; the run's settings copied where that is what the dialog holds."""

from __future__ import annotations

import time

from test_train_manage import choose, ended

from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.screens.help import HelpScreen
from babyllama_tui.screens.run_config import RunConfigScreen
from babyllama_tui.screens.run_text import RunTextScreen
from babyllama_tui.screens.train import TrainScreen


async def test_ctrl_c_answers_no_cancels_and_closes(tmp_path):
    run = ended(tmp_path, "old", started=time.time() - 60, state="finished", checkpoint=100)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await choose(pilot, "old")
        for key, dialog in (("d", ConfirmScreen), ("R", RunTextScreen), ("question_mark", HelpScreen)):
            await pilot.press(key)
            assert isinstance(app.screen, dialog)
            await pilot.press("ctrl+c")
            assert isinstance(app.screen, TrainScreen), f"{dialog.__name__} is still open after ctrl+c"
        assert run.path.is_dir(), "ctrl+c on the delete question is no"


async def test_ctrl_c_copies_how_a_run_was_started(tmp_path):
    run = ended(tmp_path, "old", started=time.time() - 60, state="finished", checkpoint=100)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await choose(pilot, "old")
        await pilot.press("i")
        assert isinstance(app.screen, RunConfigScreen)
        await pilot.press("ctrl+c")
        assert isinstance(app.screen, RunConfigScreen), "the settings stay shown"
        assert app.clipboard.splitlines()[0].split() == ["folder", str(run.path)]
        await pilot.press("escape")
        assert isinstance(app.screen, TrainScreen)


def test_every_modal_screen_of_the_app_is_a_dialog():
    """ctrl+c means the same in every dialog: one written as a bare ModalScreen did nothing on it."""
    import importlib
    import inspect
    import pkgutil

    from textual.screen import ModalScreen

    import babyllama_tui
    from babyllama_tui.widgets.dialog import Dialog

    bare = []
    for module_info in pkgutil.walk_packages(babyllama_tui.__path__, "babyllama_tui."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and value.__module__ == module.__name__ and issubclass(value, ModalScreen)
                    and not issubclass(value, Dialog)):
                bare.append(f"{module.__name__}.{name}")
    assert bare == []
