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
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from babyllama_tui.corpora.jobs import ChildProcess, TokenizerChoice, error_line, shown_path, tokenizer_info_args
from babyllama_tui.corpora.listing import TokenizerEntry
from babyllama_tui.widgets.dialog import Dialog

TRAIN_OPTION = "train"
DEFAULT_VOCAB_SIZE = 8000
# `babyllama tokenizer train` refuses less: 259 ids go to control and byte pieces.
MIN_VOCAB_SIZE = 384
TOKENIZER_NAME = re.compile(r"[\w][\w.+-]*")


def choice_from_entry(entry: TokenizerEntry, root: Path) -> TokenizerChoice:
    return TokenizerChoice(Path(shown_path(entry.path, root)), entry.name, entry.kind, entry.vocab_size, entry.fingerprint)


class TokenizerPicker(Dialog[TokenizerChoice | None]):
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
        # The field the message is an error about, while it is one.
        self._error_about: str | None = None

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

    def say(self, message: str, style: str = "bold red", *, about: str | None = None) -> None:
        """Show `message`; `about` is the id of the field it is an error about, if one."""
        self._error_about = about
        self.query_one("#picker-message", Static).update(Text(message, style))

    @on(Input.Changed)
    def value_changed(self, event: Input.Changed) -> None:
        """An error about a field follows its value from then on: it goes once the value is right."""
        if event.input.id is None or event.input.id != self._error_about:
            return
        if event.input.id == "tokenizer-path":
            problem = self.path_problem(event.value.strip())
            self.say(problem or "", about="tokenizer-path" if problem else None)
        else:
            message, field = self.training_problem() or ("", None)
            self.say(message, about=field)

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

    def typed_path(self, given: str) -> Path:
        path = Path(given).expanduser()
        return path if path.is_absolute() else self.root / path

    def path_problem(self, given: str) -> str | None:
        if not given:
            return "type a path to a tokenizer.model file or a tokenizer folder"
        if not self.typed_path(given).exists():
            return f"{given}: no such file or folder"
        return None

    def training_problem(self) -> tuple[str, str] | None:
        """What is wrong with the training fields, and the id of the field it concerns."""
        vocab_text = self.query_one("#train-vocab", Input).value.strip()
        name = self.query_one("#train-tokenizer-name", Input).value.strip()
        if not vocab_text.isdigit() or int(vocab_text) < MIN_VOCAB_SIZE:
            return f"vocabulary size must be a whole number of at least {MIN_VOCAB_SIZE}", "train-vocab"
        if not TOKENIZER_NAME.fullmatch(name):
            return "name the tokenizer with letters, digits, '.', '-' or '_'", "train-tokenizer-name"
        out = self.root / "out" / "tokenizers" / name
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            return f"out/tokenizers/{name} exists: choose it from the list, or another name", "train-tokenizer-name"
        return None

    @on(Input.Submitted, "#tokenizer-path")
    def path_submitted(self, event: Input.Submitted) -> None:
        given = event.value.strip()
        problem = self.path_problem(given)
        if problem:
            self.say(problem, about="tokenizer-path")
            return
        self.check_and_choose(self.typed_path(given), about="tokenizer-path")

    def choose_training(self) -> None:
        if not self.can_train:
            self.say("mark the sources to train on first (space in the corpus list)")
            return
        problem = self.training_problem()
        if problem:
            message, field = problem
            self.say(message, about=field)
            self.query_one(f"#{field}", Input).focus()
            return
        name = self.query_one("#train-tokenizer-name", Input).value.strip()
        vocab_size = int(self.query_one("#train-vocab", Input).value.strip())
        self.dismiss(TokenizerChoice(Path("out", "tokenizers", name), name, "sentencepiece", vocab_size, None, vocab_size))

    @work(exclusive=True, group="tokenizer-check")
    async def check_and_choose(self, path: Path, about: str | None = None) -> None:
        """Choose the tokenizer at `path` once `babyllama tokenizer info` has described it; `about`,
        the field it was typed in, if it was."""
        shown = shown_path(path, self.root)
        self.say(f"checking {shown}…", "dim")
        code, out, err = await ChildProcess(tokenizer_info_args(path), self.root).run()
        if code != 0:
            # The engine's messages name the file and say what to do.
            self.say(error_line(err) or f"{shown}: babyllama tokenizer info exited with {code}", about=about)
            return
        try:
            info = json.loads(out[-1])
        except (IndexError, ValueError):
            self.say(f"{shown}: babyllama tokenizer info gave no description", about=about)
            return
        self.dismiss(TokenizerChoice(Path(shown), info["name"], info["kind"], info["vocab_size"], info.get("sha256")))
