"""The header of every screen: the app's name and a tab bar of the four screens and their keys.

The footer cannot hold the four screen keys with their names beside a screen's own keys at
80 columns, so the names live here, with the screen being shown picked out, and the footer
groups the keys as "1234 screens". The screen's sub-title (the monitor's run) follows the
tabs when the header is wide enough for it.
"""

from __future__ import annotations

from textual.content import Content

from babyllama_tui.textual_fixes import ResizedTitleHeader

# (mode, key, name) in key order; the app's bindings and modes use the same names.
SCREENS = (("corpora", "1", "Corpora"), ("train", "2", "Train"), ("monitor", "3", "Monitor"),
         ("playground", "4", "Playground"))
# Columns the header's icon and clock space take beside the title.
HEADER_EDGES = 20


class ModeHeader(ResizedTitleHeader):
    """Header for the screen that is mode `mode`."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def format_title(self) -> Content:
        parts: list[tuple[str, str] | str] = [("babyllama", "bold"), "  "]
        for mode, key, name in SCREENS:
            if mode == self.mode:
                parts.append((f" {key} {name} ", "reverse bold"))
            else:
                parts += [(f" {key}", "bold"), (f" {name} ", "dim")]
        title = Content.assemble(*parts)
        sub_title = self.screen_sub_title
        if sub_title and title.cell_length + 2 + Content(sub_title).cell_length <= self.size.width - HEADER_EDGES:
            title = Content.assemble(title, "  ", (sub_title, "dim"))
        return title
