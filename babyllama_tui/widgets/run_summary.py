"""RunSummary: what the form's run would be (parameters, tokens per step, memory, epochs) and Launch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Static

from babyllama import config as cfg
from babyllama_tui.training.formatting import format_count
from babyllama_tui.training.new_run import FormCheck, epochs_of

if TYPE_CHECKING:
    from babyllama.data import TokenFile
    from babyllama.planning import MemoryFit


def summary_text(check: FormCheck, files: list[TokenFile], fit: MemoryFit | None) -> Text:
    """`fit` is the memory judgement of the form's configs (planning.memory_fit), None while either is invalid."""
    model, train, workers = check.model, check.train, check.workers
    text = Text()
    if model is not None:
        text.append(f"{format_count(cfg.param_count(model))} params", style="bold")
        text.append(f" ({format_count(cfg.non_embedding_param_count(model))} w/o embedding)", style="dim")
    else:
        text.append("params -", style="dim")
    if model is not None and train is not None and fit is not None:
        text.append(" · ")
        text.append(f"{cfg.tokens_per_step(model, train, workers):,} tokens/step", style="bold")
        # One line each: params and batch, then memory and length, so no number is cut from its unit.
        text.append("\n")
        text.append(f"≈{fit.per_worker_mb / 1024:.1f} GiB", style="bold")
        text.append(f" a worker ({fit.dtype})", style="dim")
        if not fit.fits:
            where = fit.where.removeprefix("the ")
            text.append(f" > {where} {(fit.free_mb or 0) / 1024:.1f} GiB free", style="bold red")
    problems = len(check.errors)
    if problems:
        # The first one in words: its field may be scrolled out of sight.
        text.append("\n")
        text.append(f"{problems} to fix: ", style="bold red")
        text.append(next(iter(check.errors.values())), style="red")
    elif model is not None and train is not None:
        epochs = epochs_of(model, train, files, workers)
        if epochs is not None:
            tokens = sum(f.n_tokens for f in files)
            what = "the windows with answers" if any(f.mask_path for f in files) else f"{format_count(tokens)} tokens"
            text.append(f"\n{train.max_steps:,} steps ≈ {epochs:.2g} epochs of {what}")
    if not problems and check.warnings:
        text.append("\n")
        text.append(next(iter(check.warnings.values())), style="yellow")
    return text


class RunSummary(Horizontal):
    """Live numbers for the form's run, and the Launch button (disabled until the form is valid)."""

    def compose(self) -> ComposeResult:
        yield Static("", id="summary-text")
        yield Button("Launch ^l", id="launch", variant="success", compact=True, disabled=True)

    def show(self, check: FormCheck, files: list[TokenFile], fit: MemoryFit | None) -> None:
        self.query_one("#summary-text", Static).update(summary_text(check, files, fit))
        self.query_one("#launch", Button).disabled = check.plan is None
