"""The overfitting alert (babyllama.overfitting): the rule on numbers, then a real trainer on token
files built to overfit at once (the validation windows run the training windows' sequence
backwards), straight through and resumed from a checkpoint between two evaluations.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_train import SMALL_MODEL, babyllama_train, rows_of

from babyllama.overfitting import OverfittingWatch
from babyllama.runs import RunDir


def feed(watch: OverfittingWatch, evaluations: list[tuple[float, float]], every: int = 10) -> list[int]:
    """(training loss of the steps before, validation loss) per evaluation; the steps that alerted."""
    alerted = []
    for i, (train_loss, val_loss) in enumerate(evaluations, start=1):
        for _ in range(every):
            watch.add_train(train_loss)
        if watch.add_eval(i * every, val_loss, epochs=i / 4) is not None:
            alerted.append(i * every)
    return alerted


def test_rising_validation_loss_while_training_loss_falls_alerts_once_per_streak():
    watch = OverfittingWatch(3)
    assert watch.add_eval(0, 9.0, 0.0) is None  # step 0: no training loss yet
    losses = [(5.0, 4.0), (4.0, 3.0), (3.5, 3.1), (3.0, 3.2), (2.5, 3.3),  # three rises: alert at step 50
              (2.0, 3.4), (1.5, 3.5),  # the same streak: no second alert
              (1.4, 3.4), (1.3, 3.5), (1.2, 3.6), (1.1, 3.7)]  # a fall ends it; three rises again: step 110
    assert feed(watch, losses) == [50, 110]
    alert = OverfittingWatch(2)
    feed(alert, [(3.0, 3.0), (2.0, 3.1), (1.0, 3.2)])
    assert alert.best_step == 10 and alert.best_val_loss == 3.0


def test_no_alert_when_the_training_loss_rises_too_or_rises_are_not_in_a_row_or_it_is_off():
    assert feed(OverfittingWatch(3), [(3.0, 3.0), (3.1, 3.1), (3.2, 3.2), (3.3, 3.3)]) == []  # both rise: diverging
    assert feed(OverfittingWatch(3), [(3.0, 3.0), (2.9, 3.1), (2.8, 3.2), (2.7, 3.15), (2.6, 3.3)]) == []
    assert feed(OverfittingWatch(0), [(3.0, 3.0), (2.0, 3.1), (1.0, 3.2), (0.5, 3.3)]) == []
    assert feed(OverfittingWatch(3), [(2.0, 3.0), (1.0, float("nan")), (float("nan"), 3.2)]) == []


def test_the_message_names_the_epochs_and_what_to_do():
    watch = OverfittingWatch(2)
    watch.add_train(2.5)
    watch.add_eval(100, 3.0, 1.0)
    watch.add_train(2.0)
    watch.add_eval(200, 3.1, 2.0)
    watch.add_train(1.5)
    alert = watch.add_eval(300, 3.25, 12.34)
    assert alert["message"] == (
        "overfitting: the validation loss rose 2 evaluations in a row (3.0000 at step 100 to 3.2500 at step 300) "
        "while the training loss fell (2.5000 to 1.5000), after 12.3 epochs (the model has seen the training "
        "tokens 12.3 times): it is memorising them. More data, a smaller model or dropout (resume with --dropout "
        "0.1) helps; the best model so far is from step 100 (validation loss 3.0000): stop there, at the "
        "checkpoint nearest it")
    assert (alert["epochs"], alert["val_loss"], alert["best_step"], alert["best_val_loss"]) == (12.34, 3.25, 100, 3.0)


def test_what_the_watch_remembers_survives_its_state():
    watch, twin = OverfittingWatch(3), OverfittingWatch(3)
    losses = [(5.0, 4.0), (4.0, 3.0), (3.5, 3.1), (3.0, 3.2), (2.5, 3.3), (2.0, 3.4)]
    feed(watch, losses[:4])
    watch.add_train(2.75)  # a checkpoint between two evaluations
    restored = OverfittingWatch.from_state(3, json.loads(json.dumps(watch.state())))
    feed(twin, losses[:4])
    twin.add_train(2.75)
    assert restored == twin
    assert OverfittingWatch.from_state(3, None) == OverfittingWatch(3)


# ---------------------------------------------------------------------------------------
# A real run


IDS = 16  # ids 100..115 over and over: the training windows count up, the validation windows count down


@pytest.fixture(scope="module")
def backwards_tokens(tmp_path_factory, sample_jsonl, sp_tokenizer_dir) -> Path:
    """Token files whose validation windows (the last 1/11 of the file) run the training windows'
    sequence backwards: each step that teaches "next = this + 1" makes the validation loss worse,
    once the model has learnt which 16 ids occur (its first steps)."""
    from babyllama.prepare import prepare

    folder = tmp_path_factory.mktemp("backwards")
    real = folder / "real.bin"
    prepare([sample_jsonl], "c4", sp_tokenizer_dir, real, workers=1)
    ids = np.arange(100, 100 + IDS, dtype=np.uint16)
    tokens = np.concatenate([np.tile(ids, 1000), np.tile(ids[::-1], 100)])
    out = folder / "backwards.bin"
    tokens.tofile(out)
    manifest = json.loads(real.with_name("real.bin.json").read_text())
    (folder / "backwards.bin.json").write_text(json.dumps({**manifest, "tokens": int(tokens.size)}))
    return out


FLAGS = [*SMALL_MODEL, "--learning_rate", "1e-2", "--max_steps", "40", "--lr_decay_iters", "40", "--eval_interval", "4",
         "--eval_iters", "2", "--val_fraction", "0.0909", "--sample_tokens", "0", "--save_interval", "6",
         "--keep_checkpoints", "10"]


@pytest.mark.slow
def test_a_run_that_overfits_alerts_once_naming_the_epochs_and_a_resumed_run_alerts_the_same(tmp_path,
                                                                                              backwards_tokens):
    run = tmp_path / "runs" / "overfit"
    done = babyllama_train(run, "--data", str(backwards_tokens), *FLAGS, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = rows_of(run)
    evals = [row for row in rows if row["kind"] == "eval"]
    [alert] = [row for row in rows if row["kind"] == "alert"]
    assert (alert["alert"], alert["action"]) == ("overfitting", "none")
    # Raised by the third rise in a row, once, though the validation loss rose on after it.
    val = {row["step"]: row["val_loss"] for row in evals}
    steps = sorted(val)
    at = steps.index(alert["step"])
    assert all(val[a] < val[b] for a, b in zip(steps[at - 3:], steps[at - 2:at + 1]))
    assert val[steps[at - 3]] <= val[steps[at - 4]] and val[steps[-1]] > val[alert["step"]]
    tokens = next(row["tokens"] for row in rows if row["kind"] == "train" and row["step"] == alert["step"])
    train_windows = json.loads((run / "config.json").read_text())["data"]["train_windows"]
    assert alert["epochs"] == round(tokens / (train_windows * 64), 3)
    assert f"after {alert['epochs']:.1f} epochs (the model has seen the training tokens" in alert["message"]
    assert f"alert: {alert['message']}" in done.stdout
    status = RunDir(run).read_status()
    assert status["state"] == "finished" and status["alerts"] == 1 and status["last_alert"]["alert"] == "overfitting"

    # Resumed from the last checkpoint before the alert, between two evaluations: the same alert.
    checkpoint = max(s for s in range(6, alert["step"], 6) if s % 4)
    copy = tmp_path / "runs" / "resumed"
    shutil.copytree(run, copy)
    for folder in (copy / "checkpoints").glob("step_*"):
        if int(folder.name.removeprefix("step_")) > checkpoint:
            shutil.rmtree(folder)
    (copy / "checkpoints" / "latest").write_text(f"step_{checkpoint:07d}\n")
    resumed = babyllama_train(copy, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = rows_of(copy)
    after = rows[max(i for i, row in enumerate(rows) if row["kind"] == "resume") + 1:]
    assert [{k: v for k, v in row.items() if k != "time"} for row in after if row["kind"] == "alert"] == \
        [{k: v for k, v in alert.items() if k != "time"}]
