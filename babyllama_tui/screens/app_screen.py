"""AppScreen: the base of the four screens.

A screen shown again does not give its focus back to a text field. Its styling is left alone
while the theme stays the same (textual_fixes.StyledOnceScreen).
"""

from __future__ import annotations

from babyllama_tui.textual_fixes import StyledOnceScreen, takes_text


class AppScreen(StyledOnceScreen):
    # Textual calls the handler of each class a screen derives from: the screens' own on_screen_resume too.
    def on_screen_resume(self) -> None:
        self._out_of_text_fields()

    def _out_of_text_fields(self) -> None:
        """A screen shown again does not give its focus back to a text field: the number keys
        pressed next are meant to switch screens, and would have been typed into the field
        (the review's save_interval became 204 on 2 then 4). Focus goes to the first widget
        that takes no text; tab reaches the field again."""
        focused = self.focused
        if focused is None or not takes_text(focused):
            return
        self.set_focus(next((widget for widget in self.focus_chain if not takes_text(widget)), None))
