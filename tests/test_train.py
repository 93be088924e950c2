"""babyllama train: real runs of a small Llama on the sample corpus's tokens.

Trainers run as `python -m babyllama train` subprocesses (signals and resume need fresh
processes). Each pays MindSpore's import and graph compiles, so the runs are few and
shared: one uninterrupted reference run serves several tests, and the stop/kill runs are
compared with it or with themselves. The model: dim 64, 2 layers, context 64, vocabulary
2,000 (the sp_tokenizer fixture).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from babyllama import planning, train_command
from babyllama.config import ModelConfig, estimate_memory, preset
from babyllama.data import open_token_file
from babyllama.devices import AcceleratorReading
from babyllama.errors import UserError
from babyllama.runs import MetricsReader, RunDir, launch_detached, stop_run

SMALL_MODEL = [
    "--preset", "tiny", "--dim", "64", "--n_layers", "2", "--n_heads", "2", "--max_seq_len", "64",
    "--batch_size", "4", "--warmup_iters", "2", "--learning_rate", "3e-3", "--log_interval", "1", "--seed", "7",
]
REFERENCE_STEPS = 24
TRAIN_FIELDS = {"kind", "step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "step_ms", "mem", "bpb",
                "flops_per_s", "mfu", "time"}
ROW_FIELDS = {
    "train": TRAIN_FIELDS,
    "eval": {"kind", "step", "val_loss", "val_bpb", "time"},
    "baselines": {"kind", "step", "uniform_loss", "unigram_loss", "bytes_per_token", "val_bytes_per_token",
                  "flops_per_token", "peak_flops", "peak_source", "time"},
    "sample": {"kind", "step", "prompt", "text", "time"},
    "resume": {"kind", "step", "checkpoint", "time"},
}
DIGEST_LINE = re.compile(r"rank (\d+)/(\d+): step (\d+), local loss (\S+), parameters (sha256:[0-9a-f]{64})")
# Every wait on a trainer is bounded: a hung one fails its test in under two minutes, with its output.
WAIT_S = 110


def trainer_env(**extra: str) -> dict:
    return {**os.environ, "GLOG_v": "3", "PYTHONUNBUFFERED": "1", **extra}


def tail(text: str | bytes | None, lines: int = 30) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join((text or "").splitlines()[-lines:])


def babyllama_train(run: Path, *flags: str, cwd: Path, env: dict | None = None,
                    timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-m", "babyllama", "train", "--run", str(run), *flags],
            cwd=cwd, env=env or trainer_env(), capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"babyllama train --run {run} had not ended after {timeout} s; its output ends:\n"
                             f"{tail(e.stdout)}\n{tail(e.stderr)}") from None


def rows_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]


def train_losses(rows: list[dict]) -> dict[int, float]:
    """step -> loss of the train rows written after the last `resume` row (or all of them)."""
    resumed = max((i for i, row in enumerate(rows) if row["kind"] == "resume"), default=-1)
    return {row["step"]: row["loss"] for row in rows[resumed + 1 :] if row["kind"] == "train"}


def digests(text: str) -> list[tuple[int, int, float, str]]:
    return [(int(r), int(s), float(loss), d) for r, _, s, loss, d in DIGEST_LINE.findall(text)]


def trained_a_step(run: Path) -> bool:
    return (run / "metrics.jsonl").exists() and any(r["kind"] == "train" for r in MetricsReader(run / "metrics.jsonl").poll())


def wait_for(condition, what: str, timeout: float = WAIT_S, every: float = 0.05, log: Path | None = None):
    """Poll `condition` until it holds; past `timeout`, fail with the tail of `log` (a run's train.log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    shown = f"; {log} ends:\n{tail(log.read_text(encoding='utf-8', errors='replace'))}" if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{shown}")


def start_trainer(run: Path, *flags: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """`babyllama train --run RUN *flags` in the background, its output (stderr included) piped."""
    return subprocess.Popen([sys.executable, "-m", "babyllama", "train", "--run", str(run), *flags], cwd=cwd,
                            env=env or trainer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def planned(run: Path) -> bool:
    """The trainer has planned the run (its `data:` line): MindSpore's import and compiles come next."""
    log = run / "train.log"
    return log.exists() and "data:" in log.read_text(encoding="utf-8")


def communicate(process: subprocess.Popen, timeout: float = WAIT_S) -> str:
    """The output of a trainer started with Popen (stdout piped, stderr to it), once it has ended."""
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"pid {process.pid} had not ended after {timeout} s; its output ends:\n"
                             f"{tail(process.communicate()[0])}") from None


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, sample_jsonl, sp_tokenizer_dir) -> Path:
    from babyllama.prepare import prepare

    out = tmp_path_factory.mktemp("tokens") / "sanguo.bin"
    prepare([sample_jsonl], "c4", sp_tokenizer_dir, out, workers=1)
    return out


@pytest.fixture(scope="module")
def other_tokenizer_dir(tmp_path_factory, sample_jsonl) -> Path:
    """A second real tokenizer (vocabulary 1,000), for the mismatch tests."""
    from babyllama.corpora import read_documents
    from babyllama.tokenizer import train_sentencepiece

    out = tmp_path_factory.mktemp("tokenizers") / "other"
    texts = ("".join(doc.segments) for doc in read_documents([sample_jsonl], "c4"))
    train_sentencepiece(texts, out, vocab_size=1000)
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, token_file):
    """An uninterrupted run of REFERENCE_STEPS steps, no dropout, with evaluations and samples."""
    workdir = tmp_path_factory.mktemp("reference")
    run = workdir / "runs" / "reference"
    done = babyllama_train(
        run, "--data", str(token_file), *SMALL_MODEL, "--max_steps", str(REFERENCE_STEPS),
        "--eval_interval", "12", "--save_interval", "4", "--keep_checkpoints", "2", "--sample_tokens", "8",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return run, done.stdout


# ---------------------------------------------------------------------------------------
# Planning (no MindSpore)


def test_child_arguments_repeat_the_command(tmp_path, token_file, sp_tokenizer_dir):
    args = parse("--run", str(tmp_path / "r"), "--data", str(token_file), "--tokenizer", str(sp_tokenizer_dir),
                 "--preset", "tiny", "--dim", "64", "--dropout", "0.1", "--decay_lr", "false",
                 "--n_kv_heads", "none", "--sample_prompt", "-a prompt-", "--detach", "--workers", "2")
    again = parse("--run", str(tmp_path / "r"), *train_command.child_arguments(args))
    for name in ("data", "tokenizer", "preset", "dim", "dropout", "decay_lr", "n_kv_heads", "sample_prompt"):
        assert getattr(again, name) == getattr(args, name), name
    assert not again.detach and again.workers == 1


def test_a_new_run_takes_its_vocabulary_and_tokenizer_from_the_token_files(tmp_path, token_file, sp_tokenizer):
    plan = planning.plan_training(parse("--run", str(tmp_path / "r"), "--data", str(token_file), *SMALL_MODEL,
                                     "--max_steps", "0", "--epochs", "2"), world_size=1)
    assert plan.model.vocab_size == sp_tokenizer.vocab_size == 2000
    assert plan.tokenizer.fingerprint == sp_tokenizer.fingerprint
    assert plan.train.max_steps == -(-2 * plan.dataset.train_windows // 4)
    assert plan.train.lr_decay_iters == plan.train.max_steps
    assert plan.config()["data"]["files"][0]["tokens"] == json.loads(Path(f"{token_file}.json").read_text())["tokens"]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, message", [
    ((), "needs token files"),
    (("--vocab_size", "1500"), "smaller than tokenizer"),
    (("--tokenizer", "OTHER"), "made with tokenizer"),
])
def test_a_new_run_refuses_bad_input(tmp_path, token_file, other_tokenizer_dir, extra, message):
    extra = tuple(str(other_tokenizer_dir) if e == "OTHER" else e for e in extra)
    data = () if not extra else ("--data", str(token_file))
    with pytest.raises(UserError, match=message):
        planning.plan_training(parse("--run", str(tmp_path / "r"), *data, *SMALL_MODEL, *extra), world_size=1)


