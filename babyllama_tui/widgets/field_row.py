"""FieldRow: one form field on one line: its name, its editor, and what it means or what is wrong with it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Label, Static


class FieldRow(Horizontal):
    """The note beside the editor shows the field's help, or in its place the error while the value is invalid.
    A field without help (its editor says enough) shows the note only for an error.

    Its parts exist from construction, so a form can read and mark it before it is mounted.
    """

    def __init__(self, key: str, label: str, editor: Widget, help_text: str) -> None:
        super().__init__(classes="field-row")
        self.key = key
        self.editor = editor
        self.help_text = help_text
        self.error: str | None = None
        self.label = Label(label, classes="field-label")
        self.note = Static(help_text, classes="field-note", markup=False)
        self.note.display = bool(help_text)

    def compose(self) -> ComposeResult:
        yield self.label
        yield self.editor
        yield self.note

    def show_error(self, message: str | None) -> None:
        if message == self.error:
            return
        self.error = message
        self.set_class(message is not None, "-invalid")
        self.note.update(message or self.help_text)
        self.note.display = bool(message or self.help_text)

    def show_help(self, help_text: str) -> None:
        self.help_text = help_text
        if self.error is None:
            self.note.update(help_text)
