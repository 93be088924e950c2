"""What the training step's MindSpore choices cost on this machine (the numbers in docs/MINDSPORE.md).

    python bench/step_bench.py [--preset tiny] [--vocab 8000] [--batch 8] [--steps 8] [--cases baseline o0 ...]

babyllama's own TrainStep on the same random token batches, float32, two threads, each case
in a process of its own (its peak RSS, getrusage's ru_maxrss, covers import, compile and
steps) with a kernel cache of its own, empty at the start, as a first run has:

    baseline       what `babyllama train` runs: a graph, jit level O1 (graph kernel fusion),
                   the fused loss kernel, OMP_WAIT_POLICY=PASSIVE
    o0             jit level O0: no graph kernel fusion
    pynative       op by op (PyNative mode), no graph
    log-softmax    the loss as log_softmax then a gather of the targets' entries
    cross-entropy  the loss as ops.cross_entropy
    omp-spin       without OMP_WAIT_POLICY=PASSIVE (libgomp's default: idle threads spin)
    float16, bfloat16  the matmuls in half precision on the CPU (the trainer refuses both there)
    float16-o0     float16 at jit level O0
    masked         fine-tuning's step (TrainStep masked=True), half of each row's targets IGNORE_ID

Per case it prints the first step (graph compile included), wall and CPU ms per step (CPU
time is less skewed by other processes), peak RSS and the loss after the last step; a case
that fails prints its error. The load average before and after is printed because other
processes on the machine skew every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from mindspore import ops
from train_bench import ROOT, THREADS, batches, time_steps

CASES = ("baseline", "o0", "pynative", "log-softmax", "cross-entropy", "omp-spin", "float16", "float16-o0", "bfloat16",
         "masked")


def log_softmax_loss(self, tokens, targets):
    logits = self.model.logits_of(self.model.hidden_states(tokens))
    picked = ops.gather_elements(ops.log_softmax(logits, -1), 1, targets.reshape(-1, 1))
    return -picked.mean()


def cross_entropy_loss(self, tokens, targets):
    logits = self.model.logits_of(self.model.hidden_states(tokens))
    return ops.cross_entropy(logits, targets.reshape(-1))


def run_case(case: str, args) -> dict:
    sys.path.insert(0, ROOT)
    import mindspore as ms

    from babyllama import step
    from babyllama.config import TrainConfig, preset

    model_cfg, _ = preset(args.preset)
    model_cfg.vocab_size = args.vocab
    dtype = case.removesuffix("-o0") if case.startswith(("float16", "bfloat16")) else "float32"
    train_cfg = TrainConfig(batch_size=args.batch, learning_rate=1e-3, warmup_iters=0, max_steps=1000,
                            threads=THREADS, dtype="float32")
    step.setup_runtime(train_cfg)
    if case.endswith("o0"):
        ms.set_context(jit_config={"jit_level": "O0"})
    if case == "pynative":
        ms.set_context(mode=ms.PYNATIVE_MODE)
    elif case == "log-softmax":
        step.LossCell.construct = log_softmax_loss
    elif case == "cross-entropy":
        step.LossCell.construct = cross_entropy_loss
    elif dtype != "float32":
        step.resolve_dtype = lambda wanted, device: wanted
    trainer = step.TrainStep(model_cfg, train_cfg, dtype=dtype, masked=case == "masked")
    data = batches(args.vocab, args.batch, model_cfg.max_seq_len, args.warmup + args.steps)
    if case == "masked":
        from babyllama.data import IGNORE_ID

        for _, y in data:
            y[:, : y.shape[1] // 2] = IGNORE_ID
    try:
        return time_steps(lambda x, y: trainer.step(x, y, 1e-3)[0], data, args.warmup)
    except (RuntimeError, TypeError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {next(line for line in str(e).splitlines() if line.strip('- '))}"}


def in_subprocess(case: str, args) -> dict:
    from babyllama.train import MINDSPORE_ENVIRONMENT

    argv = [sys.executable, os.path.abspath(__file__), "--worker", case, "--preset", args.preset,
            "--vocab", str(args.vocab), "--batch", str(args.batch), "--steps", str(args.steps),
            "--warmup", str(args.warmup)]
    env = dict(os.environ, GLOG_v="3", OMP_NUM_THREADS=str(THREADS), **MINDSPORE_ENVIRONMENT)
    if case.endswith("o0"):
        env["MS_DEV_GRAPH_KERNEL_FLAGS"] = "--opt_level=0"
    if case == "omp-spin":
        del env["OMP_WAIT_POLICY"]
    cache = tempfile.mkdtemp(prefix="step-bench-kernels-")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env={**env, "XDG_CACHE_HOME": cache}, cwd=ROOT)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile included)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_case(args.worker, args)))
        return 0

    sys.path.insert(0, ROOT)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} cores, {THREADS} threads each")
    print(f"preset {args.preset}, vocab {args.vocab:,}, batch {args.batch}, {args.steps} timed steps")
    print(f"  {'':14} {'1st step':>9} {'step ms':>8} {'cpu ms':>7} {'peak RSS':>9} {'loss':>7}")
    for case in args.cases:
        r = in_subprocess(case, args)
        if "error" in r:
            print(f"  {case:14} {r['error']}", flush=True)
            continue
        print(f"  {case:14} {r['first_step_s']:8.1f}s {r['step_ms']:8.0f} {r['cpu_ms']:7.0f} "
              f"{r['peak_rss'] / 2**30:7.2f} G {r['last_loss']:7.3f}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
