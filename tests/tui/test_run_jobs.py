"""Export and evaluation from the app: the palette finds them, the dialogs start real detached
jobs on a checkpoint written with numpy, and what the jobs do shows on the Monitor and the runs table."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from numpy_checkpoints import SMALL, write_run_with_checkpoint
from textual.command import CommandList, CommandPalette

from babyllama.files import atomic_write_json
from babyllama.runs import ACTIVE_STATES, RunDir
from babyllama_tui.app import BabyLlamaApp

from pilot_wait import wait_until
from run_fixtures import write_token_file

RUN = "small-run"
STEP = 20
# Enough windows that scoring all of them outlasts what a test does meanwhile.
LONG_TOKENS = 4_000_000


@pytest.fixture
def project(tmp_path) -> Path:
    """A finished run with a checkpoint, and a token file in data/."""
    write_run_with_checkpoint(tmp_path / "out" / "runs" / RUN, STEP)
    write_token_file(tmp_path / "data", "held.bin", tokens=20_000, vocab_size=SMALL.vocab_size, tokenizer_path="x")
    return tmp_path


def run_path(project: Path, name: str = RUN) -> Path:
    return project / "out" / "runs" / name


def jobs(project: Path) -> list:
    from babyllama.runs.jobs import list_jobs

    return list_jobs(run_path(project))


def strip_text(screen) -> str:
    from babyllama_tui.widgets.jobs_strip import JobsStrip

    strip = screen.query_one(JobsStrip)
    return strip.render().plain if strip.display else ""


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def palette_titles(app) -> list[str]:
    if not isinstance(app.screen, CommandPalette):
        return []
    options = app.screen.query_one(CommandList)
    return [str(options.get_option_at_index(i).prompt).splitlines()[0].strip() for i in range(options.option_count)]


async def palette_finds(pilot, typed: str, title: str) -> None:
    """Type `typed` into the palette and wait for `title` among what it lists."""
    app = pilot.app
    await pilot.press("ctrl+p", *typed)
    await wait_until(pilot, lambda: title in palette_titles(app), f"{title!r} in the palette")
    await pilot.press("escape")
    await wait_until(pilot, lambda: not isinstance(app.screen, CommandPalette), "the palette to close")


def offered(screen, action: str) -> bool:
    """Whether the screen's key for `action` is enabled: the palette lists only those."""
    return any(a.binding.action == action and a.enabled for a in screen.active_bindings.values())


async def on_monitor(pilot, project: Path, name: str = RUN):
    pilot.app.monitor_run(run_path(project, name))
    await wait_until(pilot, lambda: type(pilot.app.screen).__name__ == "MonitorScreen"
                     and pilot.app.screen.follower is not None
                     and pilot.app.screen.follower.path == run_path(project, name), "the monitor")
    await pilot.pause()
    return pilot.app.screen


async def open_dialog(pilot, key: str, dialog: str):
    await pilot.press(key)
    await wait_until(pilot, lambda: type(pilot.app.screen).__name__ == dialog, f"the {dialog}")
    await pilot.pause()
    return pilot.app.screen


async def test_the_palette_finds_export_and_evaluate_for_a_run_with_a_checkpoint(project):
    bare = RunDir(run_path(project, "bare-run"))
    bare.create({"model": {}, "train": {}})
    bare.write_status(state="failed", step=0, error="stopped before its first checkpoint")
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        await palette_finds(pilot, "exp", "Export a checkpoint (hf, llama2.c, gguf)")
        await palette_finds(pilot, "eval", "Evaluate a checkpoint on a token file")
        await on_monitor(pilot, project, "bare-run")
        assert not offered(monitor, "export") and not offered(monitor, "evaluate"), "the bare run has no checkpoint"
        await pilot.press("2")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TrainScreen", "the Train screen")
        table = app.screen.query_one("RunsTable")
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the runs")
        table.move_cursor(row=[row.name for row in table.runs.values()].index(RUN))
        await wait_until(pilot, lambda: offered(app.screen, "export"), "the run's keys")
        await palette_finds(pilot, "exp", "Export a checkpoint (hf, llama2.c, gguf)")
        await palette_finds(pilot, "eval", "Evaluate a checkpoint on a token file")


