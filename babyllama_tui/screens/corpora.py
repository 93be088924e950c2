"""Corpora screen: Corpus files and token files under data/, and tokenization."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class CorporaScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Corpus files and token files under data/, and tokenization.", classes="placeholder")
        yield Footer()
