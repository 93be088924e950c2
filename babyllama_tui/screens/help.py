"""HelpScreen: every key of the screen it was opened on, the keys of that screen's panels, and where things are.

The keys are read from the live bindings when it opens (`commands.bound_keys`, what the
palette lists, and each panel's own bindings), so the help cannot drift from the keys; only the
"where things are" paragraph of each screen is written here. `?` opens it on any screen or
dialog outside a text field; esc or `?` closes it.
"""

from __future__ import annotations

import re

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static

from babyllama_tui.screens.commands import BoundKey, bound_keys
from babyllama_tui.textual_fixes import takes_text
from babyllama_tui.widgets.dialog import Dialog
from babyllama_tui.widgets.mode_header import SCREENS, ModeHeader

KEYS = "↑↓ pgup pgdn home end · esc or ? closes"
RUN_FILES = (
    "A run's folder, out/runs/NAME/, holds config.json (its settings), status.json (its state), "
    "metrics.jsonl (one row a logged step, evaluation or sample), train.log (the trainer's output) "
    "and checkpoints/step_NNNNNNN/."
)
# What each screen's panes are, and where their files live on disk.
WHERE = {
    "corpora": (
        "Top: the corpora in data/ (and in folders opened here), which you mark to prepare. Below: the "
        "token files `babyllama prepare` made, data/NAME.bin each with its manifest NAME.bin.json; an "
        "unfinished prepare leaves NAME.bin.partial and its journal, and resumes from them. The panel "
        "at the bottom shows the marked corpora, the tokenizer chosen and a running job. The sample "
        "corpus is fetched into data/sample/; tokenizers trained here go to out/tokenizers/NAME/."
    ),
    "train": (
        "Runs: every run under out/runs/, newest first, with the highlighted run's folder and why it "
        "ended below the table. New run: the form, each field checked as you type, and a summary "
        "of the model's size, memory and time. A launched run is a `babyllama train` process of its "
        "own: it goes on when the app is closed. " + RUN_FILES
    ),
    "monitor": (
        "Top: the run's state, step, elapsed time and time to finish. Middle: the loss chart (the train "
        "loss, its average and the validation points) and cards for the learning rate, speed, memory "
        "and device. Bottom: the samples the model wrote at each evaluation, newest first, and the end "
        "of train.log. " + RUN_FILES
    ),
    "playground": (
        "Top: the prompt, the sampling settings and this session's prompts. Below: a panel for each "
        "checkpoint loaded (two side by side when comparing), each a `babyllama serve` process the app "
        "ends when it closes; its title names the checkpoint and what runs it (llama.cpp q8_0, f16 or f32, "
        "or numpy: the fastest this machine has at first). Checkpoints are "
        "out/runs/NAME/checkpoints/step_NNNNNNN/, or an exported folder picked by its path; llama.cpp "
        "keeps a GGUF copy of each in its folder."
    ),
}
DIALOG = "A dialog: only its own keys work while it is open; esc leaves it."
TEXT_FIELDS = (
    "Text fields take the letter, number and editing keys: tab (or esc, where the footer offers "
    "it) leaves the field, so the keys above work again."
)


def words(name: str) -> str:
    """A class name as words: RunsTable -> "Runs table"."""
    split = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()
    return split[:1].upper() + split[1:]


def sentence(description: str) -> str:
    """Textual's own descriptions ("Focus Next", "palette") written as ours are ("Focus next")."""
    return description[:1].upper() + description[1:].lower()


def class_bindings(cls: type) -> list[Binding]:
    """The bindings a widget or screen class declares with those it inherits, a subclass's key
    replacing its base's, as Textual merges them."""
    by_key: dict[str, list[Binding]] = {}
    for base in reversed(cls.__mro__):
        declared: dict[str, list[Binding]] = {}
        for binding in Binding.make_bindings(base.__dict__.get("BINDINGS", [])):
            declared.setdefault(binding.key, []).append(binding)
        by_key.update(declared)
    return [binding for bindings in by_key.values() for binding in bindings]