async def test_export_from_the_monitor_writes_the_folder_and_shows_where(project):
    app = BabyLlamaApp(root=project)
    out = project / "out" / "exports" / f"{RUN}-{STEP}-hf"
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        dialog = await open_dialog(pilot, "x", "ExportScreen")
        assert dialog.out_input.value == f"out/exports/{RUN}-{STEP}-hf"
        await pilot.press("enter")
        await wait_until(pilot, lambda: ": done," in strip_text(monitor), "the export to be done")
        assert strip_text(monitor).startswith(f"● export step {STEP} as hf: done, out/exports/{RUN}-{STEP}-hf (")
        assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
        await wait_until(pilot, lambda: any(": done," in note for note in notes(app)), "the notification")
    (job,) = jobs(project)
    assert (job.kind, job.state, job.result["out"]) == ("export", "finished", str(out))


async def test_the_output_follows_the_format_and_a_folder_with_files_is_refused(project):
    taken = project / "out" / "exports" / f"{RUN}-{STEP}-hf"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine")
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        await on_monitor(pilot, project)
        dialog = await open_dialog(pilot, "x", "ExportScreen")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "not empty" in str(dialog.query_one("#job-error").render()), "the refusal")
        assert str(dialog.query_one("#job-error").render()) == \
            f"{taken} exists and is not empty; choose another output"
        dialog.format_select.value = "llama2c"
        await wait_until(pilot, lambda: dialog.out_input.value.endswith("-llama2c.bin"), "the output to follow")
        assert str(dialog.query_one("#job-error").render()) == ""
        await pilot.press("escape")
    assert jobs(project) == [] and [p.name for p in taken.iterdir()] == ["notes.txt"]


async def test_eval_from_the_runs_table_shows_the_loss_and_perplexity_where_they_fit(project):
    from babyllama_tui.training.run_jobs import describe_job
    from babyllama_tui.widgets.jobs_strip import JobsStrip

    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TrainScreen", "the Train screen")
        train = app.screen
        await pilot.pause()
        dialog = await open_dialog(pilot, "v", "EvalScreen")
        assert str(dialog.data_select.value) == str(project / "data" / "held.bin")
        await pilot.press("enter")
        await wait_until(pilot, lambda: " loss " in strip_text(train), "the loss")
        (job,) = jobs(project)
        loss, perplexity, tokens = job.result["loss"], job.result["perplexity"], job.result["tokens"]
        full = f"eval step {STEP} on data/held.bin: loss {loss:.4f}, perplexity {perplexity:,.2f} over {tokens:,} tokens"
        assert describe_job(job, project) == full
        # At 80 columns the perplexity (e to the loss) gives way, so the line does not wrap.
        assert strip_text(train) == f"● eval step {STEP} on data/held.bin: loss {loss:.4f} over {tokens:,} tokens"
        assert len(strip_text(train)) <= train.query_one(JobsStrip).size.width
        assert describe_job(job, project, len(full)) == full


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)])
async def test_a_finished_eval_fits_the_train_screen_s_jobs_strip_in_one_line(project, size):
    from babyllama_tui.widgets.jobs_strip import JobsStrip

    app = BabyLlamaApp(root=project)
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TrainScreen", "the Train screen")
        train = app.screen
        await pilot.pause()
        await open_dialog(pilot, "v", "EvalScreen")
        await pilot.press("enter")
        await wait_until(pilot, lambda: " loss " in strip_text(train), "the loss")
        await pilot.pause()
        strip = train.query_one(JobsStrip)
        (job,) = jobs(project)
        assert strip.size.height == 1, (size, strip.size, strip_text(train))
        assert len(strip_text(train)) <= strip.size.width
        assert strip_text(train).startswith(f"● eval step {STEP} on data/held.bin: loss {job.result['loss']:.4f}")


async def test_eval_on_the_run_s_own_data_scores_its_held_out_windows(project):
    run = RunDir(run_path(project))
    held = project / "data" / "held.bin"
    # As a trainer writes it: the token files the run trained on.
    atomic_write_json(run.config_path, {**run.read_config(), "data": {"files": [{"path": str(held.resolve())}]}})
    write_token_file(project / "data", "another.bin", tokens=20_000, vocab_size=SMALL.vocab_size, tokenizer_path="x")
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        dialog = await open_dialog(pilot, "v", "EvalScreen")
        assert str(dialog.data_select.value) == str(held), "the run's own data first, though another.bin sorts before it"
        assert "held-out windows" in str(dialog.split_note.render())
        await pilot.press("enter")
        await wait_until(pilot, lambda: " loss " in strip_text(monitor), "the loss")
    (job,) = jobs(project)
    assert job.result["split"] == "val" and job.status["command"][-4:-2] == ["--split", "val"]


