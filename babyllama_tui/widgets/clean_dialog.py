"""CleanDialog: name the cleaned corpus, set the main settings of `babyllama clean`, see the
command that will run."""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Input, Label, Static

from babyllama.clean import CleanSettings
from babyllama.corpora import FORMATS, check_format
from babyllama.errors import UserError
from babyllama_tui.corpora.jobs import CleanRequest, clean_steps, clean_work_folder
from babyllama_tui.widgets.dialog import Dialog
from babyllama_tui.widgets.prepare_dialog import TOKEN_FILE_NAME

OUT_SUFFIX = ".clean.jsonl"
# The settings the dialog offers: (field of CleanSettings, label, input type); the rest keep their defaults.
OFFERED = (
    ("threshold", "near-dup similarity", "number"),
    ("min_chars", "min chars", "integer"),
    ("min_cjk", "min CJK share", "number"),
)


class CleanDialog(Dialog[CleanRequest | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "start", "Start"),
    ]

    def __init__(self, root: Path, inputs: list[str], default_name: str, fmt: str = "auto") -> None:
        super().__init__()
        self.root = root
        self.inputs = inputs
        self.default_name = default_name
        self.fmt = fmt

    def compose(self) -> ComposeResult:
        defaults = CleanSettings()
        with Vertical(id="clean-dialog", classes="corpora-dialog") as dialog:
            dialog.border_title = "Clean corpora: quality filters and duplicates"
            shown = ", ".join(self.inputs[:4]) + (f" and {len(self.inputs) - 4} more" if len(self.inputs) > 4 else "")
            yield Static(Text.assemble(("sources  ", "dim"), (shown, "bold")), classes="corpora-dialog-line")
            with Horizontal(classes="corpora-dialog-row"):
                yield Label("out  data/")
                yield Input(self.default_name, id="clean-out-name", compact=True)
                yield Label(OUT_SUFFIX)
            with Horizontal(classes="corpora-dialog-row"):
                yield Label("format")
                yield Input(self.fmt, id="clean-format", suggester=SuggestFromList(FORMATS), compact=True)
                yield Label("workers")
                yield Input(placeholder=f"{os.cpu_count() or 1}", type="integer", id="clean-workers", compact=True)
            with Horizontal(classes="corpora-dialog-row"):
                for field, label, kind in OFFERED:
                    yield Label(label)
                    yield Input(f"{getattr(defaults, field):g}", type=kind, id=f"clean-{field}", compact=True,
                                tooltip=f"--{field.replace('_', '-')}")
            yield Checkbox("replace the existing cleaned corpus", id="clean-force", compact=True)
            yield Static(id="clean-command", classes="corpora-dialog-command")
            yield Static(id="clean-message")
            with Horizontal(classes="corpora-dialog-buttons"):
                yield Button("Start", variant="primary", id="clean-start", compact=True)
                yield Button("Cancel", id="clean-cancel", compact=True)
            yield Static("enter or ctrl+s starts · tab next field · esc cancels", classes="corpora-dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#clean-out-name", Input).focus()
        self.revalidate_fields()

    def out_path(self) -> Path:
        return self.root / "data" / f"{self.query_one('#clean-out-name', Input).value.strip()}{OUT_SUFFIX}"

    def request(self) -> tuple[CleanRequest | None, str, str]:
        """The request the fields describe, or None and why not; and a note on what it will do."""
        name = self.query_one("#clean-out-name", Input).value.strip()
        fmt = self.query_one("#clean-format", Input).value.strip()
        workers = self.query_one("#clean-workers", Input).value.strip()
        if not TOKEN_FILE_NAME.fullmatch(name):
            return None, "name the cleaned corpus with letters, digits, '.', '-' or '_'", ""
        try:
            check_format(fmt)
        except UserError as e:
            return None, str(e), ""
        if workers and (not workers.isdigit() or int(workers) < 1):
            return None, "workers must be a whole number of at least 1 (empty: one per core)", ""
        defaults = CleanSettings()
        values = {}
        for field, label, kind in OFFERED:
            text = self.query_one(f"#clean-{field}", Input).value.strip()
            try:
                values[field] = int(text) if kind == "integer" else float(text)
            except ValueError:
                return None, f"{label}: a number, please", ""
        try:
            CleanSettings(**values).validate()
        except UserError as e:
            return None, str(e), ""
        out = self.out_path()
        force = self.query_one("#clean-force", Checkbox).value
        if out.exists() and not force:
            return None, f"data/{out.name} exists: tick 'replace' or choose another name", ""
        note = ""
        if clean_work_folder(out).exists():
            note = f"data/{out.name} has an unfinished clean: it resumes if sources and settings match, else starts over"
        settings = tuple((f"--{field.replace('_', '-')}", f"{value:g}") for field, value in values.items()
                         if value != getattr(defaults, field))
        request = CleanRequest(inputs=tuple(self.inputs), out=f"data/{out.name}", format=fmt, settings=settings,
                               workers=int(workers) if workers else None, force=force)
        return request, "", note

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def revalidate_fields(self) -> None:
        request, problem, note = self.request()
        self.query_one("#clean-force", Checkbox).display = self.out_path().exists()
        self.query_one("#clean-start", Button).disabled = request is None
        commands = "\n".join("$ " + step.shell_line() for step in clean_steps(request)) if request else ""
        self.query_one("#clean-command", Static).update(Text(commands, "dim"))
        self.query_one("#clean-message", Static).update(Text(problem, "bold red") if problem else Text(note, "yellow"))

    @on(Input.Submitted)
    def action_start(self) -> None:
        request, _, _ = self.request()
        if request is not None:
            self.dismiss(request)

    @on(Button.Pressed, "#clean-start")
    def start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#clean-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
