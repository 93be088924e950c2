"""When a running run is called stalled or slow, and what is said of it (training/run_health.py)."""

from __future__ import annotations

from babyllama.runs import RunDir
from babyllama_tui.training.run_health import check_health

NOW = 1_800_000_000.0


def health(**given):
    facts = dict(state="running", now=NOW, started=NOW - 3600, last_row_at=NOW - 5, heartbeat_at=NOW - 10,
                 train_times=[NOW - 3000 + 10 * i for i in range(20)], speeds=[1000.0] * 20, stall_after_s=600.0)
    facts.update(given)
    return check_health(**facts)


def test_a_run_logging_as_usual_is_well():
    assert health() is None


def test_no_row_for_the_set_time_is_a_stall_said_in_words():
    stalled = health(last_row_at=NOW - 720)
    assert stalled.mark == "stalled"
    assert stalled.reason == "no new metrics row for 12m00s; rows came every 10s"
    assert health(last_row_at=NOW - 500) is None
    assert health(last_row_at=NOW - 500, stall_after_s=300.0).mark == "stalled"


def test_only_a_running_run_can_stall():
    for state in ("starting", "stopping", "finished", "failed", "stopped"):
        assert health(state=state, last_row_at=NOW - 7200) is None


def test_the_first_steps_compile_is_given_longer():
    compiling = dict(started=NOW - 1200, last_row_at=NOW - 1300, train_times=[NOW - 1400])
    assert health(**compiling) is None, "20 minutes without a first step: still compiling"
    stalled = health(started=NOW - 2000, last_row_at=NOW - 2100, train_times=[NOW - 2400])
    assert stalled.mark == "stalled"
    assert stalled.reason == "no first step after 33m20s (compiling takes minutes; more than 30m00s is a stall)"


def test_a_run_that_logs_rarely_is_judged_by_its_own_gaps():
    every_400_s = dict(started=NOW - 10000, train_times=[NOW - 9000 + 400 * i for i in range(20)])
    assert health(**every_400_s, last_row_at=NOW - 1000) is None
    assert health(**every_400_s, last_row_at=NOW - 1300).mark == "stalled"


def test_a_checkpoint_being_written_is_no_stall(tmp_path):
    run = RunDir(tmp_path / "run")
    run.checkpoints_dir.mkdir(parents=True)
    assert health(last_row_at=NOW - 900, checkpoints_dir=run.checkpoints_dir).mark == "stalled"
    run.checkpoint_temp_path(400).mkdir()
    assert health(last_row_at=NOW - 900, checkpoints_dir=run.checkpoints_dir) is None


def test_a_missing_heartbeat_is_a_stall_even_while_compiling():
    stalled = health(heartbeat_at=NOW - 700, train_times=[])
    assert stalled.mark == "stalled" and stalled.reason.startswith("no heartbeat for 11m40s")


def test_a_sharp_slowdown_against_the_processs_own_median():
    slow = health(speeds=[1000.0] * 19 + [400.0])
    assert slow.mark == "slow"
    assert slow.reason == "400 tokens/s, 40% of its recent median 1,000"
    assert health(speeds=[1000.0] * 19 + [600.0]) is None, "a dip to 60% is noise"
    assert health(speeds=[1000.0, 1000.0, 300.0]) is None, "too few rows to know the usual speed"