def test_new_run_problems_name_their_fields_without_loading_the_tokenizer(tmp_path, token_file, sp_tokenizer_dir):
    files = [open_token_file(token_file)]
    model = ModelConfig(vocab_size=1000, max_seq_len=files[0].n_tokens)
    problems = planning.new_run_problems(files, model, tmp_path / "nowhere")
    assert [p.field for p in problems] == ["model.vocab_size", "model.max_seq_len", "tokenizer"]
    assert str(problems[0]) == "vocab_size 1,000 does not cover the token files' ids (their tokenizer has 2,000); " \
                               "use at least 2,000"
    assert "too few for one window" in str(problems[1]) and "no such file or folder" in str(problems[2])
    assert planning.new_run_problems(files, ModelConfig(vocab_size=2000, max_seq_len=64), sp_tokenizer_dir) == []
    assert planning.new_run_problems([], None, None) == []


def test_a_run_with_benchmarks_reads_their_folder_before_it_starts(tmp_path, token_file, monkeypatch):
    from test_mcq import write_ceval

    def plan(*extra):
        return planning.plan_training(parse("--run", str(tmp_path / "r"), "--data", str(token_file), *SMALL_MODEL,
                                            "--bench_interval", "2", *extra), world_size=1)

    with pytest.raises(UserError, match="must name the benchmark's folder") as e:
        plan()
    assert e.value.field == "train.bench_data"
    with pytest.raises(UserError, match=f"^train.bench_data: {tmp_path / 'nowhere'}: no such folder") as e:
        plan("--bench_data", str(tmp_path / "nowhere"))
    assert e.value.field == "train.bench_data"
    folder = write_ceval(tmp_path / "ceval", {"law": "AB"}, dev=1)
    with pytest.raises(UserError, match="holds 1 examples, fewer than the 2 shots asked"):
        plan("--bench_data", str(folder), "--bench_shots", "2")
    monkeypatch.chdir(tmp_path)
    assert plan("--bench_data", "ceval").train.bench_data == str(folder.resolve())


def test_memory_fit_judges_the_host_shared_by_the_workers_or_each_workers_device():
    model, train = preset("base")
    per_worker = estimate_memory(model, train, "float32")["total"] / 2**20
    fit = planning.memory_fit(model, train, 2, host_free_mb=per_worker * 1.5)
    assert (fit.where, fit.sharing, fit.dtype, fit.fits) == ("the host", 2, "float32", False)
    assert fit.problem().startswith(f"the run needs ≈{2 * per_worker / 1024:.1f} GiB (2 workers x ≈")
    assert "fewer workers" in fit.problem()
    assert planning.memory_fit(model, train, 1, host_free_mb=per_worker * 1.5).fits

    # With GPUs each worker has its own, "auto" computes in bfloat16, and the tightest device decides.
    gpus = [AcceleratorReading("gpu", 1, 0, "A100", 40000.0, 40960.0, 0.0),
            AcceleratorReading("gpu", 0, 0, "A100", 100.0, 40960.0, 0.0)]
    fit = planning.memory_fit(model, train, 2, accelerators=gpus, host_free_mb=0.0)
    assert (fit.where, fit.sharing, fit.dtype, fit.free_mb, fit.fits) == ("gpu 1", 1, "bfloat16", 960.0, False)
    assert planning.memory_fit(model, train, 1, accelerators=gpus, host_free_mb=0.0).fits
    unknown = [AcceleratorReading("npu", 0, 0, "910B", None, None, None)]
    assert planning.memory_fit(model, train, 1, accelerators=unknown, host_free_mb=0.0).fits


# ---------------------------------------------------------------------------------------
# Seeded dropout (MindSpore, PyNative, in this process)


def test_seeded_dropout_masks_follow_the_stored_counter():
    import mindspore as ms

    from babyllama.dropout import SeededDropout

    x = ms.Tensor(np.ones((64, 256), np.float32))
    first = SeededDropout(0.25, stream=12345)
    first.set_train(True)
    masks = [first(x).asnumpy() for _ in range(3)]
    assert int(first.draws.asnumpy()) == 3
    assert not np.array_equal(masks[0], masks[1])
    assert abs((masks[0] > 0).mean() - 0.75) < 0.01
    assert set(np.unique(masks[0])) == {0.0, np.float32(1 / 0.75)}

    restored = SeededDropout(0.25, stream=12345)
    restored.set_train(True)
    restored.draws.set_data(ms.Tensor(1, ms.int32))
    assert np.array_equal(restored(x).asnumpy(), masks[1])
    other_stream = SeededDropout(0.25, stream=54321)
    other_stream.set_train(True)
    assert not np.array_equal(other_stream(x).asnumpy(), masks[0])
    first.set_train(False)
    assert np.array_equal(first(x).asnumpy(), x.asnumpy()) and int(first.draws.asnumpy()) == 3


# ---------------------------------------------------------------------------------------
# Whole runs