async def test_eval_on_the_data_of_a_run_that_held_nothing_out_scores_the_whole_file(project):
    run = RunDir(run_path(project))
    held = project / "data" / "held.bin"
    config = run.read_config()
    atomic_write_json(run.config_path, {**config, "train": {**config.get("train", {}), "val_fraction": 0},
                                        "data": {"files": [{"path": str(held.resolve())}]}})
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        dialog = await open_dialog(pilot, "v", "EvalScreen")
        assert str(dialog.data_select.value) == str(held)
        assert "whole file" in str(dialog.split_note.render())
        await pilot.press("enter")
        await wait_until(pilot, lambda: " loss " in strip_text(monitor), "the loss")
    (job,) = jobs(project)
    assert job.result["split"] == "all" and job.status["command"][-4:-2] == ["--split", "all"]


async def test_a_token_file_gone_before_the_job_starts_ends_in_one_line(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        await open_dialog(pilot, "v", "EvalScreen")
        (project / "data" / "held.bin").unlink()
        await pilot.press("enter")
        await wait_until(pilot, lambda: ": failed: " in strip_text(monitor), "the failure")
        # The strip and the notification poll the job each on its own timer: either may say it first.
        await wait_until(pilot, lambda: any(": failed: " in n for n in notes(app)), "the notification")
        (note,) = [n for n in notes(app) if ": failed: " in n]
        assert note.startswith(f"eval step {STEP} on data/held.bin: failed: ") and "\n" not in note
        assert str(project / "data" / "held.bin") in note
    (job,) = jobs(project)
    assert job.state == "failed" and job.reason in note


async def start_long_eval(pilot, project: Path, screen) -> object:
    """An eval of every window of a long file, started from the dialog, once its progress shows."""
    write_token_file(project / "data", "long.bin", tokens=LONG_TOKENS, vocab_size=SMALL.vocab_size, tokenizer_path="x")
    dialog = await open_dialog(pilot, "v", "EvalScreen")
    dialog.data_select.value = str(project / "data" / "long.bin")
    dialog.batches_input.value = "1000000"
    await pilot.pause()
    await pilot.press("enter")
    await wait_until(pilot, lambda: " windows (" in strip_text(screen), "the eval's progress")
    (job,) = jobs(project)
    return job


def ended(project: Path) -> bool:
    return all(job.state not in ACTIVE_STATES for job in jobs(project))


async def test_a_job_killed_says_so_in_one_line(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        job = await start_long_eval(pilot, project, monitor)
        assert "on data/long.bin: " in strip_text(monitor) and "/" in strip_text(monitor)
        os.kill(job.status["child_pid"], signal.SIGKILL)
        await wait_until(pilot, lambda: any(n.endswith(": failed: killed by SIGKILL") for n in notes(app)),
                         "the job's end")
        await wait_until(pilot, lambda: strip_text(monitor).endswith("long.bin: failed: killed by SIGKILL"),
                         "the strip to say so")


async def test_X_cancels_the_job_at_work_after_asking_and_it_ends_cancelled(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        job = await start_long_eval(pilot, project, monitor)
        assert strip_text(monitor).endswith("X cancels")
        dialog = await open_dialog(pilot, "X", "ConfirmScreen")
        await pilot.press("n")  # no: it goes on
        assert app.screen is monitor and jobs(project)[0].state == "running"
        await open_dialog(pilot, "X", "ConfirmScreen")
        assert dialog is not app.screen
        await pilot.press("y")
        await wait_until(pilot, lambda: strip_text(monitor).endswith("long.bin: cancelled"), "the strip to say so")
        await wait_until(pilot, lambda: any(n.endswith("long.bin: cancelled") for n in notes(app)), "the job's end")
        (done,) = jobs(project)
        assert done.state == "cancelled"
        await wait_until(pilot, lambda: not psutil.pid_exists(job.status["child_pid"])
                         or psutil.Process(job.status["child_pid"]).status() == psutil.STATUS_ZOMBIE, "the command")

        # Nothing at work: X says so.
        await pilot.press("X")
        assert app.screen is monitor
        assert notes(app)[-1] == f"{RUN} has no export, evaluation or benchmark at work to cancel."


async def test_a_job_outlives_the_app_and_a_second_app_shows_it(project):
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project)
        job = await start_long_eval(pilot, project, monitor)
    runner = psutil.Process(job.status["pid"])
    try:
        assert runner.is_running() and runner.status() != psutil.STATUS_ZOMBIE, "the job outlived the app"
        again = BabyLlamaApp(root=project)
        async with again.run_test(size=(200, 50)) as pilot:
            monitor = await on_monitor(pilot, project)
            await wait_until(pilot, lambda: " windows (" in strip_text(monitor), "the job's progress")
            runner.send_signal(signal.SIGTERM)
            await wait_until(pilot, lambda: "failed: stopped by SIGTERM" in strip_text(monitor), "the job's end")
    finally:
        if ended(project) is False:
            runner.kill()
    deadline = time.monotonic() + 60
    while not ended(project):
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)


def bench_run(project: Path, tokenizer, letter: str) -> Path:
    """A finished run whose checkpoint always answers `letter` (test_mcq's model), and a C-Eval folder
    in data/ceval where it is right 3 times out of 5 when `letter` is B."""
    import dataclasses

    from test_mcq import FAVOURING, favouring_checkpoint, write_ceval

    run = RunDir(run_path(project, "bench-run"))
    run.create({"model": dataclasses.asdict(FAVOURING), "train": {}})
    favouring_checkpoint(run.checkpoint_path(STEP), tokenizer, letter)
    run.latest_path.write_text(f"{run.checkpoint_path(STEP).name}\n")
    run.write_status(state="finished", step=STEP, max_steps=STEP)
    write_ceval(project / "data" / "ceval", {"law": "BBAD", "logic": "B"})
    return run.path


async def test_a_benchmark_from_the_monitor_shows_its_accuracy_where_jobs_show(project, sp_tokenizer):
    bench_run(project, sp_tokenizer, "B")
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, project, "bench-run")
        await palette_finds(pilot, "bench", "Benchmark a checkpoint (ceval, cmmlu)")
        dialog = await open_dialog(pilot, "b", "BenchScreen")
        assert (dialog.bench_task, dialog.data_input.value, dialog.shots_input.value) == ("ceval", "data/ceval", "0")
        dialog.shots_input.value = "2"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "questions (guessing" in strip_text(monitor), "the accuracy")
        assert strip_text(monitor) == f"● C-Eval step {STEP}, 2-shot: 60.0% over 5 questions (guessing 25%)"
        await wait_until(pilot, lambda: any("60.0% over 5 questions" in note for note in notes(app)), "the notification")
    from babyllama.runs.jobs import list_jobs

    (job,) = list_jobs(run_path(project, "bench-run"))
    assert (job.kind, job.state, job.result["accuracy"], job.result["shots"]) == ("bench", "finished", 0.6, 2)
    assert job.status["command"][-8:-2] == ["--task", "ceval", "--data", str(project / "data" / "ceval"), "--shots", "2"]


