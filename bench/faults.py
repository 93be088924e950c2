"""Fault injection for `babyllama train` and `babyllama prepare`: kill -9, SIGTERM, a full disk, a peer killed mid-compile.

    python bench/faults.py [--seed 0] [--kills 20] [--terms 10] [--concurrent 2] [--max-steps 48]
                           [--quick] [--no-disk] [--work DIR] [--keep]

What the trainer promises (babyllama/train.py, stop_guard.py, kernel_cache.py, runs/), and
how each promise is put to the test here, on a tiny model (dim 32, 2 layers, 64-token context)
of `--max-steps` steps with a checkpoint every 2 steps and an evaluation and a sample every 4:

1. reference: one uninterrupted run on an empty kernel cache, saving every step and keeping all
   checkpoints: its losses are what every other run must reproduce bit for bit, and its
   checkpoints what every checkpoint of the same step must equal byte for byte. Then the same
   run as the trials on the now warm cache: its losses must be the reference's (an uninterrupted
   run is deterministic), and its duration is what the trials' moments are drawn over.
2. kill -9 at random moments: a new run is sent SIGKILL after a delay drawn uniformly over that
   duration (stratified: one draw in each of N equal slices, in random order), so the kills fall
   on start-up, compile, steps, evaluation, sampling and checkpoint writes in proportion to the
   time each takes (start-up and compile take most of a short run: a larger --max-steps moves
   more of them into the loop); the phase the log showed last is recorded. The latest checkpoint
   must then be complete and equal to the reference's of its step, `--resume` must finish (or
   the first command again, when the kill came before the run directory existed), and every
   train loss after the last resume row must equal the reference's.
3. SIGTERM at random moments (same draw): the time from the signal to `stopping` in status.json
   (or an end state, when the run ended first) and to the process's exit are measured; the
   final state must be `stopped` or `finished`, a trainer that stopped by itself after step k
   must have saved step k's checkpoint, and `--resume` must finish with identical losses.
   A process signalled before it installed its handler dies at once and leaves no run: that
   counts as stopped, and the run is started again with the same command.
4. a full disk (root only: a small tmpfs): the run directory on a tmpfs with room for two
   checkpoints, so the third one's write fails; then `--resume` twice more (the same failure);
   then the tmpfs filled to 0 bytes free and `--resume` three times; then `prepare` writing its
   .bin onto a tmpfs smaller than it (three times; the second and third resume the first's
   partial file). Each failure must be one line on stderr (the last, "babyllama CMD: error: ..."),
   with a non-zero exit; the latest checkpoint must stay complete and equal to the reference's of
   its step; and no retry may leave a file that the first failure did not, nor more bytes outside
   the run's own logs (train.log, metrics.jsonl, status.json grow by a few lines per attempt).
5. concurrent cold-cache compiles: two trainers of the same shape start together with a fresh,
   empty XDG_CACHE_HOME; one is sent SIGKILL 2-4 s after its `data:` line; the other must finish
   (within a timeout: a hang is a failure) with the reference's losses.

Every wait is bounded. At the end one line per kind, then a verdict; the exit status is 1 when
any line is below 100%. Each failure prints its run directory with the tail of its train.log
and stderr after its trial's line, and the bench goes on. Helper processes (the stop guard,
MindSpore's kernel-build server) still there 10 s after their trainer ended are killed and
reported as notes. The work folder (data, runs, caches) is
removed when everything passed, kept otherwise (or with --keep).

Needs: the babyllama package importable from this checkout (the bench sets PYTHONPATH to it), the
sample corpus (`babyllama sample` caches its wheel in $XDG_CACHE_HOME/babyllama: the bench runs it
with the caller's cache), root for the tmpfs mounts. `--quick` (under 3 minutes on 2 cores) is what
tests/test_faults.py runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
POLL_S = 0.01
# status.json must say `stopping` "at once"; the process must end within 30 s (the guard's 25 s and a margin).
STOPPING_LIMIT_S = 1.5
EXIT_LIMIT_S = 30.0
# A trainer that has not ended this long after it was signalled is hung.
SIGNALLED_TIMEOUT_S = 60.0
CHECKPOINT_WEIGHTS = ("model.safetensors", "optimizer.safetensors")
LOGS = ("train.log", "metrics.jsonl", "status.json", ".status.lock")
KIB = 1024
PAGE = 4096


# ---------------------------------------------------------------------------------------
# The training shape


@dataclass
class Shape:
    max_steps: int
    seed: int
    save_interval: int = 2
    eval_interval: int = 4

    def flags(self) -> list[str]:
        return ["--preset", "tiny", "--dim", "32", "--n_layers", "2", "--n_heads", "2", "--max_seq_len", "64",
                "--batch_size", "4", "--log_interval", "1", "--warmup_iters", "2", "--max_steps", str(self.max_steps),
                "--save_interval", str(self.save_interval), "--eval_interval", str(self.eval_interval),
                "--eval_iters", "4", "--sample_tokens", "16", "--seed", str(self.seed)]


# ---------------------------------------------------------------------------------------
# Reading a run directory


def read_status(run: Path) -> dict | None:
    try:
        status = json.loads((run / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def state_of(run: Path) -> str | None:
    return (read_status(run) or {}).get("state")


def metrics_rows(run: Path, offset: int = 0) -> list[dict]:
    """Rows of metrics.jsonl from byte `offset` on; a line cut short by a kill is skipped."""
    try:
        with open(run / "metrics.jsonl", "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_lines(run: Path) -> list[str]:
    """train.log's lines of the latest attempt (after its last `===` header)."""
    try:
        text = (run / "train.log").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("=== "):
            return lines[i + 1:]
    return lines