@pytest.mark.slow
def test_a_run_learns_and_keeps_its_run_directory(reference_run, token_file, sp_tokenizer):
    run, output = reference_run
    # Nothing lands in the directory the run was started from (MindSpore's graph kernel
    # compiler would leave akg_kernel_meta/ and dsa_transfrom.log there).
    assert [p.name for p in run.parent.parent.iterdir()] == ["runs"]
    rows = rows_of(run)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == status["max_steps"] == REFERENCE_STEPS

    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, REFERENCE_STEPS + 1))
    for row in rows:
        assert ROW_FIELDS[row["kind"]] <= set(row), row
    assert [r["tokens"] for r in train_rows] == [s * 4 * 64 for s in range(1, REFERENCE_STEPS + 1)]
    assert all(r["tokens_per_s"] > 0 and r["mem"]["rss_mb"] > 0 for r in train_rows[1:])
    evals = {r["step"]: r["val_loss"] for r in rows if r["kind"] == "eval"}
    assert sorted(evals) == [0, 12, 24]
    assert evals[24] < evals[0] - 0.3, evals
    losses = [r["loss"] for r in train_rows]
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3, losses
    samples = [r for r in rows if r["kind"] == "sample"]
    assert [r["step"] for r in samples] == [0, 12, 24]
    assert all(r["text"].startswith(r["prompt"]) and len(r["text"]) > len(r["prompt"]) for r in samples)

    run_dir = RunDir(run)
    assert [c.step for c in run_dir.checkpoints()] == [20, 24] and run_dir.latest_checkpoint().step == 24
    latest = run_dir.latest_checkpoint().path
    assert sorted(p.name for p in latest.iterdir()) == ["config.json", "model.safetensors", "optimizer.safetensors",
                                                        "state.json"]
    state = json.loads((latest / "state.json").read_text())
    assert state["step"] == state["data_position"] == 24 and state["tokens"] == 24 * 4 * 64
    assert state["tokenizer"]["sha256"] == sp_tokenizer.fingerprint
    assert state["best_val_loss"] == min(evals.values())

    from safetensors.numpy import load_file

    weights = load_file(latest / "model.safetensors")
    moments = load_file(latest / "optimizer.safetensors")
    assert weights["tok_embeddings.weight"].shape == (2000, 64) and "layers.1.feed_forward.w3.weight" in weights
    assert set(moments) == {f"exp_avg.{n}" for n in weights} | {f"exp_avg_sq.{n}" for n in weights} | {"optimizer_step"}
    assert float(moments["optimizer_step"]) == 24

    config = run_dir.read_config()
    assert config["model"]["vocab_size"] == 2000 and config["model"]["dim"] == 64
    assert config["train"]["max_steps"] == config["train"]["lr_decay_iters"] == REFERENCE_STEPS
    assert config["tokenizer"]["sha256"] == sp_tokenizer.fingerprint and config["world_size"] == 1
    assert config["data"]["files"][0]["path"] == str(token_file.resolve())
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "parameters" in log and "first step took" in log and "finished 24 steps" in log
    assert digests(output)[0][1] == 24


@pytest.mark.slow
def test_rows_carry_bits_per_byte_throughput_and_the_baselines(reference_run, token_file, sp_tokenizer):
    from babyllama.data import TokenDataset
    from babyllama.measures import TextBytes, flops_per_token, unigram_loss, windows_bytes

    run, output = reference_run
    rows = rows_of(run)
    assert rows[0]["kind"] == "baselines" and [r for r in rows if r["kind"] == "baselines"] == rows[:1]
    baselines = rows[0]
    dataset = TokenDataset(token_file, seq_len=64, val_fraction=0.01)
    assert baselines["uniform_loss"] == pytest.approx(np.log(2000))
    assert baselines["unigram_loss"] == pytest.approx(unigram_loss(dataset).loss)
    # The validation windows of each evaluation: eval_iters (10) batches of 4.
    scored = dataset.val_indices(4, 10)
    val_bytes = windows_bytes(TextBytes(sp_tokenizer, dataset.eos_id), dataset, scored, validation=True)
    assert baselines["val_bytes_per_token"] == val_bytes / (len(scored) * 64)
    assert 1 < baselines["bytes_per_token"] < 4  # mostly Chinese: up to 3 bytes a character, a piece or so a token
    model = ModelConfig(vocab_size=2000, dim=64, n_layers=2, n_heads=2, max_seq_len=64)
    assert baselines["flops_per_token"] == flops_per_token(model)
    assert baselines["peak_flops"] > 0 and baselines["peak_source"].startswith("measured: float32 matmul on ")

    for row in (r for r in rows if r["kind"] == "eval"):
        assert row["val_bpb"] == pytest.approx(row["val_loss"] * len(scored) * 64 / (val_bytes * np.log(2)))
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert (train_rows[0]["flops_per_s"], train_rows[0]["mfu"]) == (None, None)  # the compile step alone
    for row in train_rows[1:]:
        assert row["bpb"] == pytest.approx(row["loss"] / (baselines["bytes_per_token"] * np.log(2)))
        assert row["flops_per_s"] == pytest.approx(baselines["flops_per_token"] * row["tokens_per_s"], rel=1e-4)
        assert row["mfu"] == pytest.approx(row["flops_per_s"] / baselines["peak_flops"])
    assert "baselines: uniform loss 7.6009" in output and re.search(r"tok/s .* mfu \d+\.\d%", output)
    assert json.loads((run / "baselines.json").read_text())["unigram_loss"] == baselines["unigram_loss"]


