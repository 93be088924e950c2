"""Monitor screen: One run, live: loss, speed, memory, samples and log."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class MonitorScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("One run, live: loss, speed, memory, samples and log.", classes="placeholder")
        yield Footer()
