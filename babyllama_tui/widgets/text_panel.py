"""TextPanel: text in a box whose size the stylesheet fixes; changing the text repaints only the box.

`Static.update` asks for a new layout, and after a layout Textual repaints the whole screen:
several times a second on the monitor, that would resend every cell over the SSH link.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class TextPanel(Widget):
    def __init__(self, text: str | Text = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = Text(text) if isinstance(text, str) else text

    def show(self, text: str | Text) -> None:
        text = Text(text) if isinstance(text, str) else text
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return self.text