def rows_of(bindings: list[Binding], app: App, enabled: bool) -> list[tuple[str, str, bool]]:
    """(keys, what they do, enabled) for each action of `bindings` that has a description, once."""
    found: dict[str, tuple[list[str], str]] = {}
    for binding in bindings:
        if binding.description:
            keys, _ = found.setdefault(binding.action, ([], sentence(binding.description)))
            key = app.get_key_display(binding)
            if key not in keys:
                keys.append(key)
    return [(" ".join(keys), description, enabled) for keys, description in found.values()]


def screen_mode(screen: Screen) -> str | None:
    """The app screen's mode (corpora, train...), or None for a dialog."""
    headers = screen.query(ModeHeader)
    return headers.first().mode if headers else None


def screen_name(screen: Screen) -> str:
    """ "Train screen", "dialog 'Monitor which run?'", "Full log screen"."""
    mode = screen_mode(screen)
    if mode is not None:
        return next(name for screen_mode_, _, name in SCREENS if screen_mode_ == mode) + " screen"
    titles = screen.query(".dialog-title")
    if titles and isinstance(titles.first(), Label):
        return f"dialog {str(titles.first().render()).strip()!r}"
    return words(type(screen).__name__)


def key_table(rows: list[tuple[str, str, bool]]) -> Table:
    """Keys and what they do; a key that does nothing right now is dim, with a note."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for keys, description, enabled in rows:
        table.add_row(keys, description if enabled else Text(f"{description} (not now)", style="dim"))
    return table


def panels(screen: Screen) -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """(name, keys) of each kind of panel on the screen that can take the focus now, with the keys
    of its kind: its scroll or cursor keys."""
    kinds: dict[type, tuple[str, list]] = {}
    for widget in screen.focus_chain:
        kind = type(widget)
        if kind in kinds or takes_text(widget):
            continue
        keys = rows_of(class_bindings(kind), screen.app, True)
        if keys:
            title = widget.border_title
            kinds[kind] = (words(kind.__name__) + (f" ({title})" if isinstance(title, str) and title else ""), keys)
    return list(kinds.values())


def screen_rows(screen: Screen, entries: list[BoundKey]) -> list[tuple[str, str, bool]]:
    """The screen's keys: its own first, then those every Textual screen has (tab, shift+tab), then
    its keys that do nothing in its present state (a run's Stop when none runs), marked so."""
    generic = {binding.action for binding in class_bindings(Screen)}
    live = sorted((e for e in entries if isinstance(e.node, Screen)), key=lambda e: e.action in generic)
    listed = {e.action for e in live}
    idle = [binding for binding in class_bindings(type(screen)) if binding.action not in listed]
    return [(" ".join(e.keys), sentence(e.description), e.enabled) for e in live] + rows_of(idle, screen.app, False)


def help_text(screen: Screen) -> Group:
    """Everything the help screen says about `screen`, read from its bindings and widgets now."""
    entries = bound_keys(screen)
    app_keys = [e for e in entries if isinstance(e.node, App)]
    mode = screen_mode(screen)
    name = screen_name(screen)
    parts: list = [Text(f"Project folder: {screen.app.root}", style="dim")]

    def section(title: str) -> None:
        parts.extend([Text(""), Text(title, style="bold underline")])

    section(f"Keys of the {name if mode else name[:1].lower() + name[1:]}")
    parts.append(key_table(screen_rows(screen, entries)))
    if app_keys:
        section("Keys everywhere")
        parts.append(key_table([(" ".join(e.keys), sentence(e.description), e.enabled) for e in app_keys]))
    kinds = panels(screen)
    if kinds:
        section("Keys of the panels (tab moves the focus between them)")
        for panel, keys in kinds:
            parts.extend([Text(panel, style="italic"), key_table(keys)])
    if any(takes_text(widget) for widget in screen.focus_chain):
        parts.extend([Text(""), Text(TEXT_FIELDS)])
    section("Where things are")
    parts.append(Text(WHERE.get(mode, DIALOG)))
    return Group(*parts)


class HelpScreen(Dialog[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, screen: Screen) -> None:
        """Help for `screen`, the one shown under it; read now, while its focus and state are current."""
        super().__init__(classes="dialog-screen")
        self.about = screen_name(screen)
        self.text = help_text(screen)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as scroll:
            scroll.border_title = f"Help: {self.about}"
            scroll.border_subtitle = KEYS
            yield Static(self.text, id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help").focus()