def tail(path: Path, n: int = 15) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except FileNotFoundError:
        return [f"({path} does not exist)"]


STEP_ROW = re.compile(r"step (\d+)/(\d+)\s")
STEP_EVENT = re.compile(r"step (\d+): (validation loss|sample:|saved)")
PHASES = ("start-up", "compile", "steps", "evaluation", "sampling", "checkpoint write", "end")


def phase_of(lines: list[str], shape: Shape) -> str:
    """What the trainer was doing, judged by the last line its log showed.

    start-up: Python, planning, MindSpore's import, the model's build and (new runs) the step-0
    evaluation's compile; compile: the first step's graph compile; then per step the line that
    follows says what comes next (an evaluation, its sample, a checkpoint, or the next step).
    """
    meaningful = [line for line in lines if line.strip() and not line.startswith("babyllama train: SIG")]
    if not meaningful:
        return "start-up"
    last = meaningful[-1]
    if last.startswith(("rank ", "finished ", "stopped at step")):
        return "end"
    match = STEP_EVENT.match(last)
    if match:
        step, event = int(match.group(1)), match.group(2)
        if event == "validation loss":
            return "sampling"
        if event == "sample:":
            if step == 0:
                return "compile"
            return "checkpoint write" if step % shape.save_interval == 0 or step == shape.max_steps else "steps"
        return "end" if step == shape.max_steps else "steps"
    match = STEP_ROW.match(last)
    if match:
        step = int(match.group(1))
        if step % shape.eval_interval == 0 or step == shape.max_steps:
            return "evaluation"
        return "checkpoint write" if step % shape.save_interval == 0 else "steps"
    if last.startswith("first step took"):
        return "steps"
    if last.startswith("resuming from"):
        return "compile"
    return "start-up"


