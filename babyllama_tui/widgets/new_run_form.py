"""NewRunForm: token files, the run to fine-tune from, tokenizer, preset, name, workers and every
ModelConfig/TrainConfig field.

Fields are generated from the dataclasses; the form only collects text, which
`babyllama_tui.training.new_run.check_form` judges. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Collapsible, Select, SelectionList, Static

from babyllama import config as cfg
from babyllama_tui.training.new_run import (
    FIELDS,
    FieldSpec,
    FormCheck,
    RunForm,
    TokenFileEntry,
    default_run_name,
    parent_values,
    preset_values,
    shown_path,
)
from babyllama_tui.widgets.field_input import FieldInput
from babyllama_tui.widgets.field_row import FieldRow
from babyllama_tui.widgets.token_file_list import TokenFileList

DEFAULT_PRESET = "tiny"
SECTION_TITLES = {"model": "Model", "train": "Training"}
# The rows above the model and training sections, in the order shown.
RUN_ROWS = ("data", "init_from", "tokenizer", "preset", "name", "workers")


class Switch(Checkbox):
    """A checkbox whose mark is there only when it is on: Checkbox draws the same X for both
    states, told apart by colour alone, which a plain text capture (or a colour-blind reader)
    does not see."""

    # ToggleButton draws its mark from this class constant, read through the instance.
    @property
    def BUTTON_INNER(self) -> str:
        return "X" if self.value else " "


def _editor(spec: FieldSpec, value) -> Widget:
    widget_id = f"field-{spec.section}-{spec.name}"
    if spec.kind is bool:
        return Switch("", bool(value), compact=True, id=widget_id, classes="field-editor")
    if spec.choices:
        return Select(
            [(choice, choice) for choice in spec.choices], value=value, allow_blank=False, compact=True,
            id=widget_id, classes="field-editor",
        )
    if spec.kind in (int, float):
        # Empty text is allowed while typing, and in an optional field means None.
        kind = "integer" if spec.kind is int else "number"
        return FieldInput(spec.format(value), kind=kind, id=widget_id, classes="field-editor")
    return FieldInput(spec.format(value), id=widget_id, classes="field-editor")


def files_vocab(entries: list[TokenFileEntry]) -> int | None:
    vocabs = [e.token_file.vocab_size for e in entries if e.token_file is not None]
    return max(vocabs) if vocabs else None


def suggested_tokenizer(entries: list[TokenFileEntry], root: Path) -> str:
    """The tokenizer the files' manifest names, relative to the project when inside it."""
    path = next((e.tokenizer_path for e in entries if e.tokenizer_path), None)
    return shown_path(Path(path), root) if path else ""


