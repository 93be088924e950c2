"""CleanReportScreen: what a `babyllama clean` removed, read from its manifest: the counts by
rule, the duplicate clusters, and the removed examples of each rule, to scroll."""

from __future__ import annotations

import json
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from babyllama.clean.report import describe_examples, describe_removed
from babyllama_tui.widgets.dialog import Dialog

EXAMPLES_SHOWN = 5


def read_clean_manifest(path: Path) -> dict | None:
    """The manifest of a cleaned corpus (`NAME.jsonl.json` beside `NAME.jsonl`), or None."""
    try:
        manifest = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == "babyllama-clean" else None


def describe_report(manifest: dict, name: str) -> Text:
    total_in, total_out = manifest["documents_in"], manifest["documents_out"]
    clusters = manifest["duplicate_clusters"]
    text = Text()
    text.append(f"{name}: ", "bold")
    text.append(f"{total_out:,} of {total_in:,} documents kept ({total_out / max(total_in, 1):.1%})\n")
    text.append("removed: ", "dim")
    text.append(describe_removed(manifest["removed"]) + "\n")
    if clusters["sizes"]:
        sizes = ", ".join(f"{n:,} of {size}" for size, n in clusters["sizes"].items())
        text.append("duplicate clusters: ", "dim")
        text.append(f"{clusters['clusters']:,} ({sizes})\n")
    if manifest["malformed"]:
        text.append(f"{manifest['malformed']:,} malformed records skipped\n", "red")
    text.append("\n")
    text.append(describe_examples(manifest, EXAMPLES_SHOWN))
    return text


class CleanReportScreen(Dialog[None]):
    BINDINGS = [Binding("escape,e,q", "close", "Close")]

    def __init__(self, manifest: dict, name: str) -> None:
        super().__init__()
        self.manifest = manifest
        self.name_shown = name

    def compose(self) -> ComposeResult:
        with Vertical(id="clean-report", classes="corpora-dialog") as box:
            box.border_title = f"What clean removed: {self.name_shown}"
            with VerticalScroll(id="clean-report-text"):
                yield Static(describe_report(self.manifest, self.name_shown))
            yield Static("↑↓ pgup pgdn scroll · esc closes · p on the corpus prepares it", classes="corpora-dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#clean-report-text").focus()

    def action_close(self) -> None:
        self.dismiss(None)
