"""Every place the app works around Textual 8.2.8, each with its upstream issue and what to delete when fixed.

Textual is pinned to `TEXTUAL_VERSION`; tests/tui/test_textual_fixes.py fails on another
version. How to re-check the workarounds after an upgrade: docs/ARCHITECTURE.md, "Textual".
"""

from __future__ import annotations

import asyncio
import contextlib

from textual import events
from textual.app import App
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.widgets._header import HeaderTitle

TEXTUAL_VERSION = "8.2.8"

# The longest a bound key waits for the focused widget to take the keys typed before it.
FIELD_CATCH_UP_S = 1.0
FOCUS_ACTIONS = {"focus_next", "focus_previous"}


def takes_text(widget) -> bool:
    """Whether `widget` is a text field: it takes the typed characters (Textual's Input, our
    FieldInput), so a printable key is typed there rather than run as a binding."""
    return widget.check_consume_key("x", "x")


class KeysInOrderApp(App):
    """Keys that arrive together are applied in the order they were typed (`_key_in_order`).

    Textual issue 6605. PR 6631 (open, not in 8.2.8) would run Input's and TextArea's own
    editing bindings in order, not tab. Delete this class, and derive BabyLlamaApp from App, once
    tests/tui/test_app.py::test_keys_arriving_together_are_applied_in_order passes without it
    (on 8.2.8 it fails: "abcxy" for "yaxcz").
    """

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded and await self._key_in_order(event):
            return
        await super().on_event(event)

    async def _key_in_order(self, event: events.Key) -> bool:
        """Run tab, or a text field's editing key, only once the focused widget has taken the keys before it.

        Textual hands a key straight to the focused widget, but runs a key bound on it or
        above it (a text field's backspace, arrows, home...; tab anywhere) only once the key
        has bubbled back up to the app, and meanwhile hands the widget the keys after it. Keys
        that arrive together (a fast typist, or an SSH link that sends several in one packet)
        were applied out of order: backspace then 6 on "45" gave "45", not "46", and tab then
        5 put the 5 in the widget being left, a checkbox that dropped it (Textual issue 6605).
        Here the app waits for the widget to take what it was handed, then runs the binding
        itself, before it reads the next key. Other keys take Textual's way, where the widgets
        around the focused one see them first; so does a binding whose action declines (a
        one-line field asked to scroll). Our FieldInput handles its own editing keys in order;
        only tab comes here from it."""
        focused = self.focused
        # A typed character is neither tab nor an editing key: it skips the bindings map,
        # which asks every screen and widget up the chain about each of its keys.
        if focused is None or event.is_printable:
            return False
        active = self.screen.active_bindings.get(event.key)
        if active is None or active.binding.priority or not active.enabled:
            return False
        moves_focus = active.binding.action.rpartition(".")[2] in FOCUS_ACTIONS
        edits_text = active.node is focused and takes_text(focused)
        if not (moves_focus or edits_text):
            return False
        caught_up = asyncio.Event()
        focused.call_later(caught_up.set)
        with contextlib.suppress(asyncio.TimeoutError):
            # A widget removed meanwhile never catches up: then go on after a moment.
            await asyncio.wait_for(caught_up.wait(), FIELD_CATCH_UP_S)
        self.app_focus = True
        return await self.run_action(active.binding.action, active.node)


class StyledOnceApp(App):
    """Re-parses the CSS and restyles the screens only when the theme changed (with StyledOnceScreen).

    Textual calls `refresh_css` from `switch_mode` (PR 5211, which notes it could be avoided
    when not strictly required; since PR 5221 only at a screen's first showings). Showing the
    Corpora, Monitor and Playground screens for the first time re-parsed the CSS six times and
    made 1,043 node restyles without the override below, 666 with it. Delete this class and
    StyledOnceScreen when Textual re-parses and restyles only when the CSS changed.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Textual made the stylesheet with these variables just now.
        self._styled_with = self.style_inputs()
        self._first_styled = False

    def style_inputs(self) -> tuple:
        """What the app's styles are made from: a change means every node must be restyled."""
        return self.theme, self.ansi_theme, self.get_css_variables()

    def refresh_css(self, animate: bool = True) -> None:
        """Re-parse the CSS and restyle every screen only when the theme has changed.

        Textual calls this as the first screen is shown, and the first two times each other
        screen is shown; each call re-parsed all the CSS and restyled every node of every screen
        (the new-run form's included): a tenth of the start-up, and a second's delay on a busy
        machine at a screen's first showing. The variables are those the stylesheet was made
        with, so the first call only restyles the nodes (the theme's classes came after the first
        screen's nodes were styled), and later calls do nothing; a new screen's widgets are
        styled as they mount."""
        styled_with = self.style_inputs()
        if styled_with != self._styled_with:
            self._styled_with = styled_with
            super().refresh_css(animate)
        elif not self._first_styled:
            self._first_styled = True
            self.stylesheet.update(self, animate=animate)


