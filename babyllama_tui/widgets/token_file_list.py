"""TokenFileList: the token files under data/ to train on, each with its size (an SFT file's conversations
and trained tokens) and tokenizer."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets.selection_list import Selection

from babyllama_tui.training.formatting import format_count
from babyllama_tui.training.new_run import TokenFileEntry
from babyllama_tui.widgets.check_list import CheckList


def describe_entry(entry: TokenFileEntry, data_dir: Path) -> Text:
    try:
        shown = str(entry.path.relative_to(data_dir))
    except ValueError:
        shown = str(entry.path)
    text = Text(shown, style="bold")
    if entry.token_file is None:
        text.append(f"  unreadable: {entry.problem}", style="red")
        return text
    token_file = entry.token_file
    tokenizer = token_file.tokenizer or {}
    name = tokenizer.get("name") or ("ChatGLM2 (no manifest)" if not tokenizer else "unnamed tokenizer")
    if entry.is_sft:
        # What fine-tuning learns from: the conversations and their answer tokens (the vocabulary
        # left out, so the line fits 80 columns).
        manifest = token_file.manifest or {}
        text.append("  SFT", style="bold")
        text.append(f" · {format_count(manifest.get('conversations'))} conversations, "
                    f"{format_count(manifest.get('trained_tokens'))} trained · {name}", style="dim")
        return text
    text.append(f"  {format_count(token_file.n_tokens)} tokens · {name}, vocab {token_file.vocab_size:,}", style="dim")
    return text


def _selections(entries: list[TokenFileEntry], chosen: set[Path], data_dir: Path) -> list[Selection]:
    return [
        Selection(describe_entry(e, data_dir), e.path, e.path in chosen, disabled=e.token_file is None)
        for e in entries
    ]


class TokenFileList(CheckList[Path]):
    """Space toggles a file; files that cannot be read are listed, disabled, with the reason."""

    def __init__(self, data_dir: Path, entries: list[TokenFileEntry], chosen: set[Path], **kwargs) -> None:
        super().__init__(*_selections(entries, chosen, data_dir), **kwargs)
        self.data_dir = data_dir
        self.entries = {entry.path: entry for entry in entries}

    def show_entries(self, entries: list[TokenFileEntry]) -> None:
        """List `entries`, keeping the choice of files that are still there, and the highlight."""
        chosen = set(self.selected)
        highlighted = self.highlighted_path
        self.entries = {entry.path: entry for entry in entries}
        self.clear_options()
        self.add_options(_selections(entries, chosen, self.data_dir))
        if highlighted in self.entries:
            self.highlighted = list(self.entries).index(highlighted)
        elif self.has_focus:
            self.action_first()

    @property
    def highlighted_path(self) -> Path | None:
        return None if self.highlighted is None else self.get_option_at_index(self.highlighted).value

    @property
    def chosen(self) -> list[TokenFileEntry]:
        return [self.entries[path] for path in self.selected if path in self.entries]
