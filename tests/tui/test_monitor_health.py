"""The Monitor answers "is my run healthy?" under Pilot, on real run directories holding the rows the
trainer writes for it: bits per byte, MFU, the baselines, benchmark scores, alerts and rollbacks,
and a run that stalls or slows."""

from __future__ import annotations

import math
import os
import re
import time

from rich.text import Text

from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.monitor import MonitorScreen
from babyllama_tui.screens.pick_run import PickRunsScreen, RunChoiceList

from pilot_wait import wait_until
from run_fixtures import UNIFORM_LOSS, UNIGRAM_LOSS, baselines_row, fill_run, loss_at, train_row


def alert_text(screen: MonitorScreen) -> str:
    return screen.alert_list.body.render().plain


def status_text(screen: MonitorScreen) -> str:
    return screen.status_bar.render().plain


def chart_text(screen: MonitorScreen) -> str:
    return screen.chart.render().plain


def y_tick_labels(screen: MonitorScreen) -> list[float]:
    """The numbers on the chart's y axis, as drawn."""
    return [float(m) for m in re.findall(r"^\s*([\d.]+)[┤├]", chart_text(screen), flags=re.M)]


def finished(root, name: str = "sanguo", steps: int = 300, **fill) -> RunDir:
    run = RunDir(root / "out" / "runs" / name)
    fill_run(run, steps=steps, max_steps=steps, started=time.time() - 7200, **fill)
    return run


async def follow(pilot, run: RunDir, rows: int | None = None) -> MonitorScreen:
    pilot.app.monitor_run(run.path)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen), "the monitor")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: screen.follower is not None and screen.follower.path == run.path
                     and len(screen.follower.history) == (rows if rows is not None else 30), "the run's rows")
    return screen


async def test_bits_per_byte_and_the_latest_benchmark_score_are_on_the_status_line(tmp_path):
    run = finished(tmp_path)
    now = time.time()
    run.append_metrics(train_row(310, loss=2.9, time=now, bpb=1.0213))
    run.append_metrics({"kind": "eval", "step": 310, "val_loss": 3.1, "val_bpb": 1.0918, "time": now})
    run.append_metrics({"kind": "bench", "step": 310, "task": "ceval", "shots": 5, "accuracy": 0.2712,
                        "questions": 260, "subjects": 52, "chance": 0.25, "time": now})
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run, 31)
        await wait_until(pilot, lambda: "bpb 1.021 val 1.092" in status_text(screen), "bits per byte")
        assert "C-Eval 5-shot 27.1% (chance 25%) @310" in status_text(screen)
        assert all(len(line) <= 78 for line in status_text(screen).splitlines()), "nothing cut at 80 columns"
        run.append_metrics({"kind": "bench", "step": 320, "task": "cmmlu", "shots": 0, "accuracy": 0.2504,
                            "questions": 300, "subjects": 67, "chance": 0.25, "time": now})
        await wait_until(pilot, lambda: "CMMLU 0-shot 25.0% (chance 25%) @320" in status_text(screen),
                         "the newer score")
        assert "C-Eval" not in status_text(screen)


async def test_the_benchmark_score_drops_its_shots_and_chance_where_that_saves_a_line(tmp_path):
    run = finished(tmp_path, name="sanguo-tiny-lr3e-4-batch16-long")
    now = time.time()
    run.append_metrics(train_row(310, loss=2.9, time=now, bpb=1.0213))
    run.append_metrics({"kind": "eval", "step": 310, "val_loss": 3.1, "val_bpb": 1.0918, "time": now})
    run.append_metrics({"kind": "bench", "step": 310, "task": "ceval", "shots": 5, "accuracy": 0.2712,
                        "questions": 260, "subjects": 52, "chance": 0.25, "time": now})
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run, 31)
        await wait_until(pilot, lambda: "C-Eval 27.1% @310" in status_text(screen), "the short score")
        assert len(status_text(screen).splitlines()) == 2
        await pilot.resize_terminal(200, 50)
        await wait_until(pilot, lambda: "C-Eval 5-shot 27.1% (chance 25%) @310" in status_text(screen),
                         "the whole score where there is room")


