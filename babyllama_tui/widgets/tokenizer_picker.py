"""TokenizerPicker: choose the tokenizer to prepare with, enter a path to one, or ask for a new
SentencePiece tokenizer trained on the chosen sources.

A path is checked by `babyllama tokenizer info` in a child process, so the app never loads a
tokenizer (a Hugging Face folder would pull transformers into it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from babyllama_tui.corpora.jobs import ChildProcess, TokenizerChoice, error_line, shown_path, tokenizer_info_args
from babyllama_tui.corpora.listing import TokenizerEntry

TRAIN_OPTION = "train"
DEFAULT_VOCAB_SIZE = 8000
# `babyllama tokenizer train` refuses less: 259 ids go to control and byte pieces.
MIN_VOCAB_SIZE = 384
TOKENIZER_NAME = re.compile(r"[\w][\w.+-]*")


def choice_from_entry(entry: TokenizerEntry, root: Path) -> TokenizerChoice:
    return TokenizerChoice(Path(shown_path(entry.path, root)), entry.name, entry.kind, entry.vocab_size, entry.fingerprint)


class TokenizerPicker(ModalScreen[TokenizerChoice | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        tokenizers: list[TokenizerEntry],
        root: Path,
        *,
        can_train: bool,
        default_name: str,
        note: str | None = None,
    ) -> None:
        super().__init__()
        self.tokenizers = tokenizers
        self.root = root
        self.can_train = can_train
        self.default_name = default_name
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="tokenizer-picker", classes="corpora-dialog") as dialog:
            dialog.border_title = "Tokenizer"
            if self.note:
                yield Static(Text(self.note, "yellow"), classes="corpora-dialog-note")
            yield OptionList(*self._options(), id="tokenizer-options", compact=True)
            with Horizontal(id="train-fields", classes="corpora-dialog-row"):
                yield Label("vocab")
                yield Input(str(DEFAULT_VOCAB_SIZE), type="integer", id="train-vocab", compact=True)
                yield Label("into out/tokenizers/")
                yield Input(self.default_name, id="train-tokenizer-name", compact=True)
            yield Label("or a path: ChatGLM2 tokenizer.model, a Hugging Face folder, one of ours")
            yield Input(placeholder="path, relative to the project or absolute", id="tokenizer-path", compact=True)
            yield Static(id="picker-message")
            yield Static("enter chooses · tab next field · esc cancels", classes="corpora-dialog-keys")

    def _options(self) -> list[Option]:
        options = []
        for index, entry in enumerate(self.tokenizers):
            text = Text(entry.name, "bold")
            text.append(f"  {entry.kind or 'not checked yet'}", "" if entry.kind else "italic")
            if entry.vocab_size:
                text.append(f"  vocab {entry.vocab_size:,}")
            text.append(f"  {shown_path(entry.path, self.root)}", "dim")
            options.append(Option(text, id=str(index)))
        train = Text("+ Train a new SentencePiece tokenizer on the marked sources")
        if not self.can_train:
            train.append("  (mark sources first)", "italic")
        options.append(Option(train, id=TRAIN_OPTION, disabled=not self.can_train))
        return options

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0
        self._show_train_fields(options.highlighted_option)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def say(self, message: str, style: str = "bold red") -> None:
        self.query_one("#picker-message", Static).update(Text(message, style))

    def _show_train_fields(self, option: Option | None) -> None:
        self.query_one("#train-fields").display = option is not None and option.id == TRAIN_OPTION

    @on(OptionList.OptionHighlighted)
    def option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_train_fields(event.option)

    @on(OptionList.OptionSelected)
    def option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == TRAIN_OPTION:
            self.choose_training()
            return
        entry = self.tokenizers[int(event.option.id)]
        if entry.kind and entry.vocab_size and entry.fingerprint:
            self.dismiss(choice_from_entry(entry, self.root))
        else:
            self.check_and_choose(entry.path)

    @on(Input.Submitted, "#train-vocab, #train-tokenizer-name")
    def train_field_submitted(self) -> None:
        self.choose_training()

    @on(Input.Submitted, "#tokenizer-path")
    def path_submitted(self, event: Input.Submitted) -> None:
        given = event.value.strip()
        if not given:
            self.say("type a path to a tokenizer.model file or a tokenizer folder")
            return
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = self.root / path
        if not path.exists():
            self.say(f"{given}: no such file or folder")
            return
        self.check_and_choose(path)

    def choose_training(self) -> None:
        if not self.can_train:
            self.say("mark the sources to train on first (space in the corpus list)")
            return
        vocab_text = self.query_one("#train-vocab", Input).value.strip()
        name = self.query_one("#train-tokenizer-name", Input).value.strip()
        if not vocab_text.isdigit() or int(vocab_text) < MIN_VOCAB_SIZE:
            self.say(f"vocabulary size must be a whole number of at least {MIN_VOCAB_SIZE}")
            self.query_one("#train-vocab", Input).focus()
            return
        if not TOKENIZER_NAME.fullmatch(name):
            self.say("name the tokenizer with letters, digits, '.', '-' or '_'")
            self.query_one("#train-tokenizer-name", Input).focus()
            return
        out = self.root / "out" / "tokenizers" / name
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            self.say(f"out/tokenizers/{name} exists: choose it from the list, or another name")
            self.query_one("#train-tokenizer-name", Input).focus()
            return
        vocab_size = int(vocab_text)
        self.dismiss(TokenizerChoice(Path("out", "tokenizers", name), name, "sentencepiece", vocab_size, None, vocab_size))

    @work(exclusive=True, group="tokenizer-check")
    async def check_and_choose(self, path: Path) -> None:
        shown = shown_path(path, self.root)
        self.say(f"checking {shown}…", "dim")
        code, out, err = await ChildProcess(tokenizer_info_args(path), self.root).run()
        if code != 0:
            # The engine's messages name the file and say what to do.
            self.say(error_line(err) or f"{shown}: babyllama tokenizer info exited with {code}")
            return
        try:
            info = json.loads(out[-1])
        except (IndexError, ValueError):
            self.say(f"{shown}: babyllama tokenizer info gave no description")
            return
        self.dismiss(TokenizerChoice(Path(shown), info["name"], info["kind"], info["vocab_size"], info.get("sha256")))
