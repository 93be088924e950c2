"""Train screen: New training runs, and the table of runs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class TrainScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("New training runs, and the table of runs.", classes="placeholder")
        yield Footer()