async def test_mfu_and_the_achieved_flops_are_with_the_throughput(tmp_path):
    run = finished(tmp_path)
    run.append_metrics(train_row(310, loss=2.9, time=time.time(), flops_per_s=4.1e10, mfu=0.205))
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run, 31)
        speed = screen.cards["speed"]
        await wait_until(pilot, lambda: speed.value.text.plain == "tok/s 4.00k MFU 20.5%", "MFU at 80 columns")
        await pilot.resize_terminal(200, 50)
        await wait_until(pilot, lambda: speed.value.text.plain == "tok/s 4.00k 41.0 GFLOP/s MFU 20.5%",
                         "both at 200 columns")
        await pilot.resize_terminal(80, 24)
        run.append_metrics(train_row(320, loss=2.9, time=time.time(), flops_per_s=4.1e10, mfu=None))
        await wait_until(pilot, lambda: speed.value.text.plain == "tok/s 4.00k 41.0 GFLOP/s",
                         "FLOP/s where the device's peak is unknown")


async def test_the_baselines_are_labelled_lines_and_never_crush_the_curve(tmp_path):
    run = finished(tmp_path, steps=600)
    run.append_metrics(baselines_row(time=time.time()))
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run, 60)
        # All steps: the curve starts above the uniform baseline (ln vocab) and falls through the unigram one.
        await wait_until(pilot, lambda: f"uniform {UNIFORM_LOSS:.3f}" in chart_text(screen), "the uniform line")
        assert f"unigram {UNIGRAM_LOSS:.3f}" in chart_text(screen)
        assert [name for name, _ in screen.chart.baselines_shown[0]] == ["uniform", "unigram"]
        # The last 100 steps: the loss is near 2.7; lines at 7 and 9 would squash it into a row or two.
        await pilot.press("w", "w", "w")
        await wait_until(pilot, lambda: "last 100 steps" in str(screen.chart.border_subtitle), "the window")
        await wait_until(pilot, lambda: f"↑ uniform {UNIFORM_LOSS:.3f} · unigram {UNIGRAM_LOSS:.3f}"
                         in chart_text(screen), "the baselines named above the plot")
        assert max(y_tick_labels(screen)) < 4, "the y axis spans the curve, not the baselines"
        assert "unigram 7.180┤" not in chart_text(screen)


async def test_alerts_are_marked_on_the_chart_and_listed_with_what_was_done(tmp_path):
    run = finished(tmp_path)
    # The trainer's messages begin with their step, for the log; the list shows the step once.
    run.append_alert(step=120, alert="spike", action="skipped",
                     message="step 120: the loss jumped to 11.2, above 4.9; the step was skipped")
    run.append_alert(step=250, alert="overfitting", action="none",
                     message="validation loss rose for 3 evaluations while the training loss fell (epoch 4.2)")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run)
        alerts = screen.alert_list
        await wait_until(pilot, lambda: alerts.count == 2 and alert_text(screen), "the list of alerts")
        assert str(alerts.border_title) == "alerts ▼ 2"
        lines = alert_text(screen).splitlines()
        assert lines[0].startswith("    250  overfitting, warning: validation loss rose for 3 evaluations")
        assert lines[1].startswith(" " * 9) and lines[1].endswith("the training loss fell (epoch 4.2)"), \
            "the message wraps under its text, the step standing out"
        assert lines[2].startswith("    120  spike, step skipped: the loss jumped to 11.2, above 4.9")
        assert all(len(line) <= alerts.scrollable_content_region.width for line in lines), "wrapped, not cut"
        assert chart_text(screen).count("▼") == 2
        frame = next(line for line in chart_text(screen).splitlines() if "┌" in line)
        left, width = frame.index("┌"), frame.index("┐") - frame.index("┌")
        top_row = next(line for line in chart_text(screen).splitlines() if "▼" in line)
        # 120 and 250 of 10..300: the markers sit in proportion along the step axis.
        first, second = ((m.start() - left) / width for m in re.finditer("▼", top_row))
        assert abs(first - 110 / 290) < 0.06 and abs(second - 240 / 290) < 0.06
        run.append_alert(step=300, alert="memory", action="stopped", message="out of memory: 21.9 GiB of 23.5")
        await wait_until(pilot, lambda: alert_text(screen).startswith("    300  memory, run stopped: out of memory"),
                         "a new alert, first")


