"""msrun across two hosts: two network namespaces joined by a veth pair (tests/netns_hosts.py), each
running the README's two-machine command under a host name of its own, on one shared run folder.

Skipped where namespaces cannot be made (not root, no iproute2). MindSpore's CPU collective and
node timeouts are set to 10 s (MS_CPU_COMM_OP_TIMEOUT, MS_NODE_TIMEOUT) so a lost host is noticed
in seconds; bench/two_hosts.py times it.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
from netns_hosts import TwoHosts, msrun_command, node_env, unavailable

from babyllama.runs import RunDir, launch_detached

pytestmark = pytest.mark.slow

MODEL = ["--preset", "tiny", "--dim", "64", "--n_layers", "2", "--n_heads", "2", "--max_seq_len", "64",
         "--batch_size", "4", "--warmup_iters", "2", "--learning_rate", "3e-3", "--log_interval", "1", "--seed", "7"]
TIMEOUTS = {"MS_CPU_COMM_OP_TIMEOUT": "10", "MS_NODE_TIMEOUT": "10"}
DIGEST_LINE = re.compile(r"rank (\d+)/2: step (\d+), local loss \S+, parameters (sha256:[0-9a-f]{64})")
# Every wait is bounded: two MindSpore processes and a scheduler on two shared cores take a while.
WAIT_S = 240


@pytest.fixture(scope="module")
def hosts():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with TwoHosts() as made:
        yield made


@pytest.fixture(scope="module")
def token_file(tmp_path_factory, sample_jsonl, sp_tokenizer_dir) -> Path:
    from babyllama.prepare import prepare

    out = tmp_path_factory.mktemp("tokens") / "sanguo.bin"
    prepare([sample_jsonl], "c4", sp_tokenizer_dir, out, workers=1)
    return out


def start_nodes(hosts: TwoHosts, run: Path, flags: list[str], resume: bool = False) -> list:
    args = ["--run", str(run), *(["--resume"] if resume else flags)]
    return [hosts.start(h, msrun_command(h, hosts.addresses[0], run / "msrun", args), run.parent / f"node{h}.log",
                        env=node_env(**TIMEOUTS)) for h in (0, 1)]


def wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ended(nodes, run: Path) -> list[int]:
    try:
        return [wait_for(lambda n=n: n.poll() is not None, "msrun to end") and n.returncode for n in nodes]
    except AssertionError:
        raise AssertionError(f"msrun had not ended; {run / 'train.log'} ends:\n"
                             + "\n".join((run / "train.log").read_text().splitlines()[-20:])) from None


def train_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    resumed = max((i for i, row in enumerate(rows) if row["kind"] == "resume"), default=-1)
    return {row["step"]: row["loss"] for row in rows[resumed + 1:] if row["kind"] == "train"}


def test_two_hosts_train_in_step_as_one_run_with_the_losses_of_one_host(tmp_path, hosts, token_file):
    flags = ["--data", str(token_file), *MODEL, "--max_steps", "6", "--eval_interval", "3", "--save_interval", "3",
             "--sample_tokens", "4"]
    run = tmp_path / "two" / "run"
    run.parent.mkdir()
    assert ended(start_nodes(hosts, run, flags), run) == [0, 0]  # msrun's own exit status, on both hosts

    status = RunDir(run).read_status()
    assert status["state"] == "finished" and status["world_size"] == 2, status
    assert [(h["host"], h["address"], h["ranks"], h["state"]) for h in status["hosts"]] == [
        ("blhost-0", hosts.addresses[0], [0], "finished"), ("blhost-1", hosts.addresses[1], [1], "finished")]
    assert status["host"] == "blhost-0" and status["pid"] == status["hosts"][0]["pids"][0]
    logs = [(run / "msrun" / f"worker_{rank}.log").read_text() for rank in (0, 1)]
    (rank0, step0, digest0), = DIGEST_LINE.findall(logs[0])
    (rank1, step1, digest1), = DIGEST_LINE.findall(logs[1])
    assert (rank0, rank1, step0, step1) == ("0", "1", "6", "6") and digest0 == digest1
    # Rank 0 alone writes the run: its log has no line of rank 1, each step one train row.
    train_log = (run / "train.log").read_text()
    assert "rank 0/2:" in train_log and "rank 1/2:" not in train_log
    assert sorted(train_losses(run)) == [1, 2, 3, 4, 5, 6]

    one = RunDir(tmp_path / "one")
    launch_detached(one, flags, workers=2, env={"GLOG_v": "3"}, cwd=tmp_path)
    wait_for(lambda: one.state().state not in ("starting", "running", "stopping"), "the one-host run")
    assert one.read_status()["state"] == "finished"
    assert train_losses(run) == train_losses(one.path)


def test_a_lost_host_fails_the_run_naming_it_and_the_run_resumes(tmp_path, hosts, token_file):
    flags = ["--data", str(token_file), *MODEL, "--max_steps", "100000", "--eval_interval", "100000",
             "--save_interval", "5", "--sample_tokens", "0"]
    run = RunDir(tmp_path / "lost" / "run")
    run.path.parent.mkdir()
    lost_line = re.compile(rf"rank 1 on blhost-1 \({re.escape(hosts.addresses[1])}\) stopped responding at step "
                           r"(\d+); step_(\d+) is kept: start every host's command again with --resume")

    def lose(whole_node: bool, resume: bool) -> int:
        nodes = start_nodes(hosts, run.path, flags, resume=resume)
        reached = (run.read_status().get("step") or 0) + 7
        wait_for(lambda: run.read_status().get("state") == "running" and run.read_status().get("step", 0) >= reached,
                 f"step {reached}")
        for victim in hosts.find(1, "worker") + (hosts.find(1, "msrun") if whole_node else []):
            victim.kill()
        ended(nodes, run.path)  # node 0 does not hang
        status = run.read_status()
        assert status["state"] == "failed", status
        found = lost_line.match(status["error"])
        assert found, status["error"]
        assert [h["state"] for h in status["hosts"]] == ["failed", "lost"]
        kept = int(found.group(2))
        assert run.latest_checkpoint().step == kept and kept % 5 == 0 and kept > 0
        return kept

    lose(whole_node=False, resume=False)
    kept = lose(whole_node=True, resume=True)

    # SIGTERM to node 0's msrun: both hosts stop after the step, rank 0 with a checkpoint.
    nodes = start_nodes(hosts, run.path, flags, resume=True)
    wait_for(lambda: run.read_status().get("state") == "running" and run.read_status().get("step", 0) > kept + 2,
             "the resumed run to train")
    hosts.find(0, "msrun")[0].send_signal(signal.SIGTERM)
    # msrun dies of it at once; its worker, told by the kernel (PR_SET_PDEATHSIG), stops both ranks.
    wait_for(lambda: run.read_status().get("state") == "stopped", "the run to stop")
    wait_for(lambda: not hosts.find(0, "worker"), "rank 0 to exit")
    ended(nodes, run.path)
    status = run.read_status()
    assert status["state"] == "stopped" and "stopped on SIGTERM" in status["error"], status
    assert run.latest_checkpoint().step == status["step"]
    assert [h["state"] for h in status["hosts"]] == ["stopped", "stopped"]
    assert nodes[1].returncode == 0

    # On one host, with the same two workers: the same batches from the checkpoint on.
    stopped_at = status["step"]
    one = launch_detached(run, ["--resume", "--max_steps", str(stopped_at + 3)], workers=2, env={"GLOG_v": "3"})
    assert one
    wait_for(lambda: run.state().state not in ("starting", "running", "stopping"), "the one-host resume")
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == stopped_at + 3, status
    assert status["hosts"][0]["ranks"] == [0, 1]
