"""The monitor's in-memory metrics: resumed runs, smoothing, reduction for drawing, ETAs; and the
incremental readers behind the runs table and the monitor, on real run directories."""

from __future__ import annotations

import math

import numpy as np

from babyllama.runs import RunDir
from babyllama_tui.training.eta import eta_seconds
from babyllama_tui.training.history import MetricsHistory, bucket_means, envelope
from babyllama_tui.training.run_follower import RunFollower
from babyllama_tui.training.runs_watcher import RunsWatcher


def train_row(step: int, loss: float, time: float | None = None, speed: float = 1000.0, **extra) -> dict:
    row = {"kind": "train", "step": step, "loss": loss, "lr": 1e-3, "tokens_per_s": speed,
           "mem": {"rss_mb": 500.0, "device": "cpu"}, **extra}
    if time is not None:
        row["time"] = time
    return row


def test_rows_logged_again_after_a_resume_replace_the_old_ones():
    history = MetricsHistory()
    history.add([train_row(s, 10.0 - s / 100) for s in range(10, 110, 10)])
    history.add([{"kind": "eval", "step": 50, "val_loss": 9.0}, {"kind": "eval", "step": 100, "val_loss": 8.0}])
    # Killed after step 100, resumed from the checkpoint at step 60: steps 70.. are logged again.
    history.add([train_row(70, 1.0), train_row(80, 0.9), {"kind": "eval", "step": 80, "val_loss": 0.5}])
    assert history.steps.values.tolist() == [10, 20, 30, 40, 50, 60, 70, 80]
    assert history.series["loss"].values[-2:].tolist() == np.float32([1.0, 0.9]).tolist()
    assert history.val_steps.values.tolist() == [50, 80]
    assert history.last_train["step"] == 80


def test_the_trainers_resume_row_drops_what_came_after_its_checkpoint_at_once():
    history = MetricsHistory()
    history.add([train_row(s, 5.0) for s in range(10, 110, 10)])
    history.add([{"kind": "eval", "step": 50, "val_loss": 4.0}, {"kind": "eval", "step": 100, "val_loss": 3.0},
                 {"kind": "sample", "step": 100, "text": "lost"}])
    history.add([{"kind": "resume", "step": 60, "checkpoint": "step_0000060"}, train_row(70, 1.0)])
    assert history.steps.values.tolist() == [10, 20, 30, 40, 50, 60, 70]
    assert history.val_steps.values.tolist() == [50]
    assert list(history.samples) == []
    assert history.last_train["step"] == 70


def test_alerts_outlive_a_resume_but_scores_of_undone_steps_do_not():
    history = MetricsHistory()
    history.add([{"kind": "baselines", "step": 0, "uniform_loss": 8.99, "unigram_loss": 7.18}])
    history.add([train_row(s, 5.0, speed=s) for s in range(10, 110, 10)])
    history.add([{"kind": "bench", "step": 50, "task": "ceval", "shots": 0, "accuracy": 0.26},
                 {"kind": "bench", "step": 100, "task": "ceval", "shots": 0, "accuracy": 0.27},
                 {"kind": "alert", "step": 95, "alert": "spike", "action": "skipped", "message": "m"},
                 {"kind": "alert", "step": 100, "alert": "rollback", "action": "rolled_back", "message": "m"},
                 {"kind": "resume", "step": 60, "checkpoint": "step_0000060"}, train_row(70, 1.0, speed=2.0)])
    assert [row["step"] for row in history.alerts] == [95, 100] and history.alert_count == 2
    assert history.last_bench["step"] == 50, "the score of step 100 was of work undone"
    assert history.baselines["unigram_loss"] == 7.18
    assert history.process_speeds().tolist() == [2.0], "the resumed process is judged by its own speed"
    history.add([{"kind": "bench", "step": 50, "task": "ceval", "shots": 0, "accuracy": 0.3}])
    assert [row["accuracy"] for row in history.benches] == [0.3], "a score logged again replaces the old one"