@pytest.mark.slow
def test_a_resumed_run_writes_its_baselines_again_from_the_count_kept_in_the_run(tmp_path, reference_run):
    run = tmp_path / "resumed"
    shutil.copytree(reference_run[0], run)
    kept = json.loads((run / "baselines.json").read_text())
    # A count the data could not give: the resume must take it from the run, not count again.
    (run / "baselines.json").write_text(json.dumps({**kept, "unigram_loss": 1.25}))
    done = babyllama_train(run, "--resume", "--max_steps", str(REFERENCE_STEPS + 2), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = rows_of(run)
    resumed = max(i for i, r in enumerate(rows) if r["kind"] == "resume")
    assert rows[resumed + 1]["kind"] == "baselines" and rows[resumed + 1]["step"] == REFERENCE_STEPS
    assert rows[resumed + 1]["unigram_loss"] == 1.25
    assert {k: v for k, v in rows[resumed + 1].items() if k not in ("unigram_loss", "peak_flops", "time")} == \
        {k: v for k, v in rows[0].items() if k not in ("unigram_loss", "peak_flops", "time", "step")} | \
        {"step": REFERENCE_STEPS}


@pytest.mark.slow
def test_the_last_sample_is_what_generate_gives_at_temperature_0_for_the_last_checkpoint(reference_run):
    run, _ = reference_run
    sample = [r for r in rows_of(run) if r["kind"] == "sample"][-1]
    assert sample["step"] == RunDir(run).latest_checkpoint().step == REFERENCE_STEPS
    done = subprocess.run(
        [sys.executable, "-m", "babyllama", "generate", "--ckpt", str(run), "--prompt", sample["prompt"],
         "--temperature", "0", "--max-new-tokens", "8"],
        env=trainer_env(), capture_output=True, text=True, timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == sample["text"] + "\n\n"
    assert len(sample["text"]) > len(sample["prompt"])


@pytest.mark.slow
def test_bench_rows_score_the_weights_as_eval_task_scores_that_steps_checkpoint(tmp_path, token_file):
    from test_mcq import write_ceval

    folder = write_ceval(tmp_path / "ceval", {"law": "ABCDAB", "logic": "DCBA", "high_school_physics": "AABB"}, dev=2)
    run = tmp_path / "runs" / "bench"
    done = babyllama_train(run, "--data", str(token_file), *SMALL_MODEL, "--max_steps", "4", "--eval_interval", "4",
                           "--save_interval", "2", "--sample_tokens", "0", "--bench_interval", "2", "--bench_data",
                           str(folder), "--bench_questions", "7", "--bench_shots", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    benches = [r for r in rows_of(run) if r["kind"] == "bench"]
    assert [r["step"] for r in benches] == [2, 4]
    for row in benches:
        assert {"kind", "step", "task", "shots", "accuracy", "questions", "subjects", "chance", "time"} <= set(row)
        assert (row["task"], row["shots"], row["questions"], row["subjects"], row["chance"]) == ("ceval", 1, 7, 3, 0.25)
        scored = subprocess.run(
            [sys.executable, "-m", "babyllama", "eval", "--ckpt", str(RunDir(run).checkpoint_path(row["step"])),
             "--task", "ceval", "--data", str(folder), "--shots", "1", "--questions", "7", "--json"],
            capture_output=True, text=True, timeout=WAIT_S)
        assert scored.returncode == 0, scored.stderr
        result = json.loads(scored.stdout)
        # The same float32 arithmetic in two processes agrees to rounding, not always bit for bit (seen in
        # CI: -15.152381896731928 against -15.152381896766233).
        assert result["accuracy"] == row["accuracy"]
        assert result["answer_log_likelihood"] == pytest.approx(row["answer_log_likelihood"], rel=1e-6)
    assert benches[0]["answer_log_likelihood"] != benches[1]["answer_log_likelihood"]
    assert f"step 4: ceval accuracy {benches[1]['accuracy']:.1%} over 7 questions" in done.stdout


@pytest.mark.slow
def test_sigterm_saves_and_stops_and_the_resumed_run_matches_the_uninterrupted_one(tmp_path, token_file,
                                                                                   reference_run):
    reference, reference_output = reference_run
    run = tmp_path / "runs" / "stopped"
    # The same run as the reference except for evaluation and sampling, which change no weight.
    flags = ["--data", str(token_file), *SMALL_MODEL, "--max_steps", "1000", "--lr_decay_iters", str(REFERENCE_STEPS),
             "--eval_interval", "1000", "--save_interval", "1000", "--sample_tokens", "0"]
    trainer = start_trainer(run, *flags, cwd=tmp_path)
    try:
        # Mid-training: the signal waits for the step to end, then a checkpoint is saved.
        wait_for(lambda: trained_a_step(run), "the first step", log=run / "train.log")
        trainer.send_signal(signal.SIGTERM)
        output = communicate(trainer)
    finally:
        trainer.kill()
    assert trainer.returncode == 0, output
    status = RunDir(run).read_status()
    stopped_at = status["step"]
    assert status["state"] == "stopped" and "SIGTERM" in status["error"], status
    assert 1 <= stopped_at < REFERENCE_STEPS
    assert RunDir(run).latest_checkpoint().step == stopped_at
    assert max(train_losses(rows_of(run))) == stopped_at

    resumed = babyllama_train(run, "--resume", "--max_steps", str(REFERENCE_STEPS), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = rows_of(run)
    assert [r["step"] for r in rows if r["kind"] == "resume"] == [stopped_at]
    expected = {s: loss for s, loss in train_losses(rows_of(reference)).items() if s > stopped_at}
    assert train_losses(rows) == expected
    assert digests(resumed.stdout)[-1][3] == digests(reference_output)[-1][3]
    assert RunDir(run).read_status()["state"] == "finished"


@pytest.mark.slow
def test_a_detached_run_with_dropout_survives_its_parent_and_sigkill_and_resumes_exactly(tmp_path, token_file,
                                                                                         reference_run):
    run = tmp_path / "runs" / "killed"
    flags = ["--data", str(token_file), *SMALL_MODEL, "--dropout", "0.1", "--max_steps", "5000",
             "--eval_interval", "5000", "--save_interval", "8", "--keep_checkpoints", "2", "--sample_tokens", "0"]
    parent = textwrap.dedent(f"""
        from babyllama.runs import launch_detached
        print(launch_detached({str(run)!r}, {flags!r}, env={{"GLOG_v": "3"}}))
    """)
    launched = subprocess.run([sys.executable, "-c", parent], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    assert launched.returncode == 0, launched.stderr

    reader = MetricsReader(run / "metrics.jsonl")
    seen: list[dict] = []

    def progressed_past_a_checkpoint() -> bool:
        for row in reader.poll():
            assert ROW_FIELDS[row["kind"]] <= set(row), row
            seen.append(row)
        latest = RunDir(run).latest_checkpoint()
        return latest is not None and any(r["kind"] == "train" and r["step"] >= latest.step + 2 for r in seen)

    wait_for(progressed_past_a_checkpoint, "steps past a checkpoint", log=run / "train.log")
    status = RunDir(run).read_status()
    # Trained on after its parent exited, in a session of its own.
    assert status["launcher"] == "python" and os.getsid(status["pid"]) == status["pid"]
    # Killed at least 2 steps past a checkpoint and 6 before the next one (save_interval 8).
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(lambda: RunDir(run).state().state == "failed", "the killed run to read as failed")
    assert reader.bad_lines == 0
    seen += reader.poll()
    before_kill = train_losses(seen)
    killed_at = max(before_kill)
    checkpoint = RunDir(run).latest_checkpoint().step
    assert checkpoint < killed_at

    resumed = babyllama_train(run, "--resume", "--max_steps", str(killed_at), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after_resume = train_losses(rows_of(run))
    assert sorted(after_resume) == list(range(checkpoint + 1, killed_at + 1))
    assert after_resume == {s: before_kill[s] for s in after_resume}
    # Dropout was on: the same seed and batches as the reference give other losses.
    assert before_kill[1] != train_losses(rows_of(reference_run[0]))[1]
    state = json.loads((RunDir(run).latest_checkpoint().path / "state.json").read_text())
    assert state["step"] == killed_at
    # One draw a step at each site: the embedding, and attention, residual and feed-forward per layer.
    assert list(state["rng"]["dropout_draws"].values()) == [killed_at] * (1 + 2 * 3)


@pytest.mark.slow
def test_resume_refuses_another_model_shape_or_tokenizer_and_changes_nothing(tmp_path, reference_run,
                                                                            other_tokenizer_dir):
    run, _ = reference_run
    before = {name: (run / name).read_bytes() for name in ("status.json", "metrics.jsonl", "config.json")}
    shape = babyllama_train(run, "--resume", "--n_layers", "3", "--max_steps", "30", cwd=tmp_path)
    assert shape.returncode == 2 and "n_layers: 2 != 3" in shape.stderr, shape.stderr
    tokenizer = babyllama_train(run, "--resume", "--tokenizer", str(other_tokenizer_dir), "--max_steps", "30",
                                cwd=tmp_path)
    assert tokenizer.returncode == 2 and "tokenizer fingerprint differs" in tokenizer.stderr, tokenizer.stderr
    finished = babyllama_train(run, "--resume", cwd=tmp_path)
    assert finished.returncode == 2 and "larger --max_steps" in finished.stderr, finished.stderr
    again = babyllama_train(run, "--data", "x.bin", cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert {name: (run / name).read_bytes() for name in before} == before
    assert "Traceback" not in shape.stderr + tokenizer.stderr + finished.stderr


@pytest.mark.slow
def test_resume_from_a_broken_checkpoint_is_refused_and_leaves_the_run_as_it_was(tmp_path, reference_run):
    run = tmp_path / "copy"
    shutil.copytree(reference_run[0], run)
    weights = RunDir(run).latest_checkpoint().path / "model.safetensors"
    weights.chmod(0o600)
    weights.write_bytes(weights.read_bytes()[:1000])
    before = {name: (run / name).read_bytes() for name in ("status.json", "config.json", "metrics.jsonl")}
    done = babyllama_train(run, "--resume", "--max_steps", "30", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{weights} cannot be read" in done.stderr and "delete" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    # Still the finished run of its own max_steps: no config rewritten, no state changed.
    assert {name: (run / name).read_bytes() for name in before} == before


@pytest.mark.slow
def test_a_run_out_of_memory_records_mindspores_message_and_what_to_do(tmp_path, token_file):
    # MindSpore and the first step's graph fit in 4 GiB of address space; 4,096 windows' activations and logits
    # (10 GiB estimated) do not, and MindSpore's CPU memory pool says so when the first step runs. The memory
    # check, which would refuse the run on a host with less than 10 GiB free, is passed over to get there.
    run = tmp_path / "oom"
    done = subprocess.run(
        [sys.executable, "-m", "babyllama", "train", "--run", str(run), "--data", str(token_file), *SMALL_MODEL,
         "--batch_size", "4096", "--max_steps", "3", "--ignore-memory-check"],
        cwd=tmp_path, env=trainer_env(), capture_output=True, text=True, timeout=WAIT_S, check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    status = RunDir(run).read_status()
    assert status["state"] == "failed" and status["step"] == 0, status
    assert re.fullmatch(r"Memory not enough: Memory isn't enough and alloc failed, kernel name: \S+, "
                        r"alloc size: \d+B; lower --batch_size .* or --max_seq_len", status["error"]), status
    # The full report, banners and C++ call stack included, stays in train.log.
    assert "- C++ Call Stack: (For framework developers)" in (run / "train.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_two_msrun_workers_train_in_sync_and_rank_0_alone_writes_the_run(tmp_path, token_file):
    run = RunDir(tmp_path / "runs" / "pair")
    flags = ["--data", str(token_file), *SMALL_MODEL, "--max_steps", "6", "--eval_interval", "3",
             "--save_interval", "3", "--sample_tokens", "4"]
    launch_detached(run, flags, workers=2, env={"GLOG_v": "3"}, cwd=tmp_path)
    # Two processes compile and train on two cores, with msrun's start-up: a longer bound than one trainer's.
    wait_for(lambda: run.state().state not in ("starting", "running", "stopping"), "the two workers to finish",
             timeout=2 * WAIT_S, every=0.5, log=run.log_path)
    status = run.read_status()
    assert status["state"] == "finished" and status["world_size"] == 2, (status, run.log_path.read_text())

    logs = [(run.msrun_log_dir / f"worker_{rank}.log").read_text(encoding="utf-8") for rank in (0, 1)]
    (rank0, _, loss0, digest0), = digests(logs[0])
    (rank1, _, loss1, digest1), = digests(logs[1])
    assert (rank0, rank1) == (0, 1)
    assert digest0 == digest1
    assert loss0 != loss1  # each rank read its own share of the batch

    rows = rows_of(run.path)
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert train_rows[-1]["tokens"] == 6 * 2 * 4 * 64
    assert abs(train_rows[-1]["loss"] - (loss0 + loss1) / 2) < 1e-5
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 3, 6]
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["latest", "step_0000003", "step_0000006"]
    assert run.read_config()["world_size"] == 2


# ---------------------------------------------------------------------------------------
# Divergence: bad steps skipped, rolled back over, and the run stopped


# Data positions (0-based batches) whose windows hold random ids (see spiky_token_file). 27 is
# step 28's batch, alone: skipped. 40, 42 and 43 are steps 41, 43 and 44: three bad steps within
# rollback_window 10, so the run rolls back to step_0000040 and skips batches 40-43; from there
# step k reads batch k + 3, so 50-52 are steps 47-49: three more, after max_rollbacks 1: diverged.
# The spike window is short, as the loss falls fast: the median of the last 10 steps is near its level.
SPIKY_BATCHES = (27, 40, 42, 43, 50, 51, 52)
DIVERGING = ["--learning_rate", "1e-2", "--max_steps", "60", "--save_interval", "5", "--keep_checkpoints", "3",
             "--eval_interval", "1000", "--sample_tokens", "0", "--spike_window", "10", "--rollback_window", "10",
             "--max_rollbacks", "1"]


def spiky_token_file(folder: Path, like: Path, batches, windows: int = 400) -> Path:
    """A token file a tiny model learns in a few steps (one cycle of 20 ids, repeated), except the
    windows that SMALL_MODEL's batches `batches` read, which hold random ids: their loss spikes.

    A real cause of bad steps at known steps, the same on every run."""
    from babyllama.data import BatchSampler, TokenDataset

    seq_len, batch_size, seed = 64, 4, 7
    manifest = json.loads(like.with_name(like.name + ".json").read_text(encoding="utf-8"))
    tokens = np.resize(np.arange(100, 120, dtype=np.uint16), windows * seq_len + 1)
    path = folder / "spiky.bin"
    tokens.tofile(path)
    (folder / "spiky.bin.json").write_text(json.dumps({**manifest, "tokens": int(tokens.size), "documents": 1}))
    sampler = BatchSampler(TokenDataset(path, seq_len), batch_size, seed)
    rng = np.random.default_rng(0)
    for position in batches:
        for window in sampler.train_indices(position).tolist():
            tokens[window * seq_len : (window + 1) * seq_len + 1] = rng.integers(3, 2000, seq_len + 1)
    tokens.tofile(path)
    return path


def alerts_of(rows: list[dict]) -> list[tuple[int, str, str]]:
    return [(r["step"], r["alert"], r["action"]) for r in rows if r["kind"] == "alert"]


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory, token_file):
    """A run on spiky_token_file: a skip at step 28, a rollback at 44, diverged at 49."""
    workdir = tmp_path_factory.mktemp("diverged")
    data = spiky_token_file(workdir, token_file, SPIKY_BATCHES)
    run = workdir / "runs" / "spiky"
    done = babyllama_train(run, "--data", str(data), *SMALL_MODEL, *DIVERGING, cwd=workdir)
    return run, done


@pytest.mark.slow
def test_bad_steps_are_skipped_then_rolled_back_over_then_the_run_stops_as_diverged(diverged_run):
    run, done = diverged_run
    assert done.returncode == 2, done.stdout + done.stderr
    reason = done.stderr.strip()
    assert reason.startswith("babyllama train: error: diverged at step 49: 3 bad steps within 10 steps after 1 "
                             "rollback, the last: the loss jumped to "), done.stderr
    assert len(reason.splitlines()) == 1 and "Traceback" not in done.stderr
    rows = rows_of(run)
    assert alerts_of(rows) == [
        (28, "spike", "skipped"),
        (41, "spike", "skipped"), (43, "spike", "skipped"), (44, "spike", "skipped"), (44, "rollback", "rolled_back"),
        (47, "spike", "skipped"), (48, "spike", "skipped"), (49, "spike", "skipped"), (49, "diverged", "stopped"),
    ]
    alerts = [r for r in rows if r["kind"] == "alert"]
    spike = alerts[0]
    assert spike["data_position"] == 27 and spike["loss"] > spike["ceiling"] and "step 28: the loss jumped" in \
        spike["message"]
    rollback = alerts[4]
    assert rollback["checkpoint"] == "step_0000040" and rollback["skipped_batches"] == [40, 43]
    assert rollback["lr_scale"] == 0.5 and rollback["rollbacks"] == 1
    # Readers drop the rows after step 40 at the resume row that follows the rollback.
    after = rows.index(rollback) + 1
    assert rows[after]["kind"] == "resume" and rows[after]["step"] == 40 and rows[after]["checkpoint"] == "step_0000040"
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [*range(1, 45), *range(41, 50)]
    assert [r["step"] for r in train if r.get("skipped")] == [28, 41, 43, 44, 47, 48, 49]
    before, again = train[41], train[45]  # step 42, before the rollback and after it at half the learning rate
    assert before["step"] == again["step"] == 42 and again["lr"] == pytest.approx(before["lr"] / 2)
    log = (run / "train.log").read_text(encoding="utf-8")
    assert all(f"alert: {a['message']}" in log for a in alerts)

    status = RunDir(run).read_status()
    assert status["state"] == "failed" and status["error"] == reason.removeprefix("babyllama train: error: ")
    assert status["alerts"] == 9 and status["last_alert"]["alert"] == "diverged"
    # The checkpoint saved after the rollback carries what resume needs to meet the same events.
    state = json.loads((RunDir(run).latest_checkpoint().path / "state.json").read_text())
    assert state["step"] == 45 and state["data_position"] == 49  # the batch step 46 reads
    assert state["divergence"]["rollbacks"] == 1 and state["divergence"]["skipped"] == [[40, 43]]
    assert state["divergence"]["lr_scale"] == 0.5 and len(state["divergence"]["losses"]) == 10


@pytest.mark.slow
def test_a_run_resumed_after_a_rollback_meets_the_same_losses_and_the_same_end(tmp_path, diverged_run):
    run = tmp_path / "copy"
    shutil.copytree(diverged_run[0], run)
    before = train_losses(rows_of(run))
    # A relative --run, as typed in a shell: the trainer works in its kernel workspace, not there.
    resumed = babyllama_train(Path("copy"), "--resume", cwd=tmp_path)
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    rows = rows_of(run)
    assert [r["step"] for r in rows if r["kind"] == "resume"] == [40, 45]
    after = train_losses(rows)
    assert sorted(after) == [46, 47, 48, 49]
    assert after == {s: before[s] for s in after}
    assert resumed.stderr == diverged_run[1].stderr
    assert alerts_of(rows)[-4:] == [(47, "spike", "skipped"), (48, "spike", "skipped"), (49, "spike", "skipped"),
                                    (49, "diverged", "stopped")]


@pytest.mark.slow
def test_the_checkpoint_rolled_back_to_is_saved_again_so_resuming_from_it_meets_the_same_end(tmp_path, diverged_run):
    """As if the run had stopped, or crashed, right after its rollback: resumed from the checkpoint
    it went back to, it skips the same batches at the same learning rate, and no second rollback."""
    original = diverged_run[0]
    run = tmp_path / "copy"
    shutil.copytree(original, run)
    state = json.loads((run / "checkpoints" / "step_0000040" / "state.json").read_text())
    assert state["divergence"]["rollbacks"] == 1 and state["divergence"]["skipped"] == [[40, 43]]
    shutil.rmtree(run / "checkpoints" / "step_0000045")
    (run / "checkpoints" / "latest").write_text("step_0000040\n")
    resumed = babyllama_train(Path("copy"), "--resume", cwd=tmp_path)
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert resumed.stderr == diverged_run[1].stderr
    rows = rows_of(run)
    assert train_losses(rows) == {s: loss for s, loss in train_losses(rows_of(original)).items() if s > 40}
    assert alerts_of(rows)[-4:] == [(47, "spike", "skipped"), (48, "spike", "skipped"), (49, "spike", "skipped"),
                                    (49, "diverged", "stopped")]

    # What the resumed run saved at step 45 is what the run saved there, the overfitting watch's
    # training losses included (those of the steps rolled back over are gone from both).
    def saved(folder: Path) -> dict:
        state = json.loads((folder / "checkpoints" / "step_0000045" / "state.json").read_text())
        return {k: v for k, v in state.items() if k not in ("saved", "elapsed_s")}

    assert saved(run) == saved(original)


@pytest.mark.slow
def test_learning_rate_10_on_the_sample_corpus_tries_every_rollback_then_fails_as_diverged(tmp_path, token_file):
    run = tmp_path / "runs" / "lr10"
    done = babyllama_train(run, "--data", str(token_file), "--preset", "tiny", "--learning_rate", "10",
                           "--max_steps", "60", "--log_interval", "1", "--eval_iters", "2", "--sample_tokens", "0",
                           cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("babyllama train: error: diverged at step ") and "after 3 rollbacks" in done.stderr
    rows = rows_of(run)
    alerts = alerts_of(rows)
    # No checkpoint yet (save_interval 200): each rollback starts over from the initial weights,
    # the first from the run's start, the next from the step 0 checkpoint the first saved with its state.
    assert [a[1:] for a in alerts if a[1] in ("rollback", "diverged")] == [("rollback", "rolled_back")] * 3 + [
        ("diverged", "stopped")]
    assert {a[1:] for a in alerts if a[1] not in ("rollback", "diverged")} <= {("nonfinite", "skipped"),
                                                                                ("spike", "skipped")}
    assert [(r["step"], r["checkpoint"]) for r in rows if r["kind"] == "resume"] == [(0, None)] + [
        (0, "step_0000000")] * 2
    lr_scales = [r["lr_scale"] for r in rows if r["kind"] == "alert" and r["alert"] == "rollback"]
    assert lr_scales == [0.5, 0.25, 0.125]
    status = RunDir(run).read_status()
    assert status["state"] == "failed" and status["error"].startswith("diverged at step ")


# ---------------------------------------------------------------------------------------
# Faults: a compiler that cannot start, a peer killed mid-compile, signals at start-up, a full disk


def test_the_package_declares_what_the_kernel_compiler_imports():
    from importlib.metadata import requires

    from babyllama.kernel_cache import _IMPORT_COMPILER

    # mindspore's wheel does not declare decorator; a fresh environment has it only through us.
    assert any(r.split(">")[0].split("=")[0].strip() == "decorator" for r in requires("babyllama"))
    imported = subprocess.run([sys.executable, "-c", _IMPORT_COMPILER], capture_output=True, text=True, timeout=WAIT_S)
    assert imported.returncode == 0, imported.stderr


@pytest.fixture
def cold_cache(tmp_path) -> dict:
    """A trainer environment whose kernel cache is empty: every fused kernel is compiled."""
    return trainer_env(XDG_CACHE_HOME=str(tmp_path / "cold-cache"))


@pytest.mark.slow
def test_a_compiler_that_cannot_start_fails_the_run_in_seconds_naming_what_to_install(tmp_path, token_file, cold_cache):
    # What a fresh environment without decorator did: the compiler server dies importing it.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "decorator.py").write_text("raise ModuleNotFoundError(\"No module named 'decorator'\", name='decorator')\n")
    run = tmp_path / "runs" / "nodeco"
    env = {**cold_cache, "PYTHONPATH": os.pathsep.join([str(shadow), *sys.path])}
    began = time.monotonic()
    done = babyllama_train(run, "--data", str(token_file), *SMALL_MODEL, "--max_steps", "4", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - began < 60
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("babyllama train: error: MindSpore's kernel compiler cannot start") and \
        "No module named 'decorator'" in last and "pip install decorator" in last, last
    status = RunDir(run).read_status()
    assert status["state"] == "failed" and "pip install decorator" in status["error"], status


@pytest.mark.slow
def test_two_trainers_on_a_cold_cache_one_killed_mid_compile_the_other_finishes(tmp_path, token_file, cold_cache):
    # Before each process compiled in its own folder, the survivor waited for ever for kernels the dead one had taken.
    flags = ["--data", str(token_file), *SMALL_MODEL, "--dim", "48", "--max_steps", "3", "--eval_interval", "3",
             "--sample_tokens", "0"]
    started = [start_trainer(tmp_path / name, *flags, cwd=tmp_path, env=cold_cache) for name in ("doomed", "survivor")]
    doomed, survivor = started
    try:
        wait_for(lambda: planned(tmp_path / "doomed"), "the first trainer to plan")
        time.sleep(3)
        doomed.kill()
        output = communicate(survivor)
    finally:
        for process in started:
            process.kill()
    assert survivor.returncode == 0, output
    assert RunDir(tmp_path / "survivor").read_status()["state"] == "finished"
    # The survivor removed its kernel workspace as it ended (the doomed one's, if it got that far, stays for
    # the next process to remove).
    workspaces = (tmp_path / "cold-cache").glob("babyllama/*/processes/*")
    assert str(survivor.pid) not in [w.name.rpartition("-")[2] for w in workspaces]


@pytest.mark.slow
def test_sigterm_during_start_up_says_stopping_at_once_and_stops_before_stepping(tmp_path, token_file, cold_cache):
    run = tmp_path / "runs" / "early"
    trainer = start_trainer(run, "--data", str(token_file), *SMALL_MODEL, "--max_steps", "50", cwd=tmp_path,
                            env=cold_cache)
    try:
        # Claimed before MindSpore is imported: the signal comes during the import or the first compile.
        wait_for(lambda: RunDir(run).status_path.exists() and RunDir(run).read_status().get("state") == "running",
                 "the run to be claimed")
        trainer.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_for(lambda: RunDir(run).read_status()["state"] in ("stopping", "stopped"), "stopping", timeout=3,
                 every=0.02)
        output = communicate(trainer)
    finally:
        trainer.kill()
    assert time.monotonic() - signalled < 30
    assert trainer.returncode == 0, output
    status = RunDir(run).read_status()
    assert status["state"] == "stopped" and "SIGTERM" in status["error"] and status["step"] == 0, status
    assert RunDir(run).checkpoints() == [] and not train_losses(rows_of(run) if (run / "metrics.jsonl").exists() else [])
    # Whatever MindSpore wrote while compiling stayed in the kernel workspace.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cold-cache", "runs"]


@pytest.mark.slow
def test_a_second_sigterm_during_the_compile_stops_at_once_and_leaves_nothing_behind(tmp_path, token_file,
                                                                                     cold_cache):
    run = tmp_path / "runs" / "twice"
    trainer = start_trainer(run, "--data", str(token_file), *SMALL_MODEL, "--max_steps", "50", cwd=tmp_path,
                            env=cold_cache)
    try:
        wait_for(lambda: planned(run), "the trainer to plan")
        time.sleep(2)  # MindSpore imported, compiling
        trainer.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        trainer.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        output = communicate(trainer, timeout=30)
    finally:
        trainer.kill()
    # Both signals may reach Python's handler as one while MindSpore holds the main thread; the guard counts two.
    assert time.monotonic() - signalled < 10, output
    assert RunDir(run).read_status()["state"] == "stopped", output
    # An interrupted compile writes its analysis (rank_0/om/analyze_fail.ir) into the kernel workspace, not here.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cold-cache", "runs"]
    assert {p.name for p in run.iterdir()} <= {"checkpoints", "config.json", "metrics.jsonl", "status.json", ".status.lock",
                                              "train.log", "baselines.json"}


@pytest.mark.slow
def test_a_trainer_stuck_past_the_stop_deadline_is_ended_by_its_guard(tmp_path, token_file, cold_cache):
    run = tmp_path / "runs" / "stuck"
    env = {**cold_cache, "BABYLLAMA_STOP_DEADLINE_S": "1"}
    trainer = start_trainer(run, "--data", str(token_file), *SMALL_MODEL, "--max_steps", "50", cwd=tmp_path,
                            env=env)
    try:
        # After its data line the trainer imports MindSpore and compiles for seconds, deaf to Python's handlers.
        wait_for(lambda: planned(run), "the trainer to plan")
        trainer.send_signal(signal.SIGTERM)
        output = communicate(trainer, timeout=30)
    finally:
        trainer.kill()
    status = RunDir(run).read_status()
    assert trainer.returncode == -signal.SIGKILL, output
    assert status["state"] == "stopped" and "ended without a checkpoint" in status["error"], status
    assert "no checkpoint had been saved" in status["error"]
    # The guard took the trainer's children (the kernel compiler's server) with it.
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(run) in " ".join(p.info["cmdline"] or [])]


@pytest.mark.slow
def test_a_full_disk_ends_training_in_one_line_keeps_the_last_checkpoint_and_leaves_nothing_that_grows(
        tmp_path, token_file):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    # One checkpoint of this model (about 0.6 MB) fits, the second does not.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1800k", "tmpfs", str(disk)], check=True)
    try:
        run = disk / "run"
        flags = ["--data", str(token_file), *SMALL_MODEL, "--dim", "32", "--max_steps", "40", "--save_interval", "1",
                 "--keep_checkpoints", "1", "--sample_tokens", "0", "--eval_interval", "1000"]
        first = babyllama_train(run, *flags, cwd=tmp_path)
        assert first.returncode == 2, first.stdout + first.stderr
        last = first.stderr.strip().splitlines()[-1]
        assert last.startswith(f"babyllama train: error: {run / 'checkpoints'}: no space left on the device") and \
            "is intact" in last and "--resume" in last and "Traceback" not in first.stderr, first.stderr
        assert "CRITICAL" not in first.stderr  # MindSpore's own line about the failed save is not repeated
        latest = RunDir(run).latest_checkpoint()
        assert RunDir(run).read_status()["state"] == "failed"
        from babyllama.runs import checkpoint_problem

        assert checkpoint_problem(latest.path) is None
        files_after_first = sorted(p.relative_to(disk) for p in disk.rglob("*"))
        for _ in range(2):
            again = babyllama_train(run, "--resume", cwd=tmp_path)
            assert again.returncode == 2 and "no space left" in again.stderr.strip().splitlines()[-1], again.stderr
        # Retries leave nothing behind: the same files, the same intact checkpoint.
        assert sorted(p.relative_to(disk) for p in disk.rglob("*") if "train.log" not in p.name) == \
            [f for f in files_after_first if "train.log" not in f.name]
        assert RunDir(run).latest_checkpoint() == latest and checkpoint_problem(latest.path) is None

        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        full = babyllama_train(run, "--resume", cwd=tmp_path)
        assert full.returncode == 2, full.stdout + full.stderr
        assert full.stderr.strip().splitlines()[-1] == (f"babyllama train: error: No space left on device writing "
                                                        f"{run / 'config.json'}; free some space and run it again")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_train_refuses_a_token_id_beyond_the_vocabulary_anywhere_in_the_file(tmp_path, token_file):
    damaged = tmp_path / "damaged.bin"
    shutil.copy(token_file, damaged)
    shutil.copy(token_file.with_name(token_file.name + ".json"), tmp_path / "damaged.bin.json")
    tokens = np.memmap(damaged, dtype=np.uint16, mode="r+")
    position = tokens.size - 3  # the last window's tail, which a short run never draws
    tokens[position] = 4000
    tokens.flush()
    del tokens
    with pytest.raises(UserError, match=f"token id 4,000 at position {position:,} is outside the vocabulary"):
        planning.plan_training(parse("--run", str(tmp_path / "r"), "--data", str(damaged), *SMALL_MODEL), world_size=1)


@pytest.mark.slow
def test_runs_stop_while_the_run_compiles_stops_it_and_does_not_fail_it(tmp_path, token_file):
    # `babyllama runs stop` (and the app) signal a detached run's whole process group, where the kernel
    # compiler's server lives too; it used to die of it, and the trainer failed with "Response is empty".
    run = RunDir(tmp_path / "runs" / "group")
    launch_detached(run, ["--data", str(token_file), *SMALL_MODEL, "--max_steps", "50"], cwd=tmp_path,
                    env={"GLOG_v": "3", "XDG_CACHE_HOME": str(tmp_path / "cold-cache")})

    def compiler_started() -> bool:
        trainer = run.read_status().get("pid")
        return bool(trainer) and psutil.pid_exists(trainer) and any(
            "kernel_build_server" in " ".join(child.cmdline()) for child in psutil.Process(trainer).children())

    wait_for(compiler_started, "the kernel compiler to start", log=run.log_path)
    report = stop_run(run, wait=True, timeout=WAIT_S)
    status = run.read_status()
    assert report.state == status["state"] == "stopped", (status, tail(run.log_path.read_text(encoding="utf-8")))
    assert "SIGTERM" in status["error"]


@pytest.mark.slow
def test_a_trainer_whose_terminal_reader_went_away_trains_on_and_logs_everything(tmp_path, token_file):
    run = tmp_path / "runs" / "headless"
    # `babyllama train ... | head -3`: the reader closes the pipe after three lines.
    trainer = subprocess.Popen(
        f"{shlex.quote(sys.executable)} -m babyllama train --run {shlex.quote(str(run))} --data "
        f"{shlex.quote(str(token_file))} {' '.join(SMALL_MODEL)} --max_steps 6 2>&1 | head -3",
        shell=True, cwd=tmp_path, env=trainer_env(), stdout=subprocess.PIPE, text=True)
    shown = communicate(trainer)
    assert len(shown.splitlines()) == 3
    wait_for(lambda: RunDir(run).state().state not in ("starting", "running", "stopping"), "the run to end",
             log=run / "train.log")
    assert RunDir(run).read_status()["state"] == "finished"
    assert "finished 6 steps" in (run / "train.log").read_text(encoding="utf-8")


def test_the_last_line_stays_last_when_the_log_fills_on_it():
    # /dev/full takes the write and refuses the flush with ENOSPC, as a disk that fills on the
    # trainer's last line, its error, does.
    terminal = io.StringIO()
    tee = train_command._Tee(terminal, open("/dev/full", "a", encoding="utf-8"))
    tee.write("babyllama train: error: no space left for the checkpoint\n")
    assert terminal.getvalue().splitlines() == [
        "babyllama train: No space left on device: stopped copying the output to train.log",
        "babyllama train: error: no space left for the checkpoint",
    ]
    assert tee.log is None
