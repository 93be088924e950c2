"""Two "hosts" on one machine: network namespaces joined by a veth pair, for msrun across hosts.

Each host is a namespace with its loopback up and a private address (10.231.N.1 and .2/24),
running its commands under `unshare --uts` with a host name of its own (blhost-0, blhost-1),
so status.json can tell the hosts apart. Both see this machine's files, as hosts sharing a
network folder would. Needs root and iproute2; `unavailable()` says why not.
Used by tests/test_two_hosts.py and bench/two_hosts.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

MASTER_PORT = 8118


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command"
    probe = f"blprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class TwoHosts:
    """Two namespaces and the processes started in them; `close` removes everything, whatever happened."""

    def __init__(self):
        token = uuid.uuid4().hex[:6]
        self.names = [f"bl{token}-0", f"bl{token}-1"]
        self.links = [f"bl{token}v0", f"bl{token}v1"]
        subnet = 1 + int(token, 16) % 250
        self.addresses = [f"10.231.{subnet}.1", f"10.231.{subnet}.2"]
        self.hostnames = ["blhost-0", "blhost-1"]
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> TwoHosts:
        try:
            for name in self.names:
                _ip("netns", "add", name)
            _ip("link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1])
            for name, link, address in zip(self.names, self.links, self.addresses):
                _ip("link", "set", link, "netns", name)
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", link)
                _ip("-n", name, "link", "set", "lo", "up")
                _ip("-n", name, "link", "set", link, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, host: int, argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        """`argv` on host 0 or 1, under its own host name, output to `log`."""
        wrapped = ["ip", "netns", "exec", self.names[host], "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', self.hostnames[host], *argv]
        with open(log, "ab") as out:
            process = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        self.processes.append(process)
        return process

    def pids(self, host: int) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.names[host]], capture_output=True, text=True)
        return [int(p) for p in listed.stdout.split()]

    def find(self, host: int, role: str) -> list[psutil.Process]:
        """Processes on `host`: `worker` (msrun's workers), `msrun`, or `scheduler`."""
        found = []
        for pid in self.pids(host):
            try:
                process = psutil.Process(pid)
                cmdline = " ".join(process.cmdline())
                env_role = process.environ().get("MS_ROLE")
            except psutil.Error:
                continue
            is_msrun = "bin/msrun" in cmdline or "mindspore.parallel.cluster.run" in cmdline
            if {"msrun": is_msrun, "worker": env_role == "MS_WORKER" and "babyllama" in cmdline,
                    "scheduler": env_role == "MS_SCHED"}[role]:
                found.append(process)
        return found

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for host in range(len(self.names)):
            for pid in self.pids(host):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while any(self.pids(h) for h in range(len(self.names))) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def msrun_command(host: int, master: str, log_dir: Path, train_args: list[str]) -> list[str]:
    """The README's two-machine command for `host` (node rank), one worker a host."""
    return [str(Path(sys.executable).parent / "msrun"), "--worker_num=2", "--local_worker_num=1",
            f"--master_addr={master}", f"--master_port={MASTER_PORT}", f"--node_rank={host}",
            f"--log_dir={log_dir}", "--join=True", "python", "-m", "babyllama", "train", *train_args]


def node_env(**extra: str) -> dict:
    """This interpreter first on PATH: msrun runs its workers as the command `python`."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "GLOG_v": "3",
            "PYTHONUNBUFFERED": "1", **extra}