def test_a_rollback_draws_only_the_curve_the_run_went_on_from():
    # As babyllama.train writes a rollback: the bad steps' rows (a non-finite loss as null), their
    # alerts, then a resume row at the checkpoint gone back to; null when it was the run's start.
    history = MetricsHistory()
    history.add([train_row(1, 5.0), train_row(2, 4.0), train_row(3, None, skipped=True),
                 {"kind": "alert", "step": 3, "alert": "nonfinite", "action": "skipped", "message": "m"},
                 train_row(4, 90.0, skipped=True),
                 {"kind": "alert", "step": 4, "alert": "rollback", "action": "rolled_back", "message": "m"},
                 {"kind": "resume", "step": 0, "checkpoint": None}, train_row(1, 5.0), train_row(2, 3.5)])
    assert history.steps.values.tolist() == [1, 2]
    assert history.series["loss"].values.tolist() == [5.0, 3.5]
    assert history.series["ema"].values[-1] < 5.0 and history.last_train["step"] == 2


def test_a_skipped_step_is_out_of_the_loss_and_its_smoothing_but_keeps_its_speed():
    """A step the trainer did not apply: the smoothed loss goes on as if its row had not been logged."""
    skipping, without = MetricsHistory(), MetricsHistory()
    rows = [train_row(s, 4.0 - s / 100, bpb=1.0) for s in range(10, 410, 10)]
    spike = train_row(405, 9.5, speed=7.0, bpb=3.2, skipped=True)
    after = [train_row(s, 3.0) for s in (410, 420)]
    skipping.add(rows + [spike])
    assert skipping.series["ema"].values[-1] == skipping.series["ema"].values[-2]
    assert math.isnan(skipping.series["loss"].values[-1]) and skipping.series["tokens_per_s"].last() == 7.0
    assert skipping.last_train["step"] == 405 and skipping.last_counted["bpb"] == 1.0
    skipping.add(after)
    without.add(rows + after)
    np.testing.assert_allclose(skipping.series["ema"].values[-2:], without.series["ema"].values[-2:], rtol=1e-6)
    skipping.add([{"kind": "resume", "step": 400, "checkpoint": "step_0000400"}, spike])
    assert skipping.last_counted is None, "the losses after step 400 were undone, and a skipped one is no loss"
    skipping.add([train_row(410, 2.5)])
    assert skipping.last_counted["loss"] == 2.5


def test_a_repeat_inside_one_batch_is_handled_like_one_across_polls():
    history = MetricsHistory()
    history.add([train_row(10, 5.0), train_row(20, 4.0), train_row(30, 3.0), train_row(20, 2.0), train_row(30, 1.0)])
    assert history.steps.values.tolist() == [10, 20, 30]
    assert history.series["loss"].values.tolist() == [5.0, 2.0, 1.0]


def test_the_smoothed_loss_continues_from_the_row_before_a_resume():
    resumed = MetricsHistory()
    resumed.add([train_row(10, 4.0), train_row(20, 2.0), train_row(30, 100.0)])
    resumed.add([train_row(30, 2.0)])
    straight = MetricsHistory()
    straight.add([train_row(10, 4.0), train_row(20, 2.0), train_row(30, 2.0)])
    np.testing.assert_allclose(resumed.series["ema"].values, straight.series["ema"].values, rtol=1e-6)


def test_the_smoothed_loss_is_the_same_whatever_the_log_interval():
    """Smoothing is by steps: a run logged every 2 steps and one logged every 10 draw one curve."""
    def loss(step: int) -> float:
        return 2.0 + 8.0 * math.exp(-step / 60.0)

    often, seldom = MetricsHistory(), MetricsHistory()
    often.add([train_row(step, loss(step)) for step in range(2, 401, 2)])
    seldom.add([train_row(step, loss(step)) for step in range(10, 401, 10)])
    at_seldom_steps = often.series["ema"].values[4::5]
    assert np.max(np.abs(at_seldom_steps[8:] - seldom.series["ema"].values[8:])) < 0.03