async def test_a_run_without_alerts_shows_no_list(tmp_path):
    run = finished(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run)
        await pilot.pause(0.3)
        assert not screen.alert_list.display and "▼" not in chart_text(screen)


async def test_a_rollback_is_an_alert_and_the_chart_shows_the_steps_redone_not_the_ones_undone(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "bumpy")
    fill_run(run, steps=200, max_steps=400, started=time.time() - 7200)
    start = time.time() - 3000
    # The first attempt from step 200 on: its loss blows up, two steps are skipped, then it rolls back.
    for step in range(210, 260, 10):
        run.append_metrics(train_row(step, loss=3.0 + (step - 200) / 5, time=start + step))
    run.append_alert(step=252, alert="spike", action="skipped", message="loss 14.2 at step 252; skipped")
    run.append_alert(step=255, alert="nonfinite", action="skipped", message="the loss became nan at step 255; skipped")
    run.append_alert(step=256, alert="rollback", action="rolled_back",
                     message="3 bad steps in 20: rolled back to step 200, skipping batches 250-256")
    run.append_metrics({"kind": "resume", "step": 200, "checkpoint": "step_0000200", "time": start + 260})
    redone = {step: loss_at(step) for step in range(210, 310, 10)}
    for step, loss in redone.items():
        run.append_metrics(train_row(step, loss=loss, time=start + 300 + step))
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run)
        history = screen.follower.history
        assert history.steps.values.tolist() == list(range(10, 310, 10)), "each step once, in order"
        drawn = dict(zip(history.steps.values.tolist()[-10:], history.series["loss"].values.tolist()[-10:]))
        assert all(math.isclose(drawn[step], loss, rel_tol=1e-6) for step, loss in redone.items()), \
            "the losses are the redone ones, not the undone attempt's"
        await wait_until(pilot, lambda: alert_text(screen).startswith(
            "    256  rollback, rolled back: 3 bad steps in 20: rolled back to step 200"), "the alerts")
        assert screen.alert_list.count == 3
        await wait_until(pilot, lambda: "▼" in chart_text(screen), "the markers")
        assert max(y_tick_labels(screen)) < 10, "the undone attempt's climb to 13 is not drawn"


async def test_a_skipped_spike_is_marked_but_kept_out_of_the_loss_its_smoothing_and_bits_per_byte(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "spiky")
    run.create({"model": {"dim": 256}, "train": {"max_steps": 500}})
    start = time.time() - 3000
    for step in range(10, 410, 10):
        run.append_metrics(train_row(step, loss=3.0, time=start + step, bpb=1.0))
    # As the trainer writes a step it did not apply: its row, marked, and its alert.
    run.append_metrics(train_row(410, loss=9.5, time=start + 410, bpb=3.2, skipped=True))
    run.append_alert(step=410, alert="spike", action="skipped", message="loss 9.5 at step 410, far above its recent 3.0")
    run.write_status(state="finished", step=410, max_steps=500, started=start, host="trainer-01", pid=4242)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run, 41)
        await wait_until(pilot, lambda: "▼" in chart_text(screen) and "bpb 1.000" in status_text(screen),
                         "the alert's marker and the bits per byte")
        legend = Text.from_markup(screen.chart.border_title).plain
        assert "loss 3.000" in legend and "ema 3.000" in legend, \
            "the last loss and its smoothing are those of the last step applied, not " + legend
        assert chart_text(screen).count("▼") == 1
        assert max(y_tick_labels(screen)) < 5, "the skipped 9.5 is not drawn"
        run.append_metrics(train_row(420, loss=3.0, time=start + 420, bpb=1.0))
        await wait_until(pilot, lambda: len(screen.follower.history) == 42, "the next step")
        assert screen.follower.history.series["ema"].last() == 3.0
        assert "▼" in chart_text(screen) and "ema 3.000" in Text.from_markup(screen.chart.border_title).plain


