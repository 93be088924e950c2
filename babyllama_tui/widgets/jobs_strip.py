"""JobsStrip: a run's export or eval job: the newest running (and how many more run; X cancels it), else the newest.

Hidden while the run has no jobs. The screen that holds it calls `refresh_jobs` as it polls.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from babyllama.runs import ACTIVE_STATES
from babyllama_tui.training.run_jobs import describe_job, shown_job
from babyllama_tui.widgets.runs_table import STATE_STYLES


class JobsStrip(Static):
    def __init__(self, root: Path, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.root = root
        self.run_path: Path | None = None
        self._shown: Text | None = None
        self.display = False

    def show_run(self, run_path: Path | None, *, poll: bool = False) -> None:
        """Show `run_path`'s jobs: read when the run changes, or with `poll` (the screen's poll) anyway."""
        if run_path != self.run_path or poll:
            self.run_path = run_path
            self.refresh_jobs()

    def on_resize(self) -> None:
        self.refresh_jobs()

    def refresh_jobs(self) -> None:
        job, more = shown_job(self.run_path) if self.run_path is not None else (None, 0)
        text = Text()
        if job is not None:
            more_text = f"  (+{more} more running)" if more else ""
            cancel_text = "  X cancels" if job.state in ACTIVE_STATES else ""
            # The line's room once shown (none is known while hidden: the resize on showing tells it).
            width = self.size.width - len("● ") - len(more_text) - len(cancel_text) if self.size.width else None
            text.append("● ", style=STATE_STYLES.get(job.state, ""))
            text.append(describe_job(job, self.root, width))
            text.append(more_text, style="dim")
            text.append(cancel_text, style="dim")
        self.display = job is not None
        if text != self._shown:
            self._shown = text
            self.update(text)