def test_samples_logged_again_after_a_resume_replace_the_old_ones():
    history = MetricsHistory()
    history.add([{"kind": "sample", "step": s, "text": f"old {s}"} for s in (100, 200, 300)])
    history.add([{"kind": "sample", "step": 200, "text": "new 200"}])
    assert [(s["step"], s["text"]) for s in history.samples] == [(100, "old 100"), (200, "new 200")]


def test_rows_without_a_number_are_kept_as_gaps_not_crashes():
    history = MetricsHistory()
    changed = history.add([train_row(10, None), {"kind": "train", "step": "x"}, {"kind": "sample", "step": 10, "text": "话"}])
    assert changed
    assert len(history) == 1 and np.isnan(history.series["loss"].values[0])
    assert history.samples[-1]["text"] == "话"


def test_a_million_points_reduce_to_a_few_per_cell_keeping_the_extremes():
    x = np.arange(1_000_000, dtype=np.int64)
    y = np.sin(x / 5000.0).astype(np.float32)
    y[123_456] = 7.0
    xs, ys = envelope(x, y, 100)
    assert len(xs) <= 200
    assert ys.max() == 7.0 and xs[ys.argmax()] == 123_456
    assert np.all(np.diff(xs) >= 0)
    mx, my = bucket_means(x, y, 100)
    assert len(mx) == 100 and abs(my.mean() - y.astype(np.float64).mean()) < 1e-3


def test_eta_counts_the_current_attempt_only():
    points = [(100, 1000.0), (200, 1100.0), (210, 5000.0), (310, 5100.0)]
    assert eta_seconds(points, 1310, now=5100.0, since=4990.0) == 1000.0
    # Seen 50 s after the last row, the same speed leaves 50 s less.
    assert eta_seconds(points, 1310, now=5150.0, since=4990.0) == 950.0
    assert eta_seconds(points[:1], 1310, now=5100.0) is None


def test_the_runs_watcher_reads_a_run_again_only_when_its_files_change(tmp_path):
    runs = tmp_path / "runs"
    run = RunDir(runs / "a")
    run.create({"model": {}, "train": {}})
    run.write_status(state="finished", step=20, max_steps=20, started=1000.0, host="elsewhere")
    run.append_metrics(train_row(10, 3.0, time=1010.0))
    run.append_metrics(train_row(20, 2.5, time=1020.0))
    watcher = RunsWatcher(runs)
    [row] = watcher.poll(now=2000.0)
    assert (row.name, row.state, row.step, row.loss, row.age_s(2000.0)) == ("a", "finished", 20, 2.5, 1000.0)
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"kind": "train", "step": 30, "loss": 2.0}\n')
    [row] = watcher.poll(now=2000.0)
    assert row.loss == 2.0
    RunDir(runs / "b").create({"model": {}, "train": {}})
    # Never launched, b is placed by its config's time: newer than a's start.
    assert [(r.name, r.state) for r in watcher.poll(now=2000.0)] == [("b", "created"), ("a", "finished")]


def test_the_follower_takes_only_complete_lines_and_notices_a_rewritten_file(tmp_path):
    run = RunDir(tmp_path / "r")
    run.create({"model": {}, "train": {"max_steps": 50}})
    run.append_metrics(train_row(10, 3.0))
    follower = RunFollower(run.path)
    assert follower.poll_metrics() is True
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"kind": "train", "step": 20, "lo')
    assert follower.poll_metrics() is False
    assert follower.history.steps.values.tolist() == [10]
    with open(run.metrics_path, "ab") as f:
        f.write(b'ss": 2.0}\n')
    assert follower.poll_metrics() is True
    assert follower.history.steps.values.tolist() == [10, 20]
    run.metrics_path.write_text('{"kind": "train", "step": 5, "loss": 9.0}\n')
    follower.poll_metrics()
    assert follower.history.steps.values.tolist() == [5]
    assert follower.max_steps is None
    follower.poll_status()
    assert follower.max_steps == 50