class NewRunForm(VerticalScroll):
    """The form for a new run. Posts `NewRunForm.Changed` (at most once a refresh) when anything changes."""

    # Tab goes from field to field; the form scrolls to the focused one by itself.
    can_focus = False

    class Changed(Message):
        def __init__(self, form: NewRunForm) -> None:
            super().__init__()
            self.form = form

    def __init__(self, *, root: Path, data_dir: Path, runs_dir: Path, now: float, entries: list[TokenFileEntry],
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.runs_dir = runs_dir
        self._now = now
        self._change_pending = False
        usable = [e for e in entries if e.token_file is not None]
        chosen = usable if len(usable) == 1 else []
        self.token_file_list = TokenFileList(data_dir, entries, {e.path for e in chosen}, id="token-files")
        self.token_file_list.border_title = "space chooses"
        self._default_tokenizer = suggested_tokenizer(chosen, root)
        # What the default run name starts with: the preset and the time, or the run fine-tuned from ("base-sft").
        self._name_stem, self._name_dated = DEFAULT_PRESET, True
        self._default_name = default_run_name(DEFAULT_PRESET, now, runs_dir)
        values = preset_values(DEFAULT_PRESET)
        values["model.vocab_size"] = files_vocab(chosen) or values["model.vocab_size"]
        # FieldInputs rather than Inputs: they apply keys in the order typed (see field_input.py).
        self.tokenizer = FieldInput(self._default_tokenizer, id="tokenizer", classes="field-editor",
                                    placeholder="path of the tokenizer the token files were made with")
        self.init_from = FieldInput("", id="init-from", classes="field-editor",
                                    placeholder="a pretrained run, out/runs/NAME (f on the runs table)")
        # The checkpoint whose settings the form took last (parent_values), so each parent fills it once.
        self._parent_applied: Path | None = None
        self.preset = Select([(name, name) for name in cfg.PRESETS], value=DEFAULT_PRESET, allow_blank=False,
                             compact=True, id="preset", classes="field-editor")
        self.name_input = FieldInput(self._default_name, id="run-name", classes="field-editor")
        self.workers_input = FieldInput("1", kind="integer", id="workers", classes="field-editor")
        self.rows: dict[str, FieldRow] = {
            row.key: row
            for row in (
                FieldRow("data", "token files", self.token_file_list, "", classes="-stacked"),
                FieldRow("init_from", "fine-tune from", self.init_from, ""),
                FieldRow("tokenizer", "tokenizer", self.tokenizer, ""),
                FieldRow("preset", "preset", self.preset, cfg.PRESETS[DEFAULT_PRESET].description),
                FieldRow("name", "run name", self.name_input, f"its folder under {runs_dir.name}/"),
                FieldRow("workers", "workers", self.workers_input, "1 = one process; N = N data-parallel workers (msrun)"),
                *(FieldRow(spec.key, spec.name, _editor(spec, values[spec.key]), spec.help) for spec in FIELDS.values()),
            )
        }
        self.section_errors = {section: Static("", classes="section-error") for section in cfg.SECTIONS}
        self._show_list_if_any(entries)
        self.rows["init_from"].display = any(e.is_sft for e in chosen)

    def compose(self) -> ComposeResult:
        yield Static("Data and run", classes="form-section")
        for key in RUN_ROWS:
            yield self.rows[key]
        for section, title in SECTION_TITLES.items():
            with Collapsible(title=title, collapsed=False, id=f"section-{section}"):
                yield self.section_errors[section]
                for key in (k for k in FIELDS if k.startswith(f"{section}.")):
                    yield self.rows[key]

    def on_mount(self) -> None:
        self._changed_soon()

    # Reading

    def read(self) -> RunForm:
        fields: dict[str, str | bool] = {}
        for key in FIELDS:
            editor = self.rows[key].editor
            fields[key] = str(editor.value) if isinstance(editor, Select) else editor.value
        return RunForm(
            token_files=[e.token_file for e in self.token_file_list.chosen if e.token_file is not None],
            tokenizer=self.tokenizer.value,
            preset=str(self.preset.value),
            fields=fields,
            name=self.name_input.value,
            workers=self.workers_input.value,
            token_files_found=sum(e.token_file is not None for e in self.token_file_list.entries.values()),
            init_from=self.init_from.value if self.rows["init_from"].display else "",
        )

    # Showing

    def show_token_files(self, entries: list[TokenFileEntry]) -> None:
        """List `entries`; the same files as before (every return to the screen) change nothing."""
        if entries == list(self.token_file_list.entries.values()):
            return
        had_files = any(e.token_file is not None for e in self.token_file_list.entries.values())
        self.token_file_list.show_entries(entries)
        self._show_list_if_any(entries)
        usable = [e for e in entries if e.token_file is not None]
        if not had_files and len(usable) == 1:
            # The project's first token file, as the form chooses the only one when it is built.
            self.token_file_list.select(usable[0].path)
        self._files_changed()

    def show_check(self, check: FormCheck) -> None:
        self._take_parent(check)
        for key, row in self.rows.items():
            row.show_error(check.errors.get(key))
            row.show_warning(check.warnings.get(key))
        for section, error in self.section_errors.items():
            message = check.errors.get(section)
            error.update(message or "")
            error.display = message is not None

    def _take_parent(self, check: FormCheck) -> None:
        """A parent newly named takes the model and training fields, as `babyllama train --init-from`
        takes them without flags: its shape, which a fine-tuning run must keep, and its settings
        with a fresh schedule; the user's edits after that stay."""
        parent = check.parent
        path = parent.checkpoint.path if parent is not None else None
        if path is None or path == self._parent_applied:
            self._parent_applied = path
            return
        self._parent_applied = path
        for key, value in parent_values(parent).items():
            self.set_value(key, value)

    def _show_init_from(self) -> None:
        """The fine-tuning row is there when the chosen data is conversations, or once it holds a
        run (it is sent whatever the data, so it is never sent unseen)."""
        sft = any(e.is_sft for e in self.token_file_list.chosen)
        self.rows["init_from"].display = sft or bool(self.init_from.value.strip())

    def fine_tune_from(self, text: str) -> None:
        """Name the run to fine-tune from, and when the chosen data is not conversations choose the
        project's only SFT token file. A default run name becomes the parent's, "base-sft": in the
        runs table, "tiny-..." said nothing of what the run learns."""
        self.init_from.value = text
        if self.name_input.value == self._default_name:
            self._name_stem, self._name_dated = f"{Path(text).name}-sft", False
            self.renew_default_name(self._now)
        sft = [path for path, e in self.token_file_list.entries.items() if e.is_sft]
        if not any(e.is_sft for e in self.token_file_list.chosen) and len(sft) == 1:
            self.token_file_list.deselect_all()
            self.token_file_list.select(sft[0])
        self._show_init_from()

    def _show_list_if_any(self, entries: list[TokenFileEntry]) -> None:
        """An empty list is hidden; its row's message then takes the list's place beside the label."""
        self.token_file_list.display = bool(entries)
        self.rows["data"].set_class(not entries, "-no-files")

    def set_value(self, key: str, value) -> None:
        editor = self.rows[key].editor
        if isinstance(editor, (Checkbox, Select)):
            editor.value = value
        else:
            assert isinstance(editor, FieldInput)
            editor.value = FIELDS[key].format(value)

    def renew_default_name(self, now: float) -> None:
        """A fresh default run name (after a launch took the last one)."""
        self._now = now
        self._default_name = default_run_name(self._name_stem, now, self.runs_dir, self._name_dated)
        self.name_input.value = self._default_name

    def follow_clock(self, now: float) -> None:
        """Keep the default run name at the current minute while the user has not typed a name
        of their own: a form left from 10:41 would otherwise offer tiny-...-1041 at 10:45. The
        screen calls it only while the form is out of sight, so the name never changes under the
        user's eyes between reading it and launching."""
        if int(now // 60) != int(self._now // 60) and self.name_input.value == self._default_name:
            self.renew_default_name(now)

    def focus_first(self) -> None:
        """Focus the first field with the form at its top: scrolling the field into view would hide
        the "Data and run" heading above it. With no token files to list, nothing is focused, so
        the screen keys (1 for the Corpora screen, where token files are made) are not typed
        into a field."""
        if self.token_file_list.display:
            self.token_file_list.focus(scroll_visible=False)
        else:
            self.screen.set_focus(None)
        self.scroll_home(animate=False)

    def focus_field(self, key: str) -> None:
        """Focus the editor of the field `key`, or for a whole section ("model") its first field."""
        row = self.rows.get(key) or next(row for k, row in self.rows.items() if k.startswith(f"{key}."))
        if row.editor.display:
            row.editor.focus()

    def field_order(self) -> list[str]:
        """Keys of the rows in the order shown, each section's key just before its fields."""
        order = list(RUN_ROWS)
        for section in SECTION_TITLES:
            order += [section, *(k for k in FIELDS if k.startswith(f"{section}."))]
        return order

    # Reacting

    @on(FieldInput.Changed)
    @on(Checkbox.Changed)
    @on(Select.Changed)
    def _edited(self, event: Message) -> None:
        event.stop()
        self._changed_soon()

    @on(FieldInput.Changed, "#init-from")
    def _init_from_edited(self) -> None:
        self._show_init_from()

    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        name = str(event.value)
        self.rows["preset"].show_help(cfg.PRESETS[name].description)
        vocab = files_vocab(self.token_file_list.chosen)
        for key, value in preset_values(name).items():
            if key.startswith("model.") and self._parent_applied is not None:
                continue  # a fine-tuning run keeps its parent's shape
            self.set_value(key, vocab if key == "model.vocab_size" and vocab else value)
        if self.name_input.value == self._default_name:
            self._name_stem, self._name_dated = name, True
            self._default_name = default_run_name(name, self._now, self.runs_dir)
            self.name_input.value = self._default_name

    @on(SelectionList.SelectedChanged, "#token-files")
    def _files_chosen(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        self._files_changed()

    def _files_changed(self) -> None:
        chosen = self.token_file_list.chosen
        vocab = files_vocab(chosen)
        if vocab is not None and self._parent_applied is None:
            self.set_value("model.vocab_size", vocab)
        self._show_init_from()
        suggested = suggested_tokenizer(chosen, self.root)
        if self.tokenizer.value in ("", self._default_tokenizer) and suggested:
            self.tokenizer.value = suggested
        self._default_tokenizer = suggested
        self._changed_soon()

    def _changed_soon(self) -> None:
        if not self._change_pending:
            self._change_pending = True
            self.call_after_refresh(self._post_changed)

    def _post_changed(self) -> None:
        self._change_pending = False
        self.post_message(self.Changed(self))
