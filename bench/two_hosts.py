"""Two hosts (network namespaces, tests/netns_hosts.py) against one host, and a lost host timed.

    sudo PYTHONPATH=. python bench/two_hosts.py --data data/sanguo.bin --steps 40

1. The README's two-machine msrun command on two namespaces and `babyllama train --workers 2` on
   this host, the same seed: their losses side by side (equal when both ranks train in step).
2. Node 1's worker killed (SIGKILL) mid-run, then node 1 whole (its msrun too): how long node 0's
   rank takes to record `failed`, and node 0's msrun to end, with MindSpore's CPU collective
   timeout (MS_CPU_COMM_OP_TIMEOUT) and the scheduler's node timeout (MS_NODE_TIMEOUT) as given.
Needs root (`ip netns`); the tiny model of the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from netns_hosts import TwoHosts, msrun_command, node_env, unavailable  # noqa: E402

from babyllama.runs import RunDir, launch_detached  # noqa: E402

MODEL = ["--preset", "tiny", "--dim", "64", "--n_layers", "2", "--n_heads", "2", "--max_seq_len", "64",
         "--batch_size", "4", "--warmup_iters", "2", "--learning_rate", "3e-3", "--log_interval", "1", "--seed", "7"]


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def wait(condition, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def two_host_run(hosts: TwoHosts, run: Path, flags: list[str], env: dict) -> list:
    return [hosts.start(h, msrun_command(h, hosts.addresses[0], run / "msrun", ["--run", str(run), *flags]),
                        run.parent / f"{run.name}-node{h}.log", env=node_env(**env)) for h in (0, 1)]


def lost_host(hosts: TwoHosts, run: Path, data: str, whole_node: bool, env: dict) -> dict:
    flags = ["--data", data, *MODEL, "--max_steps", "100000", "--eval_interval", "100000", "--save_interval", "5",
             "--sample_tokens", "0"]
    nodes = two_host_run(hosts, run, flags, env)
    status = RunDir(run)
    if not wait(lambda: status.status_path.exists() and (status.read_status().get("step") or 0) >= 7, 300):
        raise SystemExit(f"{run} did not reach step 7")
    victims = hosts.find(1, "worker") + (hosts.find(1, "msrun") if whole_node else [])
    killed = time.monotonic()
    for victim in victims:
        victim.kill()
    recorded = ended = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and ended is None:
        if recorded is None and status.read_status().get("state") == "failed":
            recorded = time.monotonic() - killed
        if nodes[0].poll() is not None:
            ended = time.monotonic() - killed
        time.sleep(0.1)
    final = status.read_status()
    return {"failed_after_s": recorded, "node0_ended_after_s": ended, "error": final.get("error"),
            "step": final.get("step")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a token file (vocabulary up to 2,000 for the tiny model)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--timeout", type=int, default=10,
                        help="MS_CPU_COMM_OP_TIMEOUT and MS_NODE_TIMEOUT, seconds (MindSpore's defaults: 30)")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"two_hosts: {reason}", file=sys.stderr)
        return 2
    timeouts = {"MS_CPU_COMM_OP_TIMEOUT": str(args.timeout), "MS_NODE_TIMEOUT": str(args.timeout)}
    flags = ["--data", str(Path(args.data).resolve()), *MODEL, "--max_steps", str(args.steps),
             "--eval_interval", str(args.steps), "--save_interval", str(args.steps), "--sample_tokens", "0"]
    with tempfile.TemporaryDirectory() as folder, TwoHosts() as hosts:
        folder = Path(folder)
        began = time.monotonic()
        nodes = two_host_run(hosts, folder / "two", flags, timeouts)
        codes = [n.wait(timeout=900) for n in nodes]
        two_s = time.monotonic() - began
        began = time.monotonic()
        one = RunDir(folder / "one")
        launch_detached(one, flags, workers=2, env={"GLOG_v": "3"})
        wait(lambda: one.state().state not in ("starting", "running", "stopping"), 900, 0.5)
        one_s = time.monotonic() - began
        two, single = losses(folder / "two"), losses(folder / "one")
        print(f"two hosts (msrun exit {codes}) {two_s:.0f} s, one host {one_s:.0f} s, ratio {two_s / one_s:.2f}")
        print("step  two hosts        one host         equal")
        for step in sorted(single):
            print(f"{step:4d}  {two.get(step, float('nan')):.10f}  {single[step]:.10f}  {two.get(step) == single[step]}")
        for whole in (False, True):
            result = lost_host(hosts, folder / ("node" if whole else "worker"), flags[1], whole, timeouts)
            print(f"{'node 1 (msrun and worker)' if whole else 'node 1 worker'} killed (SIGKILL), timeouts "
                  f"{args.timeout} s: failed recorded after {result['failed_after_s']:.1f} s, node 0's msrun ended "
                  f"after {result['node0_ended_after_s']:.1f} s; error: {result['error']}")
            for process in hosts.find(1, "msrun") + hosts.find(1, "worker"):
                process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
