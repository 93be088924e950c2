"""SamplingForm: temperature, top-k, top-p, repetition penalty, max new tokens and seed, checked as typed.

The rules are the engine's (`babyllama.generate.SamplingParams.validate`), applied one field at
a time so each message names its field. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.events import DescendantFocus
from textual.widgets import Input, Label, Static

from babyllama.errors import UserError


@dataclass(frozen=True)
class SamplingField:
    key: str  # the protocol's name
    short: str
    long: str
    help: str


FIELDS = (
    SamplingField("temperature", "temp", "temperature", "0 = greedy (always the most likely token); higher, more varied"),
    SamplingField("top_k", "top-k", "top-k", "sample among the k most likely tokens; 0 = all"),
    SamplingField("top_p", "top-p", "top-p", "sample among the most likely tokens reaching probability p; 1 = all"),
    SamplingField("repetition_penalty", "rep", "repetition penalty", "1 = none; 1.1 to 1.3 discourages repeats"),
    SamplingField("max_new_tokens", "max", "max new tokens", "stop after this many new tokens"),
    SamplingField("seed", "seed", "seed", "the same seed and settings give the same text"),
)

FIELD_HELP = {field.key: field.help for field in FIELDS}
LABELS = {field.key: field.long for field in FIELDS}

FORM_HINT = "sampling: tab to a field to change it; each is checked as you type"


def default_params() -> dict:
    from babyllama.sampling import SamplingParams

    return vars(SamplingParams())


def check_value(key: str, typed: str, defaults: dict) -> tuple[int | float | None, str | None]:
    """(value, None) when `typed` is a good value for the field `key`, else (None, what is wrong)."""
    from babyllama.sampling import SamplingParams

    wanted = type(defaults[key])
    try:
        value = wanted(typed.strip())
    except ValueError:
        kind = "a whole number" if wanted is int else "a number"
        return None, f"{LABELS[key]}: {typed.strip() or '(empty)'} is not {kind}"
    try:
        SamplingParams(**{**defaults, key: value}).validate()
    except UserError as e:
        # The engine names the protocol's fields; the form shows their labels.
        message = str(e)
        for field in FIELDS:
            message = message.replace(field.key, field.long)
        return None, message
    return value, None


class SamplingForm(Vertical):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.defaults = default_params()
        self.values = dict(self.defaults)
        self.errors: dict[str, str] = {}
        self.inputs = {field.key: Input(str(self.defaults[field.key]), id=f"sampling-{field.key}", compact=True,
                                        select_on_focus=True) for field in FIELDS}
        self.note = Static(FORM_HINT, id="sampling-note", markup=False)
        self._note_key: str | None = None  # the field whose note is shown
        self.contexts: tuple[int, ...] = ()
        self.context_labels = (Label("", classes="short-label context-label -empty"),
                               Label("", classes="long-label context-label -empty"))

    def compose(self) -> ComposeResult:
        with Horizontal(id="sampling-fields"):
            for field in FIELDS:
                with Horizontal(classes="sampling-field"):
                    yield Label(field.short, classes="short-label")
                    yield Label(field.long, classes="long-label")
                    yield self.inputs[field.key]
                    if field.key == "max_new_tokens":
                        yield from self.context_labels
        yield self.note

    def params(self) -> dict | None:
        """Every field's value, or None while any is wrong."""
        return None if self.errors else dict(self.values)

    def first_error(self) -> tuple[str, str] | None:
        """(field, message) of the first wrong field in the form's order."""
        for field in FIELDS:
            if field.key in self.errors:
                return field.key, self.errors[field.key]
        return None

    def show_contexts(self, contexts: Iterable[int]) -> None:
        """The loaded models' contexts in tokens (none while nothing is loaded)."""
        contexts = tuple(sorted(set(contexts)))
        if contexts == self.contexts:
            return
        self.contexts = contexts
        shown = "/".join(map(str, contexts))
        short, long = self.context_labels
        short.update(f"(ctx {shown})" if contexts else "")
        long.update(f"(context {shown})" if contexts else "")
        for label in self.context_labels:
            label.set_class(not contexts, "-empty")
        if self.inputs["max_new_tokens"].has_focus or "max_new_tokens" in self.errors:
            self._show_note("max_new_tokens")

    def max_tokens_note(self) -> tuple[str, bool]:
        """(what max new tokens means with the loaded models, whether the value typed outgrows a context)."""
        if not self.contexts:
            return f"max new tokens: {FIELD_HELP['max_new_tokens']}", False
        context = f"{'/'.join(map(str, self.contexts))}-token context"
        # A prompt has at least one token, so a max as large as the context can never be reached.
        if self.values["max_new_tokens"] >= self.contexts[0]:
            return f"max new tokens: more than the {context} holds with the prompt", True
        return f"max new tokens: at most this many; the {context} holds prompt + new", False

    def focus_field(self, key: str) -> None:
        self.inputs[key].focus()

    @on(Input.Changed)
    def _check(self, event: Input.Changed) -> None:
        key = next(k for k, editor in self.inputs.items() if editor is event.input)
        value, error = check_value(key, event.value, self.defaults)
        if error is None:
            self.values[key] = value
            self.errors.pop(key, None)
        else:
            self.errors[key] = error
        event.input.set_class(error is not None, "-invalid")
        self._show_note(key if event.input.has_focus or error is not None else self._note_key)

    @on(DescendantFocus)
    def _focused(self, event: DescendantFocus) -> None:
        key = next((k for k, editor in self.inputs.items() if editor is event.widget), None)
        if key is not None:
            self._show_note(key)

    def _show_note(self, key: str | None) -> None:
        """The note on field `key`; while any field is wrong, an error instead (that field's own
        first), which stays, whichever field has the focus, until it is fixed."""
        self._note_key = key
        error = self.errors.get(key) if key is not None else None
        if error is None and self.errors:
            _, error = self.first_error()
        warning = False
        if error is not None:
            note = error
        elif key is None:
            note = FORM_HINT
        elif key == "max_new_tokens":
            note, warning = self.max_tokens_note()
        else:
            note = f"{LABELS[key]}: {FIELD_HELP[key]}"
        self.note.update(note)
        self.note.set_class(error is not None, "-error")
        self.note.set_class(warning, "-warning")
