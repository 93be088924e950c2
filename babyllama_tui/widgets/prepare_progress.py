"""PrepareProgress: the chosen sources and tokenizer, then the live progress of the job that
prepares them (documents, tokens, MB/s, ETA, bad records), then how it ended."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from babyllama.units import format_clock
from babyllama_tui.corpora.jobs import JobStep
from babyllama_tui.corpora.listing import format_bytes, format_count

# Progress events can come 5 a second and more; the screen is redrawn at most this often.
REDRAW_INTERVAL_S = 0.25


def describe_prepare_event(event: dict) -> Text:
    skipped = event.get("skipped") or {}
    text = Text()
    text.append(f"{event.get('documents', 0):,}", "bold")
    text.append(" docs  ")
    text.append(format_count(event.get("tokens", 0)), "bold")
    text.append(" tokens  ")
    text.append(f"{event.get('mb_per_s', 0):.1f}", "bold")
    if event.get("event") == "done":
        text.append(" MB/s  took ")
        text.append(format_clock(event.get("elapsed_s")), "bold")
    else:
        text.append(" MB/s  ETA ")
        text.append(format_clock(event.get("eta_s")), "bold")
    bad = skipped.get("malformed", 0)
    text.append(f"  {bad:,} bad", "bold red" if bad else "")
    short = skipped.get("too_short", 0)
    if short:
        text.append(f"  {short:,} short")
    return text


def describe_clean_event(event: dict) -> Text:
    """A `babyllama clean --progress jsonl` progress or done event, in a line."""
    removed = event.get("removed") or {}
    text = Text()
    if event.get("event") == "done":
        text.append(f"{event['documents_out']:,}", "bold")
        text.append(f" of {event['documents_in']:,} docs kept  ")
    else:
        phase = event.get("phase", "")
        text.append(f"{phase}  ", "bold")
        if phase == "dedup":
            text.append(f"pass {event.get('passes', 0)}/{event.get('total_passes', 0)}  ")
        text.append(f"{event.get('documents', 0):,}", "bold")
        text.append(" docs  ")
    text.append(f"{sum(removed.values()):,}", "bold")
    text.append(" removed  ")
    text.append(f"{event.get('mb_per_s', 0):.1f}", "bold")
    if event.get("event") == "done":
        text.append(" MB/s  took ")
        text.append(format_clock(event.get("elapsed_s")), "bold")
    else:
        text.append(" MB/s  ETA ")
        text.append(format_clock(event.get("eta_s")), "bold")
    largest = sorted(((n, rule) for rule, n in removed.items() if n), reverse=True)[:3]
    if largest:
        text.append("  " + ", ".join(f"{rule} {n:,}" for n, rule in largest), "dim")
    bad = event.get("malformed", 0)
    if bad:
        text.append(f"  {bad:,} bad", "bold red")
    return text


class PrepareProgress(Vertical):
    """The bottom panel of the corpora screen."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Prepare"
        self.pending_event: dict | None = None
        self.pending_line: str | None = None
        self.step: JobStep | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="prepare-choice")
        yield ProgressBar(total=1, show_eta=False, id="prepare-bar")
        yield Static(id="prepare-stats")
        yield Static(id="prepare-note")

    def on_mount(self) -> None:
        self.redraw_timer = self.set_interval(REDRAW_INTERVAL_S, self.redraw_pending, pause=True)
        self.query_one(ProgressBar).display = False

    def show_choice(self, sources: list[str], tokenizer: str | None) -> None:
        text = Text("Sources ", "dim")
        if sources:
            shown = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
            text.append(shown, "bold")
        else:
            text.append("none marked (space marks)", "italic")
        text.append("   Tokenizer ", "dim")
        text.append(tokenizer or "none chosen (t chooses)", "bold" if tokenizer else "italic")
        self.query_one("#prepare-choice", Static).update(text)

    def show_hint(self, hint: str) -> None:
        if self.step is None:
            self.query_one("#prepare-stats", Static).update(Text(hint, "dim"))

    def start(self, step: JobStep) -> None:
        self.step = step
        self.border_title = step.title
        self.pending_event = None
        self.pending_line = None
        bar = self.query_one(ProgressBar)
        bar.update(total=1, progress=0)
        bar.display = step.kind in ("prepare", "clean")
        self.query_one("#prepare-stats", Static).update(Text("starting…", "dim"))
        note = self.query_one("#prepare-note", Static)
        note.remove_class("-outcome")
        note.update(Text("$ " + step.shell_line(), "dim"))
        self.redraw_timer.resume()

    def show_event(self, event: dict) -> None:
        """A `babyllama prepare` or `clean --progress jsonl` event; drawn at the next redraw tick."""
        kind = event.get("event")
        if kind == "progress":
            self.pending_event = event
        elif kind in ("note", "warning"):
            style = "bold yellow" if kind == "warning" else "yellow"
            self.query_one("#prepare-note", Static).update(Text(str(event.get("message", "")), style))
        elif kind == "start":
            resumed = event.get("resumed_bytes") or 0
            total = event.get("total_bytes") or 0
            self.query_one(ProgressBar).update(total=max(total, 1), progress=resumed)
            files = event.get("files", 0)
            note = f"{format_bytes(total)}, {files:,} file{'s' if files != 1 else ''}, {event.get('workers', 1)} workers"
            if resumed:
                note += f", resumed at {format_bytes(resumed)}"
            note += " · c cancels, progress is kept"
            self.query_one("#prepare-note", Static).update(Text(note, "dim"))

    def show_line(self, line: str) -> None:
        """A line of output from a step that is not a prepare."""
        self.pending_line = line

    def redraw_pending(self) -> None:
        if self.pending_event is not None:
            event, self.pending_event = self.pending_event, None
            self.query_one(ProgressBar).update(total=max(event.get("total_bytes") or 0, 1), progress=event.get("bytes", 0))
            describe = describe_clean_event if self.step is not None and self.step.kind == "clean" else describe_prepare_event
            self.query_one("#prepare-stats", Static).update(describe(event))
        if self.pending_line is not None:
            line, self.pending_line = self.pending_line, None
            self.query_one("#prepare-stats", Static).update(Text(line))

    def show_stopping(self) -> None:
        if self.step is not None:
            self.border_title = f"Stopping: {self.step.title}"
            what = "chunks in flight are finished and kept" if self.step.kind in ("prepare", "clean") else "nothing is kept"
            self.query_one("#prepare-note", Static).update(Text(f"Ctrl-C sent; {what}…", "yellow"))

    def finish(self, message: str, ok: bool, stats: Text | None = None) -> None:
        """The job ended: how, and what it left."""
        self.redraw_pending()
        self.redraw_timer.pause()
        self.step = None
        self.border_title = "Prepare"
        if stats is not None:
            self.query_one("#prepare-stats", Static).update(stats)
        self.query_one(ProgressBar).display = ok and stats is not None
        note = self.query_one("#prepare-note", Static)
        note.add_class("-outcome")
        note.update(Text(message, "green" if ok else "bold red"))
