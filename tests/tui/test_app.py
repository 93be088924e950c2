"""The app starts and shows its home screen (Textual's Pilot, a real headless app)."""

from __future__ import annotations

from textual.widgets import Static

from babyllama_tui.app import BabyLlamaApp


async def test_home_screen_names_the_working_folder(tmp_path):
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        welcome = app.query_one("#welcome", Static)
        assert str(tmp_path) in str(welcome.render())
        await pilot.press("q")
    assert app.return_code == 0
