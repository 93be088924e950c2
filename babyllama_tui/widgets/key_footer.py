"""The footer of every screen, rebuilt only when the keys it shows change.

Textual's footer throws its key widgets away and mounts new ones each time the screen's
bindings are refreshed: on every focus change, and on every `refresh_bindings()` a screen
makes when its state moves. At start-up that was seven rebuilds, and ten on the first visit
to the Playground, each mounting and restyling a widget per key. Most of them showed the same
keys as before.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


def shown_keys(screen: Screen) -> tuple:
    """What the footer draws of a screen's bindings: a change here, and only here, needs a rebuild."""
    return tuple(
        (binding.key, binding.description, binding.action, binding.group, enabled, tooltip)
        for _, binding, enabled, tooltip in screen.active_bindings.values()
        if binding.show
    )


class KeyFooter(Footer):
    """A Footer that skips the rebuilds which would show the same keys."""

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
