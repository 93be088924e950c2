"""Playground screen: Continue prompts with any saved checkpoint."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class PlaygroundScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Continue prompts with any saved checkpoint.", classes="placeholder")
        yield Footer()
