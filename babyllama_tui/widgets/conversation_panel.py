"""ConversationPanel: one panel's side of the Playground's chat, its turns as they stream in.

A ContinuationPanel (the same box, throttled repaints and scrolling back) that draws the turns
panel `slot` was asked from the shared `Conversation`: the system prompt where it changes, each
user turn in bold after a marker, the panel's own answer below it, and the server's notes.
A line of its own (`notice`) says why the panel cannot chat, when it cannot.
"""

from __future__ import annotations

from rich.text import Text

from babyllama_tui.playground.conversation import Conversation
from babyllama_tui.widgets.continuation_panel import ContinuationPanel, printable

NOTE_STYLES = {"warning": "yellow", "stopped": "italic yellow", "error": "bold red"}
USER_MARK = Text("› ", style="bold cyan")
SYSTEM_MARK = Text("system ", style="dim")


class ConversationPanel(ContinuationPanel):
    def __init__(self, conversation: Conversation, slot: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conversation = conversation
        self.slot = slot
        self.notice = ""
        # Counts the changes to the conversation the screen has told of: the wrapped lines' cache key.
        self.changes = 0

    def changed(self, *, now: bool = False) -> None:
        """The conversation changed: repaint at once, or soon when a piece of an answer has streamed in."""
        self.changes += 1
        if now:
            self.refresh()
        else:
            self.repaint_soon()

    def show_notice(self, notice: str) -> None:
        """One line on why this panel cannot answer ("" for none)."""
        self.notice = notice
        self.changed(now=True)

    def content_key(self) -> tuple:
        return self.changes, self.hint, self.notice

    def _block(self, text: Text, width: int, mark: Text | None = None) -> list[Text]:
        """`text` wrapped, after `mark` with its later lines indented as far: a line of Chinese,
        which has no spaces, starts beside the mark rather than below it."""
        indent = mark.cell_len if mark is not None else 0
        lines = text.wrap(self.app.console, max(1, width - indent), no_wrap=False, overflow="fold")
        if mark is None:
            return list(lines)
        return [Text.assemble(mark if n == 0 else " " * indent, line) for n, line in enumerate(lines)]

    def wrap(self, width: int) -> list[Text]:
        lines: list[Text] = []
        system = ""
        for exchange, answer in self.conversation.answered(self.slot):
            if lines:
                lines.append(Text())
            if exchange.system and exchange.system != system:
                lines += self._block(Text(printable(exchange.system), style="dim italic"), width, SYSTEM_MARK)
            system = exchange.system
            lines += self._block(Text(printable(exchange.user), style="bold"), width, USER_MARK)
            lines += self._block(Text(printable(answer.text)), width)
            for kind, message in answer.notes:
                lines += self._block(Text(message, style=NOTE_STYLES.get(kind, "")), width)
        if self.notice:
            lines += self._block(Text(self.notice, style="yellow"), width)
        elif not lines and self.hint:
            lines += self._block(Text(self.hint, style="dim italic"), width)
        return lines
