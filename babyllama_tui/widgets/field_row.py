"""FieldRow: one form field on one line: its name, its editor, and what it means or what is wrong with it."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static


class FieldRow(Widget):
    """The note beside the editor shows the field's help. An error (the value is invalid) or a
    warning (allowed, but probably not meant) takes its place, on the lines below the editor at
    the row's full width, where a long message stays readable on a narrow terminal. A field
    without help (its editor says enough) shows the note only for an error or a warning.

    The row draws the field's name itself, under the editor's left margin, in the row's colour,
    rather than holding a Label: the new-run form's rows are most of the app's widgets, and
    every style, layout and mount pass visits each one. For the same reason the name's bold
    and reverse are set here instead of through component classes, each of which costs a
    style pass of its own on every row.

    Its parts exist from construction, so a form can read and mark it before it is mounted.
    """

    def __init__(self, key: str, label: str, editor: Widget, help_text: str, *, classes: str = "") -> None:
        super().__init__(classes=f"field-row {classes}".strip())
        self.key = key
        self.label = label
        self.editor = editor
        self.help_text = help_text
        self.error: str | None = None
        self.warning: str | None = None
        self.note = Static(help_text, classes="field-note", markup=False)
        self.note.display = bool(help_text)

    def compose(self) -> ComposeResult:
        yield self.editor
        yield self.note

    def render(self) -> Text:
        focused = self.has_focus_within
        style = Style(bold=focused or self.error is not None or None, reverse=focused or None)
        return Text(self.label, style=style, no_wrap=True)

    def on_descendant_focus(self) -> None:
        self.refresh()

    def on_descendant_blur(self) -> None:
        self.refresh()

    def show_error(self, message: str | None) -> None:
        if message != self.error:
            self.error = message
            self._show_note()

    def show_warning(self, message: str | None) -> None:
        if message != self.warning:
            self.warning = message
            self._show_note()

    def show_help(self, help_text: str) -> None:
        self.help_text = help_text
        self._show_note()

    def _show_note(self) -> None:
        problem = self.error or self.warning
        self.set_class(self.error is not None, "-invalid")
        self.set_class(self.error is None and self.warning is not None, "-warned")
        self.set_class(problem is not None, "-note-below")
        self.note.update(problem or self.help_text)
        self.note.display = bool(problem or self.help_text)
