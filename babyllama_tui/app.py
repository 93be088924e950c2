"""BabyLlamaApp: the terminal app. It reads and starts babyllama's files and processes.

Four screens, one a mode, switched with the number keys or the command palette:
corpora (data/ and tokenization), train (new runs and the runs table), monitor (one run,
live) and playground (continue prompts with a checkpoint). Long work happens in child
processes that outlive the app; the app only reads their files and streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from babyllama import __version__
from babyllama.runs import TRAIN_PROGRAM
from babyllama_tui.screens.app_screen import takes_text
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.widgets.mode_header import SCREENS

# The longest a bound key waits for the focused widget to take the keys typed before it.
FIELD_CATCH_UP_S = 1.0
FOCUS_ACTIONS = {"focus_next", "focus_previous"}

# The header names the screens; the footer only reminds of their keys.
SCREEN_KEYS = Binding.Group("screens", compact=True)


# The screens not shown first are imported when first shown: together with their widgets and
# libraries (the monitor's chart and numpy) they would add a fifth of a second to every start.


def corpora_screen() -> Screen:
    from babyllama_tui.screens.corpora import CorporaScreen

    return CorporaScreen()


def monitor_screen() -> Screen:
    from babyllama_tui.screens.monitor import MonitorScreen

    return MonitorScreen()


def playground_screen() -> Screen:
    from babyllama_tui.screens.playground import PlaygroundScreen

    return PlaygroundScreen()


def any_entry(folder: Path) -> bool:
    """Whether `folder` exists and holds anything, without listing all of it."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except (FileNotFoundError, NotADirectoryError):
        return False


class BabyLlamaApp(App):
    """The app's root: owns the project folder and which run is being watched."""

    CSS_PATH = "app.tcss"
    TITLE = "babyllama"
    MODES = {
        "corpora": corpora_screen,
        "train": TrainScreen,
        "monitor": monitor_screen,
        "playground": playground_screen,
    }
    DEFAULT_MODE = "train"
    BINDINGS = [
        *(Binding(key, f"switch_mode('{mode}')", name, group=SCREEN_KEYS) for mode, key, name in SCREENS),
        Binding("q", "quit", "Quit"),
    ]

    # The run the monitor follows: a run directory, or None until one is chosen.
    current_run: reactive[Path | None] = reactive(None)

    def __init__(
        self,
        root: Path,
        *,
        clock: Callable[[], float] = time.time,
        train_program: Sequence[str] = TRAIN_PROGRAM,
    ) -> None:
        """`clock` is "now" for ages and ETAs (fixed in snapshot tests); `train_program` is what
        Launch runs after `python` (a stand-in trainer in tests)."""
        if not any_entry(root / "data") and not any_entry(root / "out"):
            # A new project starts where its work starts: a corpus (the sample is offered there).
            self.DEFAULT_MODE = "corpora"
        super().__init__()
        self.root = root
        self.clock = clock
        self.train_program = tuple(train_program)
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

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own palette entries, less two: each screen's entries already list every key
        with what it does (Quit under q), and Textual's Keys panel could not be closed with esc
        and squeezed the Monitor's chart to one row."""
        return (command for command in super().get_system_commands(screen) if command.title not in {"Quit", "Keys"})

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

    def on_ready(self) -> None:
        """The first frame is on the terminal: now the Train screen's form, the app's biggest
        piece, can be built without holding that frame back."""
        if isinstance(self.screen, TrainScreen):
            self.screen.call_later(self.screen.build_form)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def runs_dir(self) -> Path:
        return self.root / "out" / "runs"

    def monitor_run(self, run: Path) -> None:
        """Follow `run` on the monitor screen and show it."""
        self.current_run = run
        self.switch_mode("monitor")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="babyllama-tui", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="project folder holding data/ and out/ (default: .)"
    )
    parser.add_argument("--version", action="version", version=f"babyllama-tui {__version__}")
    args = parser.parse_args(argv)
    BabyLlamaApp(root=args.root.resolve()).run()
    return 0
