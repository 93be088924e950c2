"""AppScreen: the base of the four screens, styled once as it mounts and again only when needed.

Textual restyles every node of a screen each time it is shown, in case the CSS changed while
it was hidden: 173 nodes on the Train screen, a fifth of a second on a busy machine at every
switch back to it. Here the CSS changes only with the theme (see `BabyLlamaApp.refresh_css`),
so a screen is restyled when shown only if the theme is not the one it was styled with.

It also restyled every node once more on a screen's first showing, when the size classes
(HORIZONTAL_BREAKPOINTS, VERTICAL_BREAKPOINTS) were set; they are set before its nodes mount.
"""

from __future__ import annotations

from textual import events
from textual.screen import Screen


def takes_text(widget) -> bool:
    """Whether `widget` is a text field: it takes the typed characters (Textual's Input, our
    FieldInput), so a printable key is typed there rather than run as a binding."""
    return widget.check_consume_key("x", "x")


def size_class(dimension: int, breakpoints: list[tuple[int, str]] | None) -> str | None:
    """The class Textual gives a screen for `dimension` cells: the highest breakpoint reached."""
    reached = [(at, name) for at, name in breakpoints or () if dimension >= at]
    return max(reached)[1] if reached else None


class AppScreen(Screen):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        app = self.app
        width, height = app.size
        across = self.HORIZONTAL_BREAKPOINTS if self.HORIZONTAL_BREAKPOINTS is not None else app.HORIZONTAL_BREAKPOINTS
        down = self.VERTICAL_BREAKPOINTS if self.VERTICAL_BREAKPOINTS is not None else app.VERTICAL_BREAKPOINTS
        for name in (size_class(width, across), size_class(height, down)):
            if name is not None:
                self.add_class(name, update=False)
        # What the theme was when this screen's nodes were styled; they are styled as they
        # mount, just before the screen is first shown.
        self._styled_with: tuple | None = None

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        # Textual runs this before Screen's own handler, which reads `refresh_styles`.
        styled_with = self.app.style_inputs()
        if self._styled_with in (None, styled_with):
            event.refresh_styles = False
        self._styled_with = styled_with
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
