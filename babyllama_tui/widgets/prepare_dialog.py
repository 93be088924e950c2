"""PrepareDialog: name the token file, set prepare's options, see the commands that will run."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Input, Label, Static

from babyllama.corpora import FORMATS, check_format
from babyllama.errors import UserError
from babyllama_tui.corpora.jobs import PrepareRequest, TokenizerChoice, prepare_steps
from babyllama_tui.widgets.dialog import Dialog

TOKEN_FILE_NAME = re.compile(r"[\w][\w.+-]*")
DEFAULT_MIN_TOKENS = 6


class PrepareDialog(Dialog[PrepareRequest | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "start", "Start"),
    ]

    def __init__(
        self,
        root: Path,
        inputs: list[str],
        tokenizer: TokenizerChoice,
        default_name: str,
        fmt: str = "auto",
    ) -> None:
        super().__init__()
        self.root = root
        self.inputs = inputs
        self.tokenizer = tokenizer
        self.default_name = default_name
        self.fmt = fmt

    def compose(self) -> ComposeResult:
        with Vertical(id="prepare-dialog", classes="corpora-dialog") as dialog:
            dialog.border_title = "Prepare a token file"
            shown = ", ".join(self.inputs[:4]) + (f" and {len(self.inputs) - 4} more" if len(self.inputs) > 4 else "")
            yield Static(Text.assemble(("sources    ", "dim"), (shown, "bold")), classes="corpora-dialog-line")
            yield Static(Text.assemble(("tokenizer  ", "dim"), (self.tokenizer.label, "bold")), classes="corpora-dialog-line")
            with Horizontal(classes="corpora-dialog-row"):
                yield Label("out  data/")
                yield Input(self.default_name, id="prepare-out-name", compact=True)
                yield Label(".bin")
            with Horizontal(classes="corpora-dialog-row"):
                yield Label("format")
                yield Input(self.fmt, id="prepare-format", suggester=SuggestFromList(FORMATS), compact=True)
                yield Label("workers")
                yield Input(placeholder=f"{os.cpu_count() or 1}", type="integer", id="prepare-workers", compact=True)
                # prepare's --min-tokens, said as what it does.
                yield Label("drop docs under")
                yield Input(str(DEFAULT_MIN_TOKENS), type="integer", id="prepare-min-tokens", compact=True,
                            tooltip="Documents shorter than this many tokens are left out (--min-tokens)")
                yield Label("tokens")
            yield Checkbox("replace the existing token file", id="prepare-force", compact=True)
            yield Static(id="prepare-command", classes="corpora-dialog-command")
            yield Static(id="prepare-message")
            with Horizontal(classes="corpora-dialog-buttons"):
                yield Button("Start", variant="primary", id="prepare-start", compact=True)
                yield Button("Cancel", id="prepare-cancel", compact=True)
            yield Static("enter or ctrl+s starts · tab next field · esc cancels", classes="corpora-dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#prepare-out-name", Input).focus()
        self.revalidate_fields()

    def out_path(self) -> Path:
        return self.root / "data" / f"{self.query_one('#prepare-out-name', Input).value.strip()}.bin"

    def request(self) -> tuple[PrepareRequest | None, str, str]:
        """The request the fields describe, or None and why not; and a note on what it will do."""
        name = self.query_one("#prepare-out-name", Input).value.strip()
        fmt = self.query_one("#prepare-format", Input).value.strip()
        workers = self.query_one("#prepare-workers", Input).value.strip()
        min_tokens = self.query_one("#prepare-min-tokens", Input).value.strip()
        if not TOKEN_FILE_NAME.fullmatch(name):
            return None, "name the token file with letters, digits, '.', '-' or '_'", ""
        try:
            check_format(fmt)
        except UserError as e:
            return None, str(e), ""
        if workers and (not workers.isdigit() or int(workers) < 1):
            return None, "workers must be a whole number of at least 1 (empty: one per core)", ""
        if not min_tokens.isdigit() or int(min_tokens) < 1:
            return None, "drop docs under: a whole number of tokens, at least 1", ""
        out = self.out_path()
        force = self.query_one("#prepare-force", Checkbox).value
        note = ""
        if out.exists() and not force:
            return None, f"data/{name}.bin exists: tick 'replace' or choose another name", ""
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            note = f"data/{name}.bin.partial is an unfinished prepare: it resumes if sources, tokenizer and options match, else starts over"
        request = PrepareRequest(
            inputs=tuple(self.inputs),
            tokenizer=self.tokenizer,
            out=f"data/{name}.bin",
            format=fmt,
            workers=int(workers) if workers else None,
            min_tokens=int(min_tokens),
            force=force,
        )
        return request, "", note

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def revalidate_fields(self) -> None:
        request, problem, note = self.request()
        self.query_one("#prepare-force", Checkbox).display = self.out_path().exists()
        self.query_one("#prepare-start", Button).disabled = request is None
        commands = "\n".join("$ " + step.shell_line() for step in prepare_steps(request)) if request else ""
        self.query_one("#prepare-command", Static).update(Text(commands, "dim"))
        message = Text(problem, "bold red") if problem else Text(note, "yellow")
        self.query_one("#prepare-message", Static).update(message)

    @on(Input.Submitted)
    def action_start(self) -> None:
        request, problem, _ = self.request()
        if request is not None:
            self.dismiss(request)

    @on(Button.Pressed, "#prepare-start")
    def start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#prepare-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