def snapshot(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder` (hidden ones included)."""
    files = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files[str(path.relative_to(folder))] = path.stat().st_size
    return files


def file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def latest_checkpoint(run: Path):
    from babyllama.runs import RunDir

    return RunDir(run).latest_checkpoint()


# ---------------------------------------------------------------------------------------
# Processes


class Proc:
    """One babyllama command in its own session, its output in files."""

    def __init__(self, bench: Bench, argv: list[str], name: str, cache: Path | None = None):
        self.name = name
        self.argv = argv
        self.out = bench.logs / f"{name}.out"
        self.err = bench.logs / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.started = time.monotonic()
            self.popen = subprocess.Popen([PYTHON, "-m", "babyllama", *argv], cwd=bench.work,
                                          env=bench.env(cache), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          start_new_session=True)
        self.pid = self.popen.pid
        self.ended_at: float | None = None
        self.helpers_lingered: float | None = None
        bench.processes.append(self)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def running(self) -> bool:
        if self.popen.poll() is None:
            return True
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return False

    def wait(self, timeout: float) -> bool:
        """True when it ended within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def session(self) -> list[psutil.Process]:
        """Live processes of its session (the trainer, its guard, MindSpore's compile server)."""
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self.pid and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return found

    def end_session(self, grace: float = 10.0) -> list[str]:
        """After the command ended: wait `grace` s for its helpers to go, then kill what is left."""
        began = time.monotonic()
        left = self.session()
        while left and time.monotonic() < began + grace:
            time.sleep(0.1)
            left = self.session()
        self.helpers_lingered = time.monotonic() - began
        described = []
        for process in left:
            try:
                described.append(f"{process.pid} {' '.join(process.cmdline())[:120]} (still there {grace:.0f} s "
                                 "after the trainer ended; killed)")
                process.kill()
            except psutil.Error:
                pass
        return described

    def stderr_lines(self) -> list[str]:
        return [line for line in self.err.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class Kind:
    """One kind of fault: its trials, and per check how many of the trials it applies to passed it."""

    title: str
    tried: int = 0
    checks: dict[str, list[int]] = field(default_factory=dict)  # name -> [passed, applied]
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    line: str = ""
    detail: str = ""

    def count(self, name: str, ok: bool) -> bool:
        passed = self.checks.setdefault(name, [0, 0])
        passed[0] += bool(ok)
        passed[1] += 1
        return ok

    def ok(self, name: str) -> int:
        return self.checks.get(name, [0, 0])[0]

    def of(self, name: str) -> str:
        passed, applied = self.checks.get(name, [0, 0])
        return f"{passed}/{applied}"

    def value(self, name: str, v: float) -> None:
        self.values.setdefault(name, []).append(v)

    def passed(self) -> bool:
        return self.skipped is None and self.tried > 0 and all(p == a for p, a in self.checks.values())


class Failure(Exception):
    pass


# ---------------------------------------------------------------------------------------
# The bench


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(args.work).absolute() if args.work else Path(tempfile.mkdtemp(prefix="babyllama-faults-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.runs = self.work / "runs"
        self.mounts = self.work / "mnt"
        for folder in (self.logs, self.runs, self.mounts):
            folder.mkdir(exist_ok=True)
        self.cache = self.work / "cache"
        self.shape = Shape(max_steps=args.max_steps, seed=args.seed)
        self.processes: list[Proc] = []
        self.failures = 0
        self.pending: list[str] = []
        self.data: Path | None = None
        self.reference: dict = {}

    def env(self, cache: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "BABYLLAMA_LAUNCH_ID"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["XDG_CACHE_HOME"] = str(cache or self.cache)
        return env

    def say(self, line: str = "") -> None:
        print(line, flush=True)

    def timeout(self) -> float:
        """How long a whole trainer may take before it counts as hung."""
        return 120.0 + 4 * self.reference.get("duration", 60.0)

    def fail(self, what: str, run: Path | None = None, proc: Proc | None = None) -> None:
        """Note a failure with what there is to investigate (as it is now); printed by `report`."""
        self.failures += 1
        lines = [f"    FAILED: {what}"]
        if run is not None:
            lines.append(f"    run directory: {run}")
            status = read_status(run)
            if status is not None:
                lines.append(f"    status.json: state {status.get('state')}, step {status.get('step')}, "
                             f"error {status.get('error')!r}")
            lines.append(f"    tail of {run / 'train.log'}:")
            lines += [f"      | {line}" for line in tail(run / "train.log")]
        if proc is not None:
            lines.append(f"    `babyllama {' '.join(proc.argv)}` exit {proc.returncode}; "
                         f"tail of its stderr ({proc.err}):")
            lines += [f"      | {line}" for line in tail(proc.err, 8)]
        self.pending += lines

    def report(self, line: str | None = None) -> None:
        """A trial's line, then the failures noted during it."""
        if line is not None:
            self.say(line)
        for pending in self.pending:
            self.say(pending)
        self.pending = []

    def end_all(self) -> None:
        for proc in self.processes:
            for process in proc.session():
                with contextlib.suppress(psutil.Error):
                    process.kill()

    # -- set-up

    def prepare_data(self) -> None:
        data = self.work / "data"
        user_env = {**os.environ, "PYTHONPATH": self.env()["PYTHONPATH"]}

        def run(*argv: str) -> None:
            done = subprocess.run([PYTHON, "-m", "babyllama", *argv], cwd=self.work, env=user_env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                raise SystemExit(f"babyllama {' '.join(argv)} failed:\n{done.stderr}")

        run("sample", "--out", str(data / "sample"))
        run("tokenizer", "train", "--out", str(self.work / "tok"), "--vocab-size", "2000", str(data / "sample"))
        run("prepare", "--tokenizer", str(self.work / "tok"), "--format", "c4", "--out", str(data / "s.bin"),
            str(data / "sample"))
        self.data = data / "s.bin"

    def train_new(self, run: Path, name: str, cache: Path | None = None, extra: tuple[str, ...] = ()) -> Proc:
        return Proc(self, ["train", "--run", str(run), "--data", str(self.data), *self.shape.flags(), *extra],
                    name, cache)

    def train_resume(self, run: Path, name: str) -> Proc:
        return Proc(self, ["train", "--run", str(run), "--resume"], name)

    # -- checks shared by the kinds

    def losses_identical(self, run: Path, offset: int = 0) -> str | None:
        """Why the train losses the last process wrote differ from the reference's, or None.

        The rows after the last resume row (all rows from `offset` when it wrote none: a
        resume from step 0) must be steps k+1 .. max_steps with the reference's losses.
        """
        rows = metrics_rows(run, offset)
        resumes = [i for i, row in enumerate(rows) if row.get("kind") == "resume"]
        start = rows[resumes[-1]].get("step", 0) if resumes else 0
        after = rows[resumes[-1] + 1:] if resumes else rows
        train = [row for row in after if row.get("kind") == "train"]
        steps = [row.get("step") for row in train]
        expected = list(range(start + 1, self.shape.max_steps + 1))
        if steps != expected:
            return f"train rows after the resume at step {start} are steps {steps}, expected {expected}"
        reference = self.reference["losses"]
        for row in train:
            if row.get("loss") != reference[row["step"]]:
                return (f"step {row['step']}: loss {row.get('loss')!r}, the reference's {reference[row['step']]!r} "
                        f"(resumed at step {start})")
        return None

    def checkpoint_problem(self, run: Path) -> tuple[str | None, object]:
        """Why the run's latest checkpoint is not a complete copy of the reference's of its step, or None."""
        from safetensors.numpy import load_file

        from babyllama.runs import checkpoint_problem

        latest = latest_checkpoint(run)
        if latest is None:
            return None, None
        problem = checkpoint_problem(latest.path)
        if problem:
            return problem, latest
        for name in CHECKPOINT_WEIGHTS:
            try:
                load_file(str(latest.path / name))
            except Exception as e:  # noqa: BLE001 - any failure to load is the finding
                return f"{latest.path / name} does not load: {e}", latest
            reference = self.reference["run"] / "checkpoints" / latest.path.name / name
            if not reference.exists():
                return f"the reference has no {reference}", latest
            if (latest.path / name).read_bytes() != reference.read_bytes():
                return f"{latest.path / name} differs from the reference's {reference}", latest
        state = json.loads((latest.path / "state.json").read_text(encoding="utf-8"))
        if state.get("step") != latest.step:
            return f"{latest.path}/state.json says step {state.get('step')}", latest
        return None, latest

    def leftovers(self, run: Path) -> list[str]:
        """Unfinished checkpoint folders and temporary files anywhere in the run."""
        return sorted(str(p.relative_to(run)) for p in run.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)

    def note_orphans(self, kind: Kind, proc: Proc) -> None:
        orphans = proc.end_session()
        if orphans:
            kind.notes.append(f"{proc.name}: processes left after the trainer ended: {'; '.join(orphans)}")

    # -- 1. reference

    def run_reference(self) -> None:
        """The reference on a cold kernel cache (a checkpoint every step, all kept), then the
        same run as the trials on the warm cache: its losses must be the reference's, and its
        duration and phases are what the trials' moments are drawn over."""
        run = self.runs / "reference"
        proc = self.train_new(run, "reference", extra=("--save_interval", "1", "--keep_checkpoints", "1000"))
        ended = proc.wait(900)
        proc.end_session(0 if not ended else 3.0)
        if proc.returncode != 0 or state_of(run) != "finished":
            self.fail("the reference run did not finish", run, proc)
            self.report()
            raise SystemExit(1)
        losses = {row["step"]: row["loss"] for row in metrics_rows(run) if row.get("kind") == "train"}
        if sorted(losses) != list(range(1, self.shape.max_steps + 1)):
            raise SystemExit(f"the reference run wrote train rows for steps {sorted(losses)}")
        cold = proc.ended_at - proc.started
        self.reference = {"run": run, "losses": losses, "duration": cold}

        run = self.runs / "reference-warm"
        proc = self.train_new(run, "reference-warm")
        timeline: list[tuple[float, str]] = []
        deadline = time.monotonic() + self.timeout()
        while proc.running() and time.monotonic() < deadline:
            phase = phase_of(log_lines(run), self.shape)
            if not timeline or timeline[-1][1] != phase:
                timeline.append((time.monotonic() - proc.started, phase))
            time.sleep(0.02)
        ended = proc.wait(0)
        proc.end_session(0 if not ended else 3.0)
        mismatch = self.losses_identical(run) if proc.returncode == 0 else "did not finish"
        if mismatch:
            self.fail(f"an uninterrupted run on the warm cache differs from the reference: {mismatch}", run, proc)
            self.report()
            raise SystemExit(1)
        duration = proc.ended_at - proc.started
        spent: dict[str, float] = {}
        for (at, phase), (until, _) in zip(timeline, timeline[1:] + [(duration, "")]):
            spent[phase] = spent.get(phase, 0.0) + until - at
        self.reference.update(duration=duration, spent=spent)
        shares = ", ".join(f"{p} {spent[p]:.1f} s" for p in PHASES if p in spent)
        self.reference_line = (f"reference run: {self.shape.max_steps} steps in {cold:.1f} s on a cold kernel cache; "
                               f"again on the warm cache in {duration:.1f} s with identical losses ({shares}, "
                               "as its log showed them)")
        self.say(self.reference_line)

    def delays(self, count: int) -> list[float]:
        """`count` moments uniform over the reference's duration, one in each of `count` equal slices."""
        duration = self.reference["duration"]
        moments = [(i + self.rng.random()) * duration / count for i in range(count)]
        self.rng.shuffle(moments)
        return moments

    def recover(self, run: Path, name: str) -> tuple[Proc, int, bool]:
        """--resume, or the first command again when the run was never created; (process, metrics offset, restarted)."""
        offset = file_size(run / "metrics.jsonl")
        if (run / "config.json").exists():
            return self.train_resume(run, name), offset, False
        return self.train_new(run, name), offset, True

    # -- 2. kill -9

    def kills(self, count: int) -> Kind:
        kind = Kind("kill -9 at random moments")
        phases: dict[str, int] = {}
        restarted = 0
        for i, delay in enumerate(self.delays(count), 1):
            kind.tried += 1
            run = self.runs / f"kill-{i:02d}"
            proc = self.train_new(run, f"kill-{i:02d}")
            label = f"  kill {i:2d}/{count} at {delay:5.2f} s"
            if proc.wait(delay):
                phase = "after the end"
            else:
                phase = phase_of(log_lines(run), self.shape)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            phases[phase] = phases.get(phase, 0) + 1
            self.note_orphans(kind, proc)
            problem, latest = self.checkpoint_problem(run)
            intact = kind.count("checkpoint intact", problem is None)
            where = latest.path.name if latest else "no checkpoint"
            if not intact:
                self.fail(f"after kill -9 the latest checkpoint is broken: {problem}", run)
            if phase == "after the end" or state_of(run) == "finished":
                recovery, offset = None, 0
            else:
                recovery, offset, again = self.recover(run, f"kill-{i:02d}-resume")
                restarted += again
            survived = recovery is None or (recovery.wait(self.timeout()) and recovery.returncode == 0)
            if recovery is not None and recovery.running():
                recovery.end_session(0)
            if recovery is not None:
                self.note_orphans(kind, recovery)
            survived = kind.count("survived", survived and state_of(run) == "finished")
            mismatch = self.losses_identical(run, offset) if survived else "did not finish"
            kind.count("losses identical", mismatch is None)
            how = (("ended before the kill" if phase == "after the end" else "had finished") if recovery is None else
                   f"{'restarted (no run yet)' if recovery.argv[-1] != '--resume' else 'resumed from ' + where}"
                   f" in {(recovery.ended_at or time.monotonic()) - recovery.started:.1f} s")
            if not survived:
                self.fail("the run did not finish after kill -9", run, recovery or proc)
            elif mismatch:
                self.fail(mismatch, run)
            self.report(f"{label} ({phase}): {how}: {'finished' if survived else 'DID NOT FINISH'}, "
                        f"{'losses identical' if mismatch is None else 'LOSSES DIFFER'}")
        kind.line = (f"{kind.title}: tried {kind.tried}, survived {kind.ok('survived')} "
                     f"({percent(kind.ok('survived'), kind.tried)}), checkpoint intact "
                     f"{kind.of('checkpoint intact')}, losses identical {kind.of('losses identical')}")
        kind.detail = ("  phases at the kill: " + ", ".join(f"{p} {phases[p]}" for p in (*PHASES, "after the end")
                                                            if p in phases)
                       + (f"; {restarted} killed before the run directory existed (started again)" if restarted else ""))
        return kind

    # -- 3. SIGTERM

    def terms(self, count: int) -> Kind:
        kind = Kind("SIGTERM at random moments")
        phases: dict[str, int] = {}
        finished_meanwhile = early = guard_kills = 0
        for i, delay in enumerate(self.delays(count), 1):
            kind.tried += 1
            run = self.runs / f"term-{i:02d}"
            proc = self.train_new(run, f"term-{i:02d}")
            label = f"  term {i:2d}/{count} at {delay:5.2f} s"
            proc.wait(delay)
            phase = "after the end" if not proc.running() else phase_of(log_lines(run), self.shape)
            phases[phase] = phases.get(phase, 0) + 1
            signalled = time.monotonic()
            if proc.running():
                os.kill(proc.pid, signal.SIGTERM)
            stopping_after = None
            states = []
            while time.monotonic() - signalled < SIGNALLED_TIMEOUT_S:
                state = state_of(run)
                if not states or states[-1] != state:
                    states.append(state)
                if stopping_after is None and state in ("stopping", "stopped", "finished"):
                    stopping_after = time.monotonic() - signalled
                if not proc.running():
                    break
                time.sleep(POLL_S)
            hung = proc.running()
            if hung:
                proc.end_session(0)
                proc.wait(10)
            exited_after = max(0.0, (proc.ended_at or time.monotonic()) - signalled)
            self.note_orphans(kind, proc)
            final = state_of(run)
            final_step = (read_status(run) or {}).get("step")
            never_started = proc.returncode == -signal.SIGTERM and not (run / "config.json").exists()
            if never_started:
                early += 1
                stopping_after = stopping_after if stopping_after is not None else exited_after
            if stopping_after is not None:
                kind.value("stopping", stopping_after)
            kind.value("exited", exited_after)
            kind.count("stopping in time", stopping_after is not None and stopping_after <= STOPPING_LIMIT_S)
            kind.count("exited in time", not hung and exited_after <= EXIT_LIMIT_S)
            stopped = kind.count("stopped", never_started or final in ("stopped", "finished"))
            finished_meanwhile += final == "finished"
            guard_kills += proc.returncode == -signal.SIGKILL
            problem, latest = self.checkpoint_problem(run)
            if problem:
                self.fail(f"after SIGTERM: {problem}", run)
            if final == "stopped" and proc.returncode == 0 and final_step:
                # The trainer stopped by itself after a step: that step's checkpoint was saved.
                saved = latest is not None and latest.step == final_step
                kind.count("checkpoint at the stop", saved)
                if not saved:
                    self.fail(f"stopped at step {final_step} but the latest checkpoint is "
                              f"{latest.path.name if latest else None}", run, proc)
            recovery = None
            offset = 0
            if stopped and final != "finished":
                recovery, offset, _ = self.recover(run, f"term-{i:02d}-resume")
                recovery.wait(self.timeout())
                if recovery.running():
                    recovery.end_session(0)
                self.note_orphans(kind, recovery)
            resumed = kind.count("resumed", problem is None and state_of(run) == "finished"
                                 and (recovery is None or recovery.returncode == 0))
            mismatch = self.losses_identical(run, offset) if resumed else "did not finish"
            kind.count("losses identical", mismatch is None)
            stop_text = "never" if stopping_after is None else f"{stopping_after:.2f} s"
            if stopping_after is None or stopping_after > STOPPING_LIMIT_S:
                self.fail(f"status.json said stopping only after {stop_text} (limit {STOPPING_LIMIT_S} s); "
                          f"states seen: {states}", run, proc)
            if hung or exited_after > EXIT_LIMIT_S:
                self.fail(f"the process ended {exited_after:.1f} s after SIGTERM (limit {EXIT_LIMIT_S:.0f} s)"
                          + (" only when the bench killed it" if hung else ""), run, proc)
            if not stopped:
                self.fail(f"final state {final} after SIGTERM", run, proc)
            elif not resumed:
                self.fail("the run did not finish after SIGTERM and --resume", run, recovery or proc)
            elif mismatch:
                self.fail(mismatch, run)
            self.report(f"{label} ({phase}): stopping after {stop_text}, exit after {exited_after:.2f} s "
                     f"(code {proc.returncode}), states {' > '.join(str(s) for s in states)}; "
                     + ("no run yet; started again: " if never_started else
                        f"{final} at step {final_step}; "
                        f"{'resumed' if recovery is not None and recovery.argv[-1] == '--resume' else 'no resume needed'}: ")
                     + f"{'finished' if resumed else 'DID NOT FINISH'}, "
                     + f"{'losses identical' if mismatch is None else 'LOSSES DIFFER'}")
        stopping, exited = kind.values.get("stopping", [float("nan")]), kind.values.get("exited", [float("nan")])
        extra = [f"{n} {what}" for n, what in ((finished_meanwhile, "finished before stopping"),
                                               (early, "signalled before the run existed"),
                                               (guard_kills, "ended by the guard"))
                 if n]
        kind.line = (f"{kind.title}: tried {kind.tried}, stopping within {max(stopping):.2f} s (max; "
                     f"{kind.of('stopping in time')} within {STOPPING_LIMIT_S} s), exited within "
                     f"{max(exited):.2f} s (max; {kind.of('exited in time')} within "
                     f"{EXIT_LIMIT_S:.0f} s), stopped {kind.ok('stopped')} (checkpoint at the stop "
                     f"{kind.of('checkpoint at the stop')}), resumed {kind.ok('resumed')}, "
                     f"losses identical {kind.ok('losses identical')}"
                     + (f" ({', '.join(extra)})" if extra else ""))
        kind.detail = "  phases at the signal: " + ", ".join(
            f"{p} {phases[p]}" for p in (*PHASES, "after the end") if p in phases)
        return kind

    # -- 4. a full disk

    @contextlib.contextmanager
    def tmpfs(self, name: str, size: int):
        mount = self.mounts / name
        mount.mkdir(parents=True, exist_ok=True)
        kib = -(-size // KIB)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise Failure(f"cannot mount a tmpfs on {mount}: {done.stderr.strip()}")
        try:
            yield mount
        finally:
            for _ in range(20):
                if subprocess.run(["umount", str(mount)], capture_output=True, timeout=30, check=False).returncode == 0:
                    break
                time.sleep(0.5)
            else:
                self.say(f"    could not unmount {mount}: unmount it by hand (umount {mount})")

    def one_error_line(self, proc: Proc, command: str) -> str | None:
        """Why the process's failure is not one error line on stderr, or None."""
        lines = proc.stderr_lines()
        if proc.returncode in (0, None):
            return f"exit code {proc.returncode}"
        if not lines or not lines[-1].startswith(f"babyllama {command}: error:"):
            return f"its last stderr line is {lines[-1] if lines else '(none)'!r}"
        errors = [line for line in lines[:-1] if re.search(r"error|Error|CRITICAL|Traceback|Failed|failed", line)]
        if errors:
            return f"{len(errors)} more error line(s) on stderr before it, first {errors[0][:200]!r}"
        return None

    def attempt(self, kind: Kind, proc: Proc, command: str, label: str, run: Path,
                first: dict | None, watched: Path | None) -> dict:
        """One failing attempt on a full disk: its checks; returns the files it left (for the next attempt)."""
        kind.tried += 1
        ended = proc.wait(self.timeout())
        if not ended:
            proc.end_session(0)
            proc.wait(10)
        self.note_orphans(kind, proc)
        why = "it hung (ended by the bench)" if not ended else self.one_error_line(proc, command)
        kind.count("one error line", why is None)
        kind.count("non-zero exit", proc.returncode not in (0, None))
        problems = []
        if watched is not None:
            problem, latest = self.checkpoint_problem(run)
            if latest is None:
                problem = "no checkpoint"
            elif first is not None and file_digests(latest.path) != first["digests"]:
                problem = f"{latest.path} changed since the first failure"
            kind.count("checkpoint intact", problem is None)
            if problem:
                problems.append(problem)
        left = self.leftovers(run)
        kind.count("no temporary files", not left)
        if left:
            problems.append(f"temporary files left: {left}")
        files = snapshot(run)
        outside_logs = {k: v for k, v in files.items() if k not in LOGS}
        grew = []
        if first is not None:
            new = sorted(set(files) - set(first["files"]))
            if new:
                grew.append(f"new files {new}")
            before, after = sum(first["outside_logs"].values()), sum(outside_logs.values())
            if after > before:
                grew.append(f"{after - before:+,} bytes outside the logs ({before:,} -> {after:,})")
            kind.count("no growth on retry", not grew)
            problems += grew
        log_bytes = sum(v for k, v in files.items() if k in LOGS)
        first_log = sum(v for k, v in first["files"].items() if k in LOGS) if first else log_bytes
        growth = "" if first is None else f", logs {log_bytes - first_log:+,} bytes"
        self.say(f"  {label}: exit {proc.returncode}, {len(files)} files, {sum(outside_logs.values()):,} bytes "
                 f"outside the logs{growth}: {'ok' if why is None and not problems else 'FAILED'}")
        if why:
            self.fail(f"{label}: not one error line: {why}", run if watched else None, proc)
        if problems:
            self.fail(f"{label}: {'; '.join(problems)}", run if watched else None, proc)
        self.report()
        return {"files": files, "outside_logs": outside_logs,
                "digests": file_digests(latest_checkpoint(run).path) if watched and latest_checkpoint(run) else None}

    def disk_line(self, kind: Kind, names: tuple[str, ...]) -> str:
        if kind.skipped:
            return f"{kind.title}: skipped ({kind.skipped})"
        return f"{kind.title}: tried {kind.tried}, " + ", ".join(f"{name} {kind.of(name)}" for name in names)

    def disk_checkpoints(self) -> tuple[Kind, Kind]:
        """A run whose third checkpoint does not fit, resumed twice; then --resume at 0 bytes free, three times."""
        writes = Kind("full disk writing a checkpoint")
        at_zero = Kind("full disk at --resume (0 bytes free)")
        reference = self.reference["run"] / "checkpoints"
        checkpoint = sum(-(-size // PAGE) * PAGE for size in snapshot(reference / "step_0000002").values())
        # Two checkpoints, the run's files (config, status, metrics, log: a few pages) and half a checkpoint.
        size = 2 * checkpoint + 32 * PAGE + checkpoint // 2
        with self.tmpfs("checkpoints", size) as mount:
            run = mount / "run"
            first = None
            for attempt in range(3):
                name = f"disk-write-{attempt + 1}"
                proc = self.train_new(run, name) if attempt == 0 else self.train_resume(run, name)
                label = ("checkpoint write on a full disk" if attempt == 0 else f"--resume, retry {attempt}")
                result = self.attempt(writes, proc, "train", label, run, first, watched=run)
                if first is None:
                    first = result
                    latest = latest_checkpoint(run)
                    self.say(f"    tmpfs {size // KIB:,} KiB, checkpoints of {checkpoint // KIB:,} KiB: "
                             f"latest {latest.path.name if latest else None}, status "
                             f"{state_of(run)}")
            filler = mount / "filler"
            with open(filler, "wb", buffering=0) as f:
                block = b"\0" * (64 * KIB)
                with contextlib.suppress(OSError):
                    while True:
                        f.write(block)
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * PAGE)
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            self.say(f"    filled the tmpfs: {free:,} bytes free")
            first = None
            for attempt in range(3):
                name = f"disk-zero-{attempt + 1}"
                label = "--resume at 0 bytes free" if attempt == 0 else f"--resume at 0 bytes free, retry {attempt}"
                result = self.attempt(at_zero, self.train_resume(run, name), "train", label, run, first, watched=run)
                first = first or result
        writes.line = self.disk_line(writes, ("one error line", "non-zero exit", "checkpoint intact",
                                              "no temporary files", "no growth on retry"))
        at_zero.line = self.disk_line(at_zero, ("one error line", "non-zero exit", "checkpoint intact",
                                                "no temporary files", "no growth on retry"))
        return writes, at_zero

    def disk_prepare(self) -> Kind:
        """prepare's .bin onto a tmpfs smaller than it: three inputs, so the first chunk fits and the second not."""
        kind = Kind("full disk in prepare")
        inputs = self.work / "data" / "triple"
        inputs.mkdir(exist_ok=True)
        for i in range(3):
            shutil.copy(self.work / "data" / "sample" / "sanguo.jsonl", inputs / f"part{i + 1}.jsonl")
        size = file_size(self.data) * 4 // 3
        with self.tmpfs("prepare", size) as mount:
            first = None
            for attempt in range(3):
                proc = Proc(self, ["prepare", "--tokenizer", str(self.work / "tok"), "--format", "c4",
                                   "--out", str(mount / "s.bin"), str(inputs)], f"disk-prepare-{attempt + 1}")
                label = "prepare onto a full disk" if attempt == 0 else f"prepare again, retry {attempt}"
                result = self.attempt(kind, proc, "prepare", label, mount, first, watched=None)
                finals = [name for name in ("s.bin", "s.bin.json") if (mount / name).exists()]
                kind.count("no .bin or manifest", not finals)
                if finals:
                    self.fail(f"{label}: {finals} exist after a failed prepare", None, proc)
                    self.report()
                if first is None:
                    first = result
                    self.say(f"    tmpfs {size // KIB:,} KiB: left {sorted(result['files'])} "
                             f"(a partial file and its journal are kept so the same command resumes)")
        kind.line = self.disk_line(kind, ("one error line", "non-zero exit", "no .bin or manifest",
                                          "no temporary files", "no growth on retry"))
        return kind

    # -- 5. two trainers on a cold cache, one killed mid-compile

    def concurrent(self, count: int) -> Kind:
        kind = Kind("concurrent cold-cache compiles")
        for i in range(1, count + 1):
            kind.tried += 1
            cache = self.work / f"cold-cache-{i}"
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir()
            runs = [self.runs / f"concurrent-{i}-{side}" for side in "ab"]
            procs = [self.train_new(run, f"concurrent-{i}-{side}", cache=cache) for run, side in zip(runs, "ab")]
            victim = self.rng.randrange(2)
            survivor = 1 - victim
            deadline = time.monotonic() + 120
            while (not any(line.startswith("data:") for line in log_lines(runs[victim]))
                   and procs[victim].running() and time.monotonic() < deadline):
                time.sleep(0.05)
            wait = self.rng.uniform(2.0, 4.0)
            procs[victim].wait(wait)
            phase = phase_of(log_lines(runs[victim]), self.shape)
            killed = procs[victim].running()
            own = list((cache / "babyllama").glob(f"mindspore-*-kernels/processes/*-{procs[victim].pid}"))
            names = {f.stem: f.suffix for f in own[0].glob("akg_kernel_meta/*")} if own else {}
            built = {f.stem for f in own[0].glob("akg_kernel_meta/*.so")} if own else set()
            compiling = len(set(names) - built)
            if killed:
                os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait(10)
            self.note_orphans(kind, procs[victim])
            workspaces = sorted(p.name for p in (cache / "babyllama").glob("mindspore-*-kernels/processes/*"))
            finished = procs[survivor].wait(self.timeout())
            seconds = (procs[survivor].ended_at or time.monotonic()) - procs[survivor].started
            if not finished:
                procs[survivor].end_session(0)
            self.note_orphans(kind, procs[survivor])
            ok = kind.count("survivor finished", finished and procs[survivor].returncode == 0
                            and state_of(runs[survivor]) == "finished")
            kind.value("seconds", seconds)
            mismatch = self.losses_identical(runs[survivor]) if ok else "did not finish"
            kind.count("losses identical", mismatch is None)
            if not killed:
                kind.notes.append(f"pair {i}: the victim ended before the kill")
            if not ok:
                self.fail("the survivor did not finish" + ("" if finished else " (hung: killed by the bench)"),
                          runs[survivor], procs[survivor])
            elif mismatch:
                self.fail(mismatch, runs[survivor])
            self.report(f"  pair {i}/{count}: {'a' if victim == 0 else 'b'} killed {wait:.1f} s after its data: line "
                     f"({phase if killed else 'it had ended'}; kernels in its workspace: {len(built)} built, "
                        f"{compiling} being compiled; "
                        f"{len(workspaces)} workspaces; its helpers gone {procs[victim].helpers_lingered:.1f} s "
                        "after it), the other "
                     f"{'finished' if ok else 'DID NOT FINISH'} in {seconds:.1f} s, "
                     f"{'losses identical' if mismatch is None else 'LOSSES DIFFER'}")
        kind.line = (f"{kind.title}: tried {kind.tried}, survivor finished {kind.ok('survivor finished')} "
                     f"({percent(kind.ok('survivor finished'), kind.tried)}) within "
                     f"{max(kind.values.get('seconds', [float('nan')])):.1f} s (max), losses identical "
                     f"{kind.of('losses identical')}")
        return kind


def percent(n: int, total: int) -> str:
    return f"{100 * n / total:.0f}%" if total else "n/a"


def not_asked(title: str) -> Kind:
    return Kind(title, skipped="none asked for", line=f"{title}: skipped (none asked for)")


def can_mount() -> str | None:
    """Why a tmpfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "not root: a tmpfs cannot be mounted"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="draws the moments and the victims; the trainers' seed")
    parser.add_argument("--kills", type=int, help="kill -9 trials (default 20; --quick 2)")
    parser.add_argument("--terms", type=int, help="SIGTERM trials (default 10; --quick 1)")
    parser.add_argument("--concurrent", type=int, help="pairs of cold-cache trainers (default 2; --quick 1)")
    parser.add_argument("--max-steps", type=int, help="steps of every run (default 48; --quick 12)")
    parser.add_argument("--quick", action="store_true", help="the short version (tests/test_faults.py)")
    parser.add_argument("--no-disk", action="store_true", help="leave out the full-disk checks")
    parser.add_argument("--work", help="work folder (default: a new one under $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder even when everything passed")
    args = parser.parse_args(argv)
    quick = args.quick
    args.kills = args.kills if args.kills is not None else (2 if quick else 20)
    args.terms = args.terms if args.terms is not None else (1 if quick else 10)
    args.concurrent = args.concurrent if args.concurrent is not None else (1 if quick else 2)
    args.max_steps = args.max_steps or (12 if quick else 48)

    started = time.monotonic()
    bench = Bench(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    print(f"babyllama fault injection: seed {args.seed}, {args.kills} kills, {args.terms} SIGTERMs, "
          f"{args.concurrent} concurrent pairs, {args.max_steps} steps a run; work folder {bench.work}", flush=True)
    kinds: list[Kind] = []
    try:
        bench.prepare_data()
        bench.run_reference()
        kinds.append(bench.kills(args.kills) if args.kills else not_asked("kill -9 at random moments"))
        kinds.append(bench.terms(args.terms) if args.terms else not_asked("SIGTERM at random moments"))
        no_mount = "--no-disk given" if args.no_disk else can_mount()
        if no_mount:
            for title in ("full disk writing a checkpoint", "full disk at --resume (0 bytes free)",
                          "full disk in prepare"):
                kind = Kind(title, skipped=no_mount)
                kind.line = f"{title}: skipped ({no_mount})"
                kinds.append(kind)
        else:
            try:
                kinds.extend(bench.disk_checkpoints())
                kinds.append(bench.disk_prepare())
            except Failure as e:
                for title in ("full disk writing a checkpoint", "full disk at --resume (0 bytes free)",
                              "full disk in prepare"):
                    kind = Kind(title, skipped=str(e))
                    kind.line = f"{title}: skipped ({e})"
                    kinds.append(kind)
        kinds.append(bench.concurrent(args.concurrent) if args.concurrent else
                     not_asked("concurrent cold-cache compiles"))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        bench.end_all()
        return 130
    finally:
        bench.end_all()

    elapsed = time.monotonic() - started
    print(f"\n== fault injection, seed {args.seed}, {elapsed:.0f} s", flush=True)
    print(bench.reference_line)
    for kind in kinds:
        print(kind.line)
        if getattr(kind, "detail", None):
            print(kind.detail)
        for note in kind.notes:
            print(f"  note: {note}")
    below = [kind.title for kind in kinds if not kind.passed() and not kind.skipped]
    skipped = [kind.title for kind in kinds if kind.skipped]
    if below:
        print(f"verdict: FAIL: below 100%: {'; '.join(below)} (work folder kept: {bench.work})")
    else:
        print("verdict: PASS: every line at 100%" + (f" ({len(skipped)} skipped)" if skipped else ""))
    if below or args.keep:
        if not below:
            print(f"work folder kept: {bench.work}")
    else:
        shutil.rmtree(bench.work, ignore_errors=True)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
