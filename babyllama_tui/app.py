"""BabyLlamaApp: the terminal app. It reads and starts babyllama's files and processes.

Four screens, one a mode, switched with the number keys or the command palette:
corpora (data/ and tokenization), train (new runs and the runs table), monitor (one run,
live) and playground (continue prompts with a checkpoint). Long work happens in child
processes that outlive the app; the app only reads their files and streams.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from textual.app import SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.signal import Signal

from babyllama import __version__
from babyllama.runs import TRAIN_PROGRAM
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.textual_fixes import KeysInOrderApp, StyledOnceApp
from babyllama_tui.training.run_health import STALL_AFTER_S
from babyllama_tui.widgets.mode_header import SCREENS

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


class BabyLlamaApp(KeysInOrderApp, StyledOnceApp):
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
        # A priority key, so dialogs (which take no app keys) answer it too; a text field still types it.
        Binding("question_mark", "help", "Help: every key of this screen", show=False, priority=True),
    ]

    # The run the monitor follows: a run directory, or None until one is chosen.
    current_run: reactive[Path | None] = reactive(None)

    def __init__(
        self,
        root: Path,
        *,
        clock: Callable[[], float] = time.time,
        train_program: Sequence[str] = TRAIN_PROGRAM,
        stall_after_s: float = STALL_AFTER_S,
    ) -> None:
        """`clock` is "now" for ages and ETAs (fixed in snapshot tests); `train_program` is what
        Launch runs after `python` (a stand-in trainer in tests); a running run that writes no
        metrics row for `stall_after_s` is marked stalled (`training.run_health`)."""
        if not any_entry(root / "data") and not any_entry(root / "out"):
            # A new project starts where its work starts: a corpus (the sample is offered there).
            self.DEFAULT_MODE = "corpora"
        super().__init__()
        self.root = root
        self.clock = clock
        self.train_program = tuple(train_program)
        self.stall_after_s = stall_after_s
        # Whether the app's first frame is on the terminal (Textual's Ready event).
        self.first_frame_shown = False
        # Published with (old folder, new folder or None) when a run is renamed or moved to the trash.
        self.runs_moved: Signal[tuple[Path, Path | None]] = Signal(self, "runs-moved")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own palette entries, less two: each screen's entries already list every key
        with what it does (Quit under q), and Textual's Keys panel could not be closed with esc
        and squeezed the Monitor's chart to one row."""
        return (command for command in super().get_system_commands(screen) if command.title not in {"Quit", "Keys"})

    def on_ready(self) -> None:
        """The first frame is on the terminal: now the Train screen's form, the app's biggest
        piece, can be built without holding that frame back."""
        self.first_frame_shown = True
        if isinstance(self.screen, TrainScreen):
            self.screen.call_later(self.screen.build_form)

    def action_help(self) -> None:
        """Help for the screen shown (closed again by ?)."""
        from babyllama_tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen(self.screen))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def runs_dir(self) -> Path:
        return self.root / "out" / "runs"

    def run_moved(self, old: Path, new: Path | None) -> None:
        """The run at `old` was renamed to `new`, or moved to the trash (None): what followed it follows too."""
        if self.current_run == old:
            self.current_run = new
        self.runs_moved.publish((old, new))

    def monitor_run(self, run: Path) -> None:
        """Follow `run` on the monitor screen and show it."""
        self.current_run = run
        self.switch_mode("monitor")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="babyllama-tui", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="project folder holding data/ and out/ (default: .)"
    )
    parser.add_argument(
        "--stall-after", type=float, default=STALL_AFTER_S / 60, metavar="MINUTES",
        help=f"mark a running run stalled after this long without a metrics row (default {STALL_AFTER_S / 60:g}; "
        "a run's first step and slow logging are given longer)",
    )
    parser.add_argument(
        "--web", action="store_true",
        help="serve the app to a browser instead (each tab runs its own app); reach it over an SSH port forward",
    )
    parser.add_argument("--host", default=None, help="with --web: the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="with --web: the port to listen on (default 8000)")
    parser.add_argument("--version", action="version", version=f"babyllama-tui {__version__}")
    args = parser.parse_args(argv)
    if args.stall_after <= 0:
        parser.error("--stall-after must be a positive number of minutes")
    if not args.web and (args.host is not None or args.port is not None):
        parser.error("--host and --port go with --web")
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error("--port must be a port number, 0 to 65535 (0: any free port)")
    root = args.root.resolve()
    if args.web:
        from babyllama_tui.web import DEFAULT_HOST, DEFAULT_PORT, app_command, serve_app

        command = app_command(root, args.stall_after)
        return serve_app(command, args.host or DEFAULT_HOST, DEFAULT_PORT if args.port is None else args.port)
    BabyLlamaApp(root=root, stall_after_s=args.stall_after * 60).run()
    return 0