async def test_the_benchmark_dialog_follows_the_task_and_refuses_a_folder_of_another_layout(project, sp_tokenizer):
    bench_run(project, sp_tokenizer, "A")
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "TrainScreen", "the Train screen")
        table = app.screen.query_one("RunsTable")
        await wait_until(pilot, lambda: table.highlighted_run is not None, "the runs")
        table.move_cursor(row=[row.name for row in table.runs.values()].index("bench-run"))
        await wait_until(pilot, lambda: offered(app.screen, "benchmark"), "the run's keys")
        dialog = await open_dialog(pilot, "b", "BenchScreen")
        error = dialog.query_one("#job-error")
        dialog.task_select.value = "cmmlu"
        await wait_until(pilot, lambda: dialog.data_input.value == "data/cmmlu", "the folder to follow the task")
        dialog.data_input.value = "data/ceval"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "CMMLU" in str(error.render()), "the refusal")
        assert str(error.render()) == (f"{project / 'data' / 'ceval'}: no test/SUBJECT.csv files; is it the CMMLU "
                                       "folder? (expected dev/SUBJECT.csv and test/SUBJECT.csv files, as published)")
        dialog.task_select.value = "ceval"
        dialog.shots_input.value = "-1"
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(pilot, lambda: str(error.render()) == "shots must be 0 or more", "the shots refusal")
        await pilot.press("escape")
    assert not (run_path(project, "bench-run") / "jobs").exists()


def test_a_running_benchmark_says_how_many_questions_it_has_scored(tmp_path):
    from babyllama.runs.jobs import JobInfo
    from babyllama_tui.training.run_jobs import describe_job

    status = {"details": {"step": 400, "task": "cmmlu", "shots": 5},
              "progress": {"event": "progress", "questions": 120, "total_questions": 11528}}
    job = JobInfo(tmp_path, "bench", "running", None, status)
    assert describe_job(job, tmp_path) == "CMMLU step 400, 5-shot: 120/11,528 questions (1%)"


