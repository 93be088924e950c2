"""BabyLlamaApp: the terminal app. It reads and starts babyllama's files and processes."""

from __future__ import annotations

import argparse
from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static

from babyllama import __version__

WELCOME = """\
[b]babyllama[/b] — pretrain a small Chinese Llama2 and watch it learn.

Working folder: [b]{root}[/b]

The screens for corpora, training runs, the live monitor and the playground
arrive in the next releases. Until then, the pipeline runs from the shell:

  babyllama sample                      三国演义 into data/sample/
  babyllama tokenizer train ...         a SentencePiece tokenizer
  babyllama prepare ...                 corpora -> token files
"""


class BabyLlamaApp(App):
    """The app's root: a home screen for now."""

    CSS_PATH = "app.tcss"
    TITLE = "babyllama"
    SUB_TITLE = f"v{__version__}"
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(WELCOME.format(root=self.root), id="welcome")
        yield Footer()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="babyllama-tui", description=__doc__)
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="project folder holding data/ and out/ (default: .)"
    )
    args = parser.parse_args(argv)
    BabyLlamaApp(root=args.root.resolve()).run()
    return 0
