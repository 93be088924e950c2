"""Cleaning from the Corpora screen under Pilot, with a real `babyllama clean` subprocess: the
dialog's settings, live progress, the report of what was removed, and prepare on the result."""

from __future__ import annotations

import json
import random
import shutil
from functools import partial
from pathlib import Path

from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.corpora import CorporaScreen
from babyllama_tui.widgets.clean_dialog import CleanDialog
from babyllama_tui.widgets.clean_report import CleanReportScreen
from babyllama_tui.widgets.corpus_list import CorpusList
from babyllama_tui.widgets.prepare_dialog import PrepareDialog
from babyllama_tui.widgets.prepare_progress import PrepareProgress
from babyllama_tui.widgets.token_file_table import TokenFileTable
from babyllama_tui.widgets.tokenizer_picker import TokenizerPicker

import pilot_wait

wait_until = partial(pilot_wait.wait_until, limit=180.0)


def planted_project(tmp_path: Path, sample_jsonl: Path, sp_tokenizer_dir: Path) -> Path:
    """The sample's chapters with an edited copy of every fourth, an exact copy of every tenth and
    a line of digits, in data/planted.jsonl; our tokenizer in out/tokenizers/."""
    root = tmp_path / "project"
    chapters = [json.loads(line)["text"] for line in sample_jsonl.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(3)
    edited = []
    for chapter in chapters[::4]:
        chars = list(chapter)
        for _ in range(len(chars) // 100):
            chars[rng.randrange(len(chars))] = "曹"
        edited.append("".join(chars))
    texts = chapters + edited + chapters[::10] + ["1234567890 " * 20]
    (root / "data").mkdir(parents=True)
    (root / "data" / "planted.jsonl").write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    shutil.copytree(sp_tokenizer_dir, root / "out" / "tokenizers" / "sanguo")
    return root


async def modal(pilot, kind):
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, kind) and pilot.app.screen.focused, kind.__name__)
    return pilot.app.screen


async def test_clean_shows_progress_and_the_report_then_prepares_the_result(tmp_path, sample_jsonl,
                                                                           sp_tokenizer_dir):
    root = planted_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1")
        screen = app.screen
        assert isinstance(screen, CorporaScreen)
        corpora = screen.query_one(CorpusList)
        await wait_until(pilot, lambda: corpora.entries and all(corpora.entries.values()), "the listing")
        await pilot.press("space", "k")
        dialog = await modal(pilot, CleanDialog)
        # A setting out of range is refused in the dialog, with the engine's words.
        threshold = dialog.query_one("#clean-threshold")
        threshold.value = "1.5"
        await pilot.pause()
        assert dialog.query_one("#clean-start").disabled
        assert "--threshold 1.5 must be between 0 and 1" in str(dialog.query_one("#clean-message").render())
        threshold.value = "0.7"
        await pilot.pause()
        assert "--threshold 0.7" in str(dialog.query_one("#clean-command").render())
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, "the dialog to close")

        progress = screen.query_one(PrepareProgress)
        seen = []
        out = root / "data" / "planted.clean.jsonl"

        def ended() -> bool:
            seen.append(str(progress.query_one("#prepare-stats").render()))
            return out.exists() and not screen.job_running

        await wait_until(pilot, ended, "clean to finish")
        assert any("removed" in line for line in seen)
        note = str(screen.query_one("#prepare-note").render())
        assert "Cleaned into data/planted.clean.jsonl: 120 of 163 documents kept" in note
        manifest = json.loads((root / "data" / "planted.clean.jsonl.json").read_text(encoding="utf-8"))
        assert manifest["removed"]["exact_duplicate"] == 12 and manifest["removed"]["near_duplicate"] == 30
        assert manifest["removed"]["digits"] == 1 and manifest["settings"]["threshold"] == 0.7

        # The cleaned corpus is listed, marked in place of its source, and e shows its report.
        await wait_until(pilot, lambda: corpora.marked == [out], "the cleaned corpus marked")
        assert "planted.clean.jsonl.json" not in " ".join(corpora.entries)
        await pilot.press("e")
        report = await modal(pilot, CleanReportScreen)
        text = str(report.query_one("#clean-report-text Static").render())
        assert "120 of 163 documents kept" in text and "near_duplicate: 30 removed" in text
        assert "planted.jsonl:163: digits 1.00 > 0.5" in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the report to close")

        await pilot.press("t")
        await modal(pilot, TokenizerPicker)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, "the picker to close")
        await pilot.press("p")
        prepare_dialog = await modal(pilot, PrepareDialog)
        assert prepare_dialog.inputs == ["data/planted.clean.jsonl"]
        await pilot.press("enter")
        token_file = root / "data" / "planted.bin"
        await wait_until(pilot, lambda: token_file.exists() and not screen.job_running, "prepare to finish")
        assert json.loads((root / "data" / "planted.bin.json").read_text())["documents"] == 120
        tokens = screen.query_one(TokenFileTable)
        await wait_until(pilot, lambda: str(token_file) in tokens.entries, "the token file listed")