async def test_a_stalled_run_is_marked_on_the_monitor_with_why_until_a_row_comes(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "stuck")
    fill_run(run, steps=100, max_steps=1000, started=time.time() - 3600, state="running")
    os.utime(run.metrics_path, (time.time() - 900, time.time() - 900))
    app = BabyLlamaApp(root=tmp_path, stall_after_s=600)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run, 10)
        await wait_until(pilot, lambda: "stalled: no new metrics row for 15m" in status_text(screen), "the stall")
        assert all(len(line) <= 78 for line in status_text(screen).splitlines())
        assert "ETA" not in status_text(screen), "a run that does not move has no time to finish"
        run.append_metrics(train_row(110, loss=3.0, time=time.time()))
        run.write_status(step=110)
        await wait_until(pilot, lambda: "stalled" not in status_text(screen), "the mark to go with the new row")


async def test_a_run_that_slows_sharply_is_marked_with_its_speeds(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "slowing")
    started = time.time() - 600
    fill_run(run, steps=100, max_steps=1000, started=started, state="running")
    run.append_metrics(train_row(110, loss=3.0, time=time.time(), speed=1500.0))
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, run, 11)
        await wait_until(pilot, lambda: "slow: 1,500 tokens/s, 38% of its recent median 4,000"
                         in status_text(screen), "the slowdown")


def same_data(run: RunDir, data: str = "/data/sanguo.bin", tokenizer: str = "sha256:5a") -> None:
    config = {"model": {"dim": 256}, "train": {}, "data": {"files": [{"path": data, "tokens": 436540}]},
              "tokenizer": {"name": "sanguo", "vocab_size": 8000, "sha256": tokenizer}}
    run.config_path.write_text(__import__("json").dumps(config))


async def test_p_draws_the_previous_run_of_the_same_data_and_compare_lists_such_runs_first(tmp_path):
    runs = {}
    for name, ago, data in (("other-data", 9000, "/data/wiki.bin"), ("earlier", 8000, "/data/sanguo.bin"),
                            ("newest", 7000, "/data/sanguo.bin"), ("unrelated", 6000, "/data/c4.bin")):
        runs[name] = RunDir(tmp_path / "out" / "runs" / name)
        fill_run(runs[name], steps=100, max_steps=100, started=time.time() - ago)
        same_data(runs[name], data)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, runs["newest"], 10)
        await pilot.press("p")
        await wait_until(pilot, lambda: screen.compared.paths == [runs["earlier"].path], "the previous run drawn")
        await pilot.press("p")
        await wait_until(pilot, lambda: screen.compared.paths == [], "taken away again")
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, PickRunsScreen), "the compare dialog")
        choices = app.screen.query_one(RunChoiceList)
        prompts = [choices.get_option_at_index(i).prompt.plain for i in range(choices.option_count)]
        assert prompts[0].startswith("earlier") and prompts[0].endswith("same data")
        assert [p.split()[0] for p in prompts[1:]] == ["unrelated", "other-data"]
        assert not any(p.endswith("same data") for p in prompts[1:])
        await pilot.press("escape")
        await follow(pilot, runs["unrelated"], 10)
        await pilot.press("p")
        await wait_until(pilot, lambda: any("No other run of the same data" in n.message for n in app._notifications),
                         "the note that there is none")
        assert screen.compared.paths == []



async def test_p_takes_the_run_created_last_before_the_followed_one_however_later_it_was_resumed(tmp_path):
    runs = {}
    for name, ago in (("first", 9000), ("resumed", 8000), ("followed", 6000)):
        runs[name] = RunDir(tmp_path / "out" / "runs" / name)
        fill_run(runs[name], steps=100, max_steps=100, started=time.time() - ago)
        same_data(runs[name])
    # Resumed after the followed run began: its status's `started` is now the newest of the three.
    runs["resumed"].write_status(started=time.time() - 1000)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await follow(pilot, runs["followed"], 10)
        await pilot.press("p")
        await wait_until(pilot, lambda: screen.compared.paths != [], "a previous run drawn")
        assert screen.compared.paths == [runs["resumed"].path], "the previous run by creation, not by the last start"
