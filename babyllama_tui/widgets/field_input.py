"""FieldInput: a one-line editor for a short value, lighter than Textual's Input.

Every key is applied in `on_key`, none through bindings, so keys from one terminal read stay in
order. Why: docs/ARCHITECTURE.md, "Textual".
"""

from __future__ import annotations

import re

from rich.style import Style
from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

# What a value may look like while it is being typed, for each kind (Input's `type` names).
PARTIAL_VALUES = {
    "integer": re.compile(r"[-+]?\d*"),
    "number": re.compile(r"[-+]?\d*\.?\d*(?:[eE][-+]?\d*)?"),
    "text": re.compile(r".*"),
}
CURSOR = Style(reverse=True)
PLACEHOLDER = Style(dim=True)
# Keys that edit or move, and the method each calls: those of Textual's Input, as in the app's other fields.
EDITING_KEYS = {
    "left": "cursor_left",
    "right": "cursor_right",
    "home": "cursor_home",
    "ctrl+a": "cursor_home",
    "end": "cursor_end",
    "ctrl+e": "cursor_end",
    "backspace": "delete_left",
    "delete": "delete_right",
    "ctrl+d": "delete_right",
    "ctrl+u": "delete_left_all",
    "ctrl+k": "delete_right_all",
    "ctrl+w": "delete_left_word",
}
# What ctrl+w deletes: the word before the cursor, with the spaces after it.
WORD_BEFORE = re.compile(r"\w*\W*$")


class FieldInput(Widget, can_focus=True):
    """Posts `FieldInput.Changed` whenever its value changes, typed or set."""

    value: reactive[str] = reactive("", layout=False)
    cursor: reactive[int] = reactive(0)

    class Changed(Message):
        def __init__(self, field_input: FieldInput, value: str) -> None:
            super().__init__()
            self.field_input = field_input
            self.value = value

        @property
        def control(self) -> FieldInput:
            return self.field_input

    def __init__(self, value: str = "", *, kind: str = "text", placeholder: str = "", id: str | None = None,
                 classes: str = "") -> None:
        super().__init__(id=id, classes=classes)
        self.partial_value = PARTIAL_VALUES[kind]
        self.placeholder = placeholder
        self.set_reactive(FieldInput.value, value)
        self.set_reactive(FieldInput.cursor, len(value))

    def render(self) -> Text:
        width = max(self.size.width, 1)
        if not self.value and self.placeholder:
            text = Text(self.placeholder, style=PLACEHOLDER, no_wrap=True, end="")
            if self.has_focus:
                text.stylize(CURSOR, 0, 1)
            return text[:width]
        text = Text(self.value + " ", no_wrap=True, end="")
        if self.has_focus:
            text.stylize(CURSOR, self.cursor, self.cursor + 1)
        start = max(0, self.cursor + 1 - width)
        return text[start:start + width]

    def watch_value(self, value: str) -> None:
        """A value set from outside (a preset, the token files' vocabulary) puts the cursor at its
        end; the edits below put it back where they leave it."""
        self.cursor = len(value)
        self.post_message(self.Changed(self, value))

    def watch_cursor(self) -> None:
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def check_consume_key(self, key: str, character: str | None) -> bool:
        """Printable and editing keys are typing here, not the screen's or the app's keys."""
        return (character is not None and character.isprintable()) or key in EDITING_KEYS

    def on_key(self, event: events.Key) -> None:
        edit = EDITING_KEYS.get(event.key)
        if edit is None and not (event.is_printable and event.character is not None):
            return
        event.stop()
        event.prevent_default()
        if edit is None:
            self.insert(event.character)
        else:
            getattr(self, edit)()

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        if event.text:
            self.insert(event.text.splitlines()[0])

    def insert(self, text: str) -> None:
        value = self.value[:self.cursor] + text + self.value[self.cursor:]
        if self.partial_value.fullmatch(value):
            cursor = self.cursor + len(text)
            self.value = value
            self.cursor = cursor

    def cursor_left(self) -> None:
        self.cursor = max(0, self.cursor - 1)

    def cursor_right(self) -> None:
        self.cursor = min(len(self.value), self.cursor + 1)

    def cursor_home(self) -> None:
        self.cursor = 0

    def cursor_end(self) -> None:
        self.cursor = len(self.value)

    def delete_left(self) -> None:
        if self.cursor > 0:
            cursor = self.cursor - 1
            self.value = self.value[:cursor] + self.value[self.cursor:]
            self.cursor = cursor

    def delete_right(self) -> None:
        cursor = self.cursor
        self.value = self.value[:cursor] + self.value[cursor + 1:]
        self.cursor = cursor

    def delete_left_all(self) -> None:
        self.value = self.value[self.cursor:]
        self.cursor = 0

    def delete_right_all(self) -> None:
        cursor = self.cursor
        self.value = self.value[:cursor]
        self.cursor = cursor

    def delete_left_word(self) -> None:
        before = self.value[:self.cursor]
        cursor = len(before) - len(WORD_BEFORE.search(before).group())
        self.value = self.value[:cursor] + self.value[self.cursor:]
        self.cursor = cursor