def size_class(dimension: int, breakpoints: list[tuple[int, str]] | None) -> str | None:
    """The class Textual gives a screen for `dimension` cells: the highest breakpoint reached."""
    reached = [(at, name) for at, name in breakpoints or () if dimension >= at]
    return max(reached)[1] if reached else None


class StyledOnceScreen(Screen):
    """A screen styled once as it mounts, and again only when the theme changed (the app must be a StyledOnceApp).

    Textual restyles every node of a screen each time it is shown, in case the CSS changed
    while it was hidden: 173 nodes on the Train screen, a fifth of a second on a busy machine
    at every switch back to it. Here the CSS changes only with the theme (see
    `StyledOnceApp.refresh_css`), so a screen shown again is restyled only if the theme is not
    the one it was styled with: `ScreenResume.refresh_styles` (PR 6314) says so, which
    `App.switch_mode` always leaves True. Eight screen switches made 1,033 node restyles
    without `_on_screen_resume` below, 84 with it.

    Textual also sets the size classes (HORIZONTAL_BREAKPOINTS, VERTICAL_BREAKPOINTS) at a
    screen's first resize, after its nodes mounted, and restyles them all (PR 6464 made the
    later changes cheaper, not this one); `__init__` sets them before the nodes mount: 146
    node restyles fewer from start-up to the first showing of each screen. Delete `__init__`
    when Textual sets them before mounting, and the class with StyledOnceApp.
    """

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


def shown_keys(screen: Screen) -> tuple:
    """What the footer draws of a screen's bindings: a change here, and only here, needs a rebuild."""
    return tuple(
        (binding.key, binding.description, binding.action, binding.group, enabled, tooltip)
        for _, binding, enabled, tooltip in screen.active_bindings.values()
        if binding.show
    )


class KeyFooter(Footer):
    """A Footer that skips the rebuilds which would show the same keys.

    Textual's footer throws its key widgets away and mounts new ones each time the screen's
    bindings are refreshed: on every focus change, and on every `refresh_bindings()` a screen
    makes when its state moves. At start-up that was seven rebuilds, and ten on the first visit
    to the Playground, each mounting and restyling a widget per key; most showed the same keys
    as before. Start-up and a first visit to each screen mounted 66 key widgets with this
    class, 386 without. No upstream issue; `compose` reads Footer's private `_bindings_ready`
    (PR 4584). Delete the class, and use Footer, when Footer rebuilds only when its keys change.
    """

    def __init__(self, *, compact: bool = False) -> None:
        super().__init__(compact=compact)
        # The keys of the last rebuild, done or asked for: several refreshes can come before
        # the footer's next refresh, when a rebuild asked for is done.
        self._keys: tuple | None = None

    def compose(self):
        if self._bindings_ready:
            self._keys = shown_keys(self.screen)
        return super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        if screen is not self.screen or not self.is_attached or not screen.app.app_focus:
            super().bindings_changed(screen)
            return
        keys = shown_keys(screen)
        if keys != self._keys:
            self._keys = keys
            super().bindings_changed(screen)


class ResizedTitleHeader(Header):
    """A Header whose title is formatted again when its width changes.

    Header formats its title (`format_title`, PR 6051) only when a title or sub-title changes;
    ModeHeader's depends on the width too, and the only way to the title widget is the private
    module `textual.widgets._header`. No upstream issue. Delete the class (ModeHeader then
    derives from Header) once tests/tui/test_textual_fixes.py's header test passes without it.
    """

    def on_resize(self, _: Resize) -> None:
        self.query_one(HeaderTitle).update(self.format_title())
