"""The monitor's reading of a long metrics.jsonl against the plain way, in one run.

The plain way reads every line into a list of row dicts (and a monitor written that way
reads the file again on every tick). The app's way (`babyllama_tui.training.run_follower.RunFollower`)
reads the file once in 8 MB pieces into numpy columns and afterwards only the bytes
appended since the last poll. Each side runs in its own process, so peak memory is its own.

    python bench/monitor_bench.py                  # 1,000,000 train rows under out/bench/monitor/
    python bench/monitor_bench.py --rows 200000

Prints, for both: seconds to take in the file and peak RSS; for the app: a poll when nothing
was appended, a poll after one new row, and reducing the loss to a chart's 200 points.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20

PLAIN = """
import json, resource, sys, time
start = time.perf_counter()
with open(sys.argv[1], encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
seconds = time.perf_counter() - start
print(json.dumps({"rows": len(rows), "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

APP = """
import json, os, resource, sys, time
from pathlib import Path
from babyllama_tui.training.run_follower import RunFollower
from babyllama_tui.training.history import bucket_means, envelope

run = Path(sys.argv[1]).parent
start = time.perf_counter()
follower = RunFollower(run)
follower.poll_metrics()
seconds = time.perf_counter() - start

start = time.perf_counter()
follower.poll_metrics()
idle_poll = time.perf_counter() - start

size = follower.run.metrics_path.stat().st_size
with open(follower.run.metrics_path, "a") as f:
    f.write(json.dumps({"kind": "train", "step": 10**9, "loss": 1.0, "time": 0.0}) + "\\n")
start = time.perf_counter()
follower.poll_metrics()
one_row_poll = time.perf_counter() - start
os.truncate(follower.run.metrics_path, size)

history = follower.history
start = time.perf_counter()
envelope(history.steps.values, history.series["loss"].values, 200)
bucket_means(history.steps.values, history.series["ema"].values, 200)
reduce_s = time.perf_counter() - start
print(json.dumps({"rows": len(history), "seconds": seconds, "idle_poll_s": idle_poll,
                  "one_row_poll_s": one_row_poll, "reduce_s": reduce_s,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BASELINE_IMPORTS = "import babyllama_tui.training.runs_watcher, resource, json; print(json.dumps({'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"


def write_metrics(path: Path, rows: int) -> None:
    """Rows shaped like the trainer's, with an eval and a sample row every 100 steps."""
    random.seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = 1.7e9
    with open(path, "w", encoding="utf-8") as f:
        for step in range(1, rows + 1):
            loss = 2.0 + 8.0 / (1 + step / 5000) + random.random() * 0.2
            f.write(json.dumps({
                "kind": "train", "step": step, "tokens": step * 4096, "loss": round(loss, 5), "lr": 3e-4,
                "grad_norm": round(random.random(), 4), "tokens_per_s": round(9000 + random.random() * 500, 1),
                "step_ms": 450.2, "mem": {"rss_mb": 2150.3, "host_used_mb": 9000.1, "host_total_mb": 24000.0,
                                          "device": "cpu"}, "time": round(start + step * 0.45, 3),
            }, separators=(",", ":")) + "\n")
            if step % 100 == 0:
                f.write(json.dumps({"kind": "eval", "step": step, "val_loss": loss + 0.1,
                                    "time": start + step * 0.45}) + "\n")
                f.write(json.dumps({"kind": "sample", "step": step, "text": "话说天下大势，分久必合，合久必分。" * 3,
                                    "time": start + step * 0.45}, ensure_ascii=False) + "\n")


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="train rows in the file (default 1,000,000)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "monitor")
    args = parser.parse_args()
    metrics = args.work / "run" / "metrics.jsonl"
    if not metrics.exists() or metrics.stat().st_size == 0 or args.rows != _rows_in(metrics):
        print(f"writing {args.rows:,} train rows to {metrics} ...", flush=True)
        write_metrics(metrics, args.rows)
    (args.work / "run" / "config.json").write_text("{}")
    size_mb = metrics.stat().st_size / MiB
    print(f"metrics.jsonl: {size_mb:,.0f} MiB, {args.rows:,} train rows")

    imports = run_child(BASELINE_IMPORTS)["peak_mb"]
    plain = run_child(PLAIN, str(metrics))
    app = run_child(APP, str(metrics))
    print(f"python + the app's modules alone: {imports:,.0f} MB peak RSS")
    print(f"plain (rows as dicts):  {plain['seconds']:6.2f} s  {plain['peak_mb']:8,.0f} MB peak RSS")
    print(f"app (numpy columns):    {app['seconds']:6.2f} s  {app['peak_mb']:8,.0f} MB peak RSS")
    print(f"  poll with nothing new: {app['idle_poll_s'] * 1e6:,.0f} us; after one new row: "
          f"{app['one_row_poll_s'] * 1e6:,.0f} us; loss reduced to a 200-point chart: {app['reduce_s'] * 1e3:.1f} ms")
    print(f"ratio plain/app: time {plain['seconds'] / app['seconds']:.2f}x, "
          f"memory above the imports {(plain['peak_mb'] - imports) / max(1.0, app['peak_mb'] - imports):.1f}x")


def _rows_in(metrics: Path) -> int:
    """The train rows a previous run of this bench wrote (its last train row's step)."""
    with open(metrics, "rb") as f:
        f.seek(max(0, metrics.stat().st_size - 4096))
        for line in reversed(f.read().decode("utf-8", "replace").splitlines()):
            if '"kind":"train"' in line:
                return json.loads(line)["step"]
    return 0


if __name__ == "__main__":
    main()
