"""The app starts, and the number keys move between its four screens (Textual's Pilot)."""

from __future__ import annotations

from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.corpora import CorporaScreen
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.playground import PlaygroundScreen
from babyllama_tui.screens.train import TrainScreen


async def test_number_keys_switch_screens(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, TrainScreen)
        for key, screen in [("1", CorporaScreen), ("3", MonitorScreen), ("4", PlaygroundScreen), ("2", TrainScreen)]:
            await pilot.press(key)
            assert isinstance(app.screen, screen)
        await pilot.press("q")
    assert app.return_code == 0
