"""Dialog: the base of the app's modal screens, for what ctrl+c does in them.

Textual 8.2.8 binds ctrl+c on a screen to copying the text selected with the mouse and, when
nothing is selected, passes it on to the App's "press ctrl+q to quit" hint; a modal screen's keys
stop before the App's, so in a dialog ctrl+c did nothing at all. Here it still copies a mouse
selection; otherwise it calls `interrupt`: what esc does (cancel, no, close), unless the dialog
has something better to give, such as its text to copy.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import ModalScreen, ScreenResultType


class Dialog(ModalScreen[ScreenResultType]):
    BINDINGS = [Binding("ctrl+c", "interrupt", "Copy the selection, else as esc", show=False)]

    async def action_interrupt(self) -> None:
        selected = self.get_selected_text()
        if selected:
            self.app.copy_to_clipboard(selected)
        else:
            await self.interrupt()

    async def interrupt(self) -> None:
        """What esc does here."""
        escape = self.active_bindings.get("escape")
        if escape is not None:
            await self.app.run_action(escape.binding.action, escape.node)