async def test_eval_of_a_fine_tuning_run_on_its_sft_file_scores_the_answers(tmp_path, sp_tokenizer_dir, sp_tokenizer):
    """An SFT token file in data/ is offered, and the job's line says it counted answer tokens."""
    import dataclasses
    import json

    from babyllama.prepare import prepare

    run = run_path(tmp_path)
    write_run_with_checkpoint(run, STEP, dataclasses.replace(SMALL, vocab_size=sp_tokenizer.vocab_size),
                              sp_tokenizer.describe())
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": "诸葛亮字什么？"},
                                                            {"role": "assistant", "content": "字孔明。"}]},
                                         ensure_ascii=False) + "\n" for _ in range(20)), encoding="utf-8")
    prepare([source], "sft-conversations", sp_tokenizer_dir, tmp_path / "data" / "pairs.bin", workers=1)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, tmp_path)
        dialog = await open_dialog(pilot, "v", "EvalScreen")
        assert str(dialog.data_select.value) == str(tmp_path / "data" / "pairs.bin")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "loss" in strip_text(monitor), "the loss")
        (job,) = jobs(tmp_path)
        assert job.result["sft"] is True
        assert strip_text(monitor).endswith(f"over {job.result['tokens']:,} answer tokens")
        from babyllama_tui.widgets.jobs_strip import JobsStrip

        strip = monitor.query_one(JobsStrip)
        assert len(strip_text(monitor)) <= strip.size.width, "one line at 80 columns"


async def test_a_gguf_export_asks_its_type_and_writes_the_file_and_its_modelfile(tmp_path, sp_tokenizer):
    import dataclasses

    import gguf

    cfg = dataclasses.replace(SMALL, vocab_size=sp_tokenizer.vocab_size)
    write_run_with_checkpoint(run_path(tmp_path), STEP, cfg, sp_tokenizer.describe())
    out = tmp_path / "out" / "exports" / f"{RUN}-{STEP}-q8_0.gguf"
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await on_monitor(pilot, tmp_path)
        dialog = await open_dialog(pilot, "x", "ExportScreen")
        assert not dialog.type_row.display, "the type is a GGUF's only"
        dialog.format_select.value = "gguf"
        await wait_until(pilot, lambda: dialog.out_input.value == f"out/exports/{RUN}-{STEP}-f16.gguf", "the output")
        assert dialog.type_row.display
        dialog.type_select.value = "q8_0"
        await wait_until(pilot, lambda: dialog.out_input.value == f"out/exports/{RUN}-{STEP}-q8_0.gguf", "the type")
        dialog.out_input.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: ": done," in strip_text(monitor), "the export to be done")
        assert strip_text(monitor).startswith(
            f"● export step {STEP} as gguf q8_0: done, out/exports/{RUN}-{STEP}-q8_0.gguf (")
    (job,) = jobs(tmp_path)
    assert job.status["command"][-4:-2] == ["--type", "q8_0"]
    assert (job.result["out"], job.result["type"]) == (str(out), "q8_0")
    assert gguf.GGUFReader(str(out)).fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert out.with_name(f"{RUN}-{STEP}-q8_0.Modelfile").read_text().startswith("# Ollama")


async def test_a_gguf_export_beside_a_modelfile_is_refused(project):
    exports = project / "out" / "exports"
    exports.mkdir(parents=True)
    (exports / f"{RUN}-{STEP}-f16.Modelfile").write_text("mine\n")
    app = BabyLlamaApp(root=project)
    async with app.run_test(size=(80, 24)) as pilot:
        await on_monitor(pilot, project)
        dialog = await open_dialog(pilot, "x", "ExportScreen")
        dialog.format_select.value = "gguf"
        await wait_until(pilot, lambda: dialog.out_input.value.endswith("-f16.gguf"), "the output to follow")
        dialog.out_input.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "Modelfile" in str(dialog.query_one("#job-error").render()), "the refusal")
        assert str(dialog.query_one("#job-error").render()) == (
            f"{exports / f'{RUN}-{STEP}-f16.Modelfile'} exists (the Ollama Modelfile beside the file); "
            "choose another output")
        await pilot.press("escape")
    assert jobs(project) == []
