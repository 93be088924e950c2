"""The ranks of a multi-worker run and where each one runs, so rank 0 can record every host and,
when a collective fails, say which rank stopped responding (docs/ARCHITECTURE.md, "Several hosts").

Each worker opens a listening TCP socket on the address it reaches msrun's scheduler from and
never accepts on it: the kernel answers a connection for as long as the process lives. The ranks
exchange (host name, address, port, pid) once, through one all-reduce, after MindSpore's
communication is up. After a failed step rank 0 connects to each other rank's socket: a refused
or timed-out connection is a rank that is gone or cannot be reached.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import numpy as np

# Bytes of one rank's description in the exchange.
ROW_BYTES = 512
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    address: str
    port: int
    pid: int

    def where(self) -> str:
        return f"{self.host} ({self.address})" if self.address != self.host else self.host

    def answers(self, timeout: float = PROBE_TIMEOUT_S) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=timeout):
                return True
        except OSError:
            return False


def local_address(scheduler_host: str | None) -> str:
    """The address this host reaches the scheduler from (a UDP socket's connect sends nothing)."""
    if not scheduler_host:
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((scheduler_host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class Peers:
    """This rank's listening socket and, after `exchange`, every rank's `Peer`."""

    def __init__(self, rank: int, world_size: int):
        self.rank = rank
        self.world_size = world_size
        address = local_address(os.environ.get("MS_SCHED_HOST"))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((address, 0))
        self.listener.listen(16)
        self.me = Peer(rank, socket.gethostname(), address, self.listener.getsockname()[1], os.getpid())
        self.all: list[Peer] = [self.me]

    def exchange(self, all_reduce) -> list[Peer]:
        """Every rank's description, through `all_reduce` (a sum of float32 arrays, exact for bytes): each rank
        fills its own row."""
        from mindspore import Tensor

        rows = np.zeros((self.world_size, ROW_BYTES), np.float32)
        text = json.dumps(self.me.__dict__).encode()[:ROW_BYTES]
        rows[self.rank, : len(text)] = np.frombuffer(text, np.uint8)
        summed = all_reduce(Tensor(rows)).asnumpy()
        self.all = [Peer(**json.loads(bytes(row[row > 0].astype(np.uint8)).decode())) for row in summed]
        return self.all

    def unresponsive(self) -> list[Peer]:
        """The other ranks whose socket does not answer now."""
        return [p for p in self.all if p.rank != self.rank and not p.answers()]

    def hosts(self, state: str, lost: list[Peer] = ()) -> list[dict]:
        """status.json's `hosts`: one entry a host, with its address, ranks, and state (`lost` for a host
        whose ranks stopped responding)."""
        by_host: dict[tuple[str, str], dict] = {}
        lost_ranks = {p.rank for p in lost}
        for peer in self.all:
            entry = by_host.setdefault((peer.host, peer.address), {
                "host": peer.host, "address": peer.address, "ranks": [], "pids": [], "state": state})
            entry["ranks"].append(peer.rank)
            entry["pids"].append(peer.pid)
            if peer.rank in lost_ranks:
                entry["state"] = "lost"
        return list(by_host.values())


def lost_reason(lost: list[Peer], step: int) -> str:
    """One line naming the ranks that stopped responding and where they ran."""
    named = "; ".join(f"rank {p.rank} on {p.where()}" for p in lost)
    return f"{named} stopped responding at step {step:,}"
