"""The runs compared on the Monitor's chart, without a terminal: each run's last loss, the step
axis over all of them, slots that stay with a run, and an ended run read once; and the legend's
layout."""

from __future__ import annotations

import time

from rich.text import Text

from babyllama.runs import RunDir
from babyllama_tui.training.compare import ComparedRun, CompareSet, LastLoss, last_loss, run_span, step_axis
from babyllama_tui.training.history import MetricsHistory
from babyllama_tui.widgets.loss_chart import legend_entries, legend_lines

from run_fixtures import fill_run, loss_at, train_row


def history_of(steps: int, every: int = 10, evals: bool = True) -> MetricsHistory:
    history = MetricsHistory()
    rows = [train_row(step, loss=loss_at(step), time=float(step)) for step in range(every, steps + 1, every)]
    if evals:
        rows.insert(0, {"kind": "eval", "step": 0, "val_loss": 9.5})
        rows.append({"kind": "eval", "step": steps, "val_loss": loss_at(steps) + 0.2})
    history.add(rows)
    return history


def test_last_loss_is_the_newest_train_row_and_validation():
    assert last_loss(MetricsHistory()) is None
    assert last_loss(history_of(300)) == LastLoss(step=300, loss=loss_at(300), val_loss=loss_at(300) + 0.2)
    assert last_loss(history_of(50, evals=False)) == LastLoss(step=50, loss=loss_at(50), val_loss=None)


def test_the_step_axis_covers_the_longest_run():
    short, long = run_span(history_of(300)), run_span(history_of(700))
    assert short == (0.0, 300.0), "the evaluation before the first step is on the axis"
    assert run_span(history_of(300, evals=False)) == (10.0, 300.0)
    assert run_span(MetricsHistory()) is None
    assert step_axis(short, [long, None], None) == (0.0, 700.0)
    assert step_axis(long, [short], None) == (0.0, 700.0)
    # A window is the followed run's last steps, the others drawn within them.
    assert step_axis(short, [long], 100) == (200.0, 300.0)
    assert step_axis(short, [long], 1000) == (0.0, 300.0)
    # A run of one row still gets an axis one step wide.
    assert step_axis((10.0, 10.0), [], None) == (10.0, 11.0)


def make_runs(root, *names_and_steps: tuple[str, int], state: str = "finished") -> list[RunDir]:
    runs = []
    for name, steps in names_and_steps:
        run = RunDir(root / "out" / "runs" / name)
        fill_run(run, steps=steps, max_steps=1000, started=time.time() - 3600, state=state)
        runs.append(run)
    return runs


def test_a_run_keeps_its_slot_and_what_was_read_while_it_stays_chosen(tmp_path):
    a, b, c = (run.path for run in make_runs(tmp_path, ("a", 100), ("b", 200), ("c", 300)))
    compared = CompareSet()
    compared.choose([a, b])
    assert [(run.path, run.slot) for run in compared.runs] == [(a, 0), (b, 1)]
    kept = compared.runs[1]
    compared.choose([b, c])
    assert compared.runs[0] is kept, "b is not read again"
    assert [(run.path, run.slot) for run in compared.runs] == [(b, 1), (c, 0)], "c takes the free slot"
    compared.drop(b)
    assert compared.paths == [c]
    compared.choose([])
    assert len(compared) == 0


def test_an_ended_run_is_read_once_and_again_when_resumed(tmp_path):
    (run,) = make_runs(tmp_path, ("ended", 300))
    compared = ComparedRun(run.path, 0)
    assert compared.poll()
    assert last_loss(compared.follower.history).step == 300
    read = compared.follower.metrics_offset
    # Rows that come after the end (a resume writing them before its status) are not looked for...
    run.append_metrics(train_row(310, loss=1.0, time=time.time()))
    assert not compared.poll()
    assert compared.follower.metrics_offset == read
    # ... until the status changes.
    run.write_status(state="running", step=310, pid=4242)
    compared.poll()
    assert last_loss(compared.follower.history).step == 310


def test_a_running_run_is_followed(tmp_path):
    (run,) = make_runs(tmp_path, ("live", 100), state="running")
    compared = ComparedRun(run.path, 0)
    compared.poll()
    run.append_metrics(train_row(110, loss=1.0, time=time.time()))
    assert compared.poll()
    assert last_loss(compared.follower.history).step == 110


def test_legend_entries_align_and_drop_the_validation_loss_before_a_name(tmp_path):
    short, long = (ComparedRun(run.path, 0) for run in make_runs(tmp_path, ("tiny-20250301-1100", 300),
                                                                    ("small-20250228-0900", 700)))
    for run in (short, long):
        run.poll()
    runs = [(run.path.name, (80, 170, 255), "●", run.follower) for run in (short, long)]
    wide = [entry.plain for entry in legend_entries(runs, 80)]
    assert wide == [
        f"━● tiny-20250301-1100   {loss_at(300):.3f} @300  val {loss_at(300) + 0.2:.3f}",
        f"━● small-20250228-0900  {loss_at(700):.3f} @700  val {loss_at(700) + 0.2:.3f}",
    ]
    narrow = [entry.plain for entry in legend_entries(runs, 36)]
    assert narrow == [f"━● tiny-20250301-1100   {loss_at(300):.3f} @300",
                      f"━● small-20250228-0900  {loss_at(700):.3f} @700"]
    tight = legend_entries(runs, 20)
    assert all(entry.cell_len <= 20 and entry.plain.endswith("…") for entry in tight)


def test_legend_lines_one_entry_a_line_then_columns_then_a_count():
    entries = [Text(f"run-{i}") for i in range(5)]
    assert [line.plain for line in legend_lines(entries, 30, 5)] == [f"run-{i}" for i in range(5)]
    # Three lines, and room for two columns: down the first column, then the second.
    assert [line.plain for line in legend_lines(entries, 30, 3)] == ["run-0   run-3", "run-1   run-4", "run-2"]
    # One column only: the last place says how many more there are.
    assert [line.plain for line in legend_lines(entries, 8, 3)] == ["run-0", "run-1", "+3 more"]
    assert legend_lines([], 30, 3) == []

