"""Fine-tuning from the app, on real files: an SFT token file made by `babyllama prepare` from
conversations, listed as one on the Corpora screen and in the new-run form; the form's "fine-tune
from" row with the engine's checks; f on the runs table; a fine-tuning run's parent in its detail."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from numpy_checkpoints import write_run_with_checkpoint
from textual.widgets import Static
from textual.widgets.data_table import ColumnKey

from babyllama.config import ModelConfig
from babyllama.planning import read_parent
from babyllama.prepare import prepare
from babyllama.runs import ACTIVE_STATES, RunDir, kill_run, stop_run
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.corpora import CorporaScreen
from babyllama_tui.screens.train import TrainScreen
from babyllama_tui.training.new_run import RunForm, check_form, find_token_files, parent_values
from babyllama_tui.widgets.corpus_list import CorpusList
from babyllama_tui.widgets.runs_table import RunsTable
from babyllama_tui.widgets.token_file_table import TokenFileTable

from pilot_wait import wait_until
from run_fixtures import fill_run, read_argv, write_standin

PAIRS = [("刘备的两个结义兄弟是谁？", "关羽和张飞。"), ("诸葛亮字什么？", "字孔明，号卧龙。")]
PARENT_MODEL = ModelConfig(vocab_size=2000, dim=32, n_layers=2, n_heads=4, max_seq_len=32)


@pytest.fixture(scope="module")
def made_files(tmp_path_factory, sample_jsonl, sp_tokenizer_dir) -> tuple[Path, Path]:
    """(an SFT token file of 40 conversations, a pretraining token file of four chapters), as prepare writes them."""
    folder = tmp_path_factory.mktemp("made")
    conversations = folder / "qa.jsonl"
    conversations.write_text("".join(
        json.dumps({"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                   ensure_ascii=False) + "\n" for q, a in PAIRS * 20), encoding="utf-8")
    prepare([conversations], "sft-conversations", sp_tokenizer_dir, folder / "qa.bin", workers=1)
    chapters = folder / "sanguo.jsonl"
    chapters.write_text("\n".join(sample_jsonl.read_text(encoding="utf-8").splitlines()[:4]) + "\n", encoding="utf-8")
    prepare([chapters], "c4", sp_tokenizer_dir, folder / "sanguo.bin", workers=1)
    return folder / "qa.bin", folder / "sanguo.bin"


def parent_run(path: Path, tokenizer: dict, cfg: ModelConfig = PARENT_MODEL) -> Path:
    """A finished run with one complete checkpoint (step 5) of a random model, trained with `tokenizer`."""
    checkpoint = write_run_with_checkpoint(path, 5, cfg, tokenizer, train={"batch_size": 4, "learning_rate": 1e-3})
    from safetensors.numpy import save_file

    save_file({"optimizer_step": np.zeros((), np.float32)}, str(checkpoint / "optimizer.safetensors"))
    (checkpoint / "state.json").write_text(json.dumps({"format": 1, "step": 5}), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, made_files, sp_tokenizer) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for made in made_files:
        for path in made.parent.glob(made.name + "*"):
            shutil.copy(path, data / path.name)
    shutil.copy(made_files[0].with_name("qa.jsonl"), data / "qa.jsonl")
    parent_run(tmp_path / "out" / "runs" / "base", sp_tokenizer.describe())
    return tmp_path


@pytest.fixture
def stop_afterwards():
    runs: list[Path] = []
    yield runs
    for run in runs:
        if stop_run(run, wait=True, timeout=30).state in ACTIVE_STATES:
            kill_run(run)


async def test_an_sft_token_file_is_listed_as_one_and_its_mask_is_not_a_corpus(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1")
        screen = app.screen
        assert isinstance(screen, CorporaScreen)
        table = screen.query_one(TokenFileTable)
        await wait_until(pilot, lambda: len(table.entries) == 2, "the token files")
        sft = table.entries[str(project / "data" / "qa.bin")]
        assert sft.state == "ready" and sft.sft, sft.problem
        assert (sft.conversations, sft.documents) == (40, 40)
        mask = np.fromfile(project / "data" / "qa.bin.mask", dtype=np.uint8)
        assert sft.trained_tokens == int(mask.sum()) and 0 < sft.trained_tokens < sft.tokens
        assert str(table.get_cell(str(sft.path), "state")) == "ready SFT"
        assert str(table.get_cell(str(project / "data" / "sanguo.bin"), "state")) == "ready"
        corpora = screen.query_one(CorpusList)
        await wait_until(pilot, lambda: corpora.entries.get(str(project / "data" / "qa.jsonl")), "the corpus read")
        assert list(corpora.entries) == [str(project / "data" / "qa.jsonl")], "the mask is no corpus"
        assert str(corpora.get_cell(str(project / "data" / "qa.jsonl"), "format")) == "sft-conversations"
        assert corpora.columns[ColumnKey("format")].width >= len("sft-conversations"), "its format whole at 80 columns"
        table.focus()
        await pilot.pause()
        detail = str(screen.query_one("#corpora-detail", Static).render())
        assert detail.startswith(f"qa.bin  SFT: 40 conversations, {sft.trained_tokens:,} of {sft.tokens:,} tokens "
                                 "trained on"), detail


async def open_form(pilot) -> TrainScreen:
    screen = pilot.app.screen
    assert isinstance(screen, TrainScreen)
    await wait_until(pilot, lambda: screen.form is not None and screen.form_check is not None, "the form")
    await pilot.pause()
    return screen


async def test_f_on_a_run_fills_the_form_to_fine_tune_from_it_and_launches_with_init_from(project, stop_afterwards):
    app = BabyLlamaApp(root=project, train_program=[str(write_standin(project))])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrainScreen) and screen.pane == "runs"
        await pilot.press("f")
        screen = await open_form(pilot)
        form = screen.form
        await wait_until(pilot, lambda: screen.form_check.parent is not None, "the parent read")
        assert form.init_from.value == "out/runs/base" and form.rows["init_from"].display
        assert [e.path.name for e in form.token_file_list.chosen] == ["qa.bin"], "the SFT file chosen"
        lines = [line for line in (form.token_file_list.render_line(y).text for y in range(4)) if "qa.bin" in line]
        assert "qa.bin  SFT · 40 conversations," in lines[0] and lines[0].rstrip(" ▎").endswith("· sanguo"), lines
        await wait_until(pilot, lambda: form.rows["model.dim"].editor.value == "32", "the parent's shape")
        await pilot.pause()
        assert screen.form_check.errors == {} and screen.form_check.warnings == {}
        name = form.name_input.value
        assert name == "base-sft", "named after its parent"
        await pilot.press("ctrl+l")
        run = project / "out" / "runs" / name
        stop_afterwards.append(run)
        await wait_until(pilot, lambda: (run / "argv.json").exists(), "the trainer to start")
    argv = read_argv(run)
    assert argv[argv.index("--init-from") + 1] == str((project / "out" / "runs" / "base").resolve())
    assert argv[argv.index("--data") + 1] == str((project / "data" / "qa.bin").resolve())
    assert "--dim=32" in argv and "--max_seq_len=32" in argv, "the parent's shape, as the form showed it"


def form_values(project: Path, files: list[str], init_from: str, **changes: str) -> RunForm:
    entries = {e.path.name: e for e in find_token_files(project / "data")}
    parent = read_parent(project / init_from)
    fields = {k: (v if isinstance(v, bool) else "" if v is None else str(v)) for k, v in parent_values(parent).items()}
    fields.update(changes)
    tokenizer = entries[files[0]].tokenizer_path
    return RunForm([entries[name].token_file for name in files], tokenizer, "tiny", fields, "sft", "1",
                   init_from=init_from)


def test_the_form_shows_the_engines_refusals_of_a_fine_tuning_run(project, sp_tokenizer):
    runs = project / "out" / "runs"
    check = check_form(form_values(project, ["qa.bin"], "out/runs/base"), runs, project)
    assert check.errors == {} and check.plan is not None
    assert check.plan.args[check.plan.args.index("--init-from") + 1] == str((runs / "base").resolve())

    check = check_form(form_values(project, ["qa.bin"], "out/runs/base", **{"model.dim": "64", "model.n_layers": "3"}),
                       runs, project)
    assert check.errors == {"model.dim": "the parent's is 32: a fine-tuning run keeps its parent's shape",
                            "model.n_layers": "the parent's is 2: a fine-tuning run keeps its parent's shape"}

    check = check_form(form_values(project, ["qa.bin", "sanguo.bin"], "out/runs/base"), runs, project)
    assert check.errors["data"].startswith(f"{project / 'data' / 'sanguo.bin'}: a pretraining token file (text, no "
                                           "loss mask), not conversations")

    other = {**sp_tokenizer.describe(), "name": "other", "sha256": "sha256:" + "0" * 64}
    parent_run(runs / "other-base", other)
    check = check_form(form_values(project, ["qa.bin"], "out/runs/other-base"), runs, project)
    assert "the parent was trained with tokenizer other (sha256:000000000000…), the data's is sanguo (qa.bin)" in (
        check.errors["init_from"])

    missing = form_values(project, ["qa.bin"], "out/runs/base")
    missing.init_from = "out/runs/nothing"
    check = check_form(missing, runs, project)
    assert check.errors["init_from"].startswith(f"{runs / 'nothing'}: no such file or folder")


async def test_sft_data_without_a_parent_warns_and_the_detail_names_a_fine_tuning_runs_parent(project):
    run = RunDir(project / "out" / "runs" / "chat")
    fill_run(run, steps=20, max_steps=20, started=time.time() - 60)
    config = run.read_config()
    config["init_from"] = {"run": str(project / "out" / "runs" / "base"),
                           "checkpoint": str(project / "out" / "runs" / "base" / "checkpoints" / "step_0000005"),
                           "step": 5}
    run.create({**config, "data": {**config.get("data", {}), "sft": True}}, overwrite=True)
    # --init-from on text: continued pretraining, not fine-tuning.
    more = RunDir(project / "out" / "runs" / "more")
    fill_run(more, steps=20, max_steps=20, started=time.time() - 60)
    more.create({**more.read_config(), "init_from": config["init_from"],
                 "data": {**config.get("data", {}), "sft": False}}, overwrite=True)
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(RunsTable)
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the runs")
        table.highlight(run.path)
        await pilot.pause()
        detail = str(screen.query_one("#run-detail", Static).render())
        assert detail == f"{run.path}  fine-tuned from base@5", detail
        table.highlight(more.path)
        await pilot.pause()
        detail = str(screen.query_one("#run-detail", Static).render())
        assert detail == f"{more.path}  continued pretraining from base@5", detail
        table.highlight(run.path)
        await pilot.pause()
        await pilot.press("n")
        screen = await open_form(pilot)
        form = screen.form
        assert not form.rows["init_from"].display, "no fine-tuning row for pretraining data"
        form.token_file_list.deselect_all()
        form.token_file_list.select(project / "data" / "qa.bin")
        await wait_until(pilot, lambda: "init_from" in screen.form_check.warnings, "the warning")
        assert form.rows["init_from"].display
        assert screen.form_check.plan is not None, "a warning, not a refusal: the engine trains SFT data from scratch"
        assert form.rows["init_from"].warning.startswith("no parent: the model starts from random weights")


async def test_the_forms_shape_refusal_of_a_fine_tuning_run_is_one_line_on_the_field_at_80_columns(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f")
        screen = await open_form(pilot)
        form = screen.form
        await wait_until(pilot, lambda: form.rows["model.dim"].editor.value == "32", "the parent's shape")
        form.set_value("model.dim", 64)
        row = form.rows["model.dim"]
        await wait_until(pilot, lambda: row.error is not None, "the refusal")
        await pilot.pause()
        shown = [line.rstrip() for line in (row.note.render_line(y).text for y in range(row.note.size.height))]
        assert shown == ["the parent's is 32: a fine-tuning run keeps its parent's shape"]
        assert form.rows["init_from"].error is None


def test_the_forms_epochs_of_an_sft_run_count_the_windows_that_hold_answers(project, sample_jsonl, sp_tokenizer_dir):
    """An SFT run draws only the windows whose targets hold a trained token: an epoch is those, not every token.
    Here long questions with short answers leave most windows without one."""
    from babyllama.data import SftDataset
    from babyllama_tui.training.new_run import epochs_of
    from babyllama_tui.widgets.run_summary import summary_text

    text = json.loads(sample_jsonl.read_text(encoding="utf-8").splitlines()[0])["text"]
    source = project / "long-questions.jsonl"
    source.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": text[i:i + 300]},
                                                            {"role": "assistant", "content": "是。"}]},
                                         ensure_ascii=False) + "\n" for i in range(0, 6000, 300)), encoding="utf-8")
    prepare([source], "sft-conversations", sp_tokenizer_dir, project / "data" / "long.bin", workers=1)
    form = form_values(project, ["long.bin"], "out/runs/base")
    check = check_form(form, project / "out" / "runs", project)
    model, train = check.model, check.train
    assert check.errors == {}
    dataset = SftDataset([project / "data" / "long.bin"], seq_len=model.max_seq_len, val_fraction=train.val_fraction)
    all_windows = (form.token_files[0].n_tokens - 1) // model.max_seq_len
    assert dataset.train_windows < all_windows / 3
    rows_per_step = train.batch_size * train.grad_accum
    for workers in (1, 2):
        assert epochs_of(model, train, form.token_files, workers) == pytest.approx(
            train.max_steps * rows_per_step * workers / dataset.train_windows)
    assert str(summary_text(check, form.token_files, None)).endswith(
        f"{train.max_steps:,} steps ≈ {epochs_of(model, train, form.token_files, 1):.2g} epochs of the windows with "
        "answers")
