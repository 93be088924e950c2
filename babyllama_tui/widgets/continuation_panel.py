"""ContinuationPanel: a prompt and its continuation as it streams in, in a box the stylesheet sizes.

Pieces arrive as fast as the model writes them; the panel repaints at most every REPAINT_S,
and repaints only itself (no layout), so a slow SSH link keeps up. It shows the end of the
text, wrapped to its width; when focused, the arrow and page keys scroll back.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

REPAINT_S = 0.2
# A model may write any character. Control characters would move the terminal's cursor behind
# the app's back and leave stray cells on screen: tabs become spaces, the rest a visible mark.
CONTROL_CHARACTERS = {code: "\ufffd" for code in (*range(0x20), *range(0x7F, 0xA0)) if code != 0x0A}
CONTROL_CHARACTERS.update({0x09: "    ", 0x0D: ""})


def printable(text: str) -> str:
    return text.translate(CONTROL_CHARACTERS)


class ContinuationPanel(Widget, can_focus=True):
    BINDINGS = [
        Binding("up", "scroll_lines(1)", "Scroll up", show=False),
        Binding("down", "scroll_lines(-1)", "Scroll down", show=False),
        Binding("pageup", "scroll_pages(1)", "Page up", show=False),
        Binding("pagedown", "scroll_pages(-1)", "Page down", show=False),
        Binding("home", "scroll_lines(1000000)", "Top", show=False),
        Binding("end", "scroll_lines(-1000000)", "End", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompt = ""
        self.text = ""
        self.hint = ""
        self.notes: list[Text] = []
        # Lines between the bottom of the text and the bottom of the box: 0 follows the newest line.
        self.lines_back = 0
        self._repaint_due = False
        self._wrapped: tuple[tuple, list[Text]] | None = None

    def show_hint(self, hint: str) -> None:
        """Dim text in place of a continuation: what to do, or what is happening."""
        self.prompt, self.text, self.notes, self.hint = "", "", [], hint
        self.lines_back = 0
        self.refresh()

    def start(self, prompt: str) -> None:
        self.prompt, self.text, self.notes, self.hint = printable(prompt), "", [], ""
        self.lines_back = 0
        self.refresh()

    def add(self, piece: str) -> None:
        self.text += printable(piece)
        self.repaint_soon()

    def repaint_soon(self) -> None:
        """Repaint within REPAINT_S: for text that streams in."""
        if not self._repaint_due:
            self._repaint_due = True
            self.set_timer(REPAINT_S, self._repaint)

    def _repaint(self) -> None:
        self._repaint_due = False
        self.refresh()

    def add_note(self, note: str, style: str) -> None:
        """A line after the text: a warning, an error, how the generation stopped."""
        self.notes.append(Text(note, style=style))
        self.refresh()

    def content_key(self) -> tuple:
        """Changes whenever `body` would."""
        return self.prompt, len(self.text), self.hint, len(self.notes)

    def body(self) -> Text:
        """Everything the panel holds, before wrapping."""
        body = Text()
        if self.hint:
            body.append(self.hint, style="dim italic")
        else:
            body.append(self.prompt, style="bold")
            body.append(self.text)
        for note in self.notes:
            if body:
                body.append("\n")
            body.append_text(note)
        return body

    def wrap(self, width: int) -> list[Text]:
        """Everything the panel holds, as lines of `width` cells."""
        return list(self.body().wrap(self.app.console, width, no_wrap=False, overflow="fold"))

    def _lines(self, width: int) -> list[Text]:
        key = (width, *self.content_key())
        if self._wrapped is not None and self._wrapped[0] == key:
            return self._wrapped[1]
        lines = self.wrap(width)
        self._wrapped = (key, lines)
        return lines

    def render(self) -> Text:
        width, height = self.content_size
        if width <= 0 or height <= 0:
            return Text()
        lines = self._lines(width)
        self.lines_back = max(0, min(self.lines_back, len(lines) - height))
        end = len(lines) - self.lines_back
        return Text("\n").join(lines[max(0, end - height):end])

    def action_scroll_lines(self, lines: int) -> None:
        self.lines_back = max(0, self.lines_back + lines)
        self.refresh()

    def action_scroll_pages(self, pages: int) -> None:
        self.action_scroll_lines(pages * max(1, self.content_size.height - 1))
