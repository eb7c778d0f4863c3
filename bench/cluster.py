"""Three peered ``discoverd serve`` nodes for the cluster benchmarks, and what is read from them."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from bench.harness import log, poll_until
from bench.node_api import ENV, ZONE, api, fetch_hosts, metrics
from bench.procs import Child

REPL_FIELDS = ("pending", "dropped", "sent", "failed")


def node(hostname: str, *extra: str) -> Child:
    """One cluster node (``--env dev --zone sh001``), named by its ``--hostname``."""
    cmd = [sys.executable, "-m", "discoverd", "serve", "--addr", "127.0.0.1:0", "--hostname", hostname]
    return Child([*cmd, "--env", ENV, "--zone", ZONE, "--log-level", "warning", *extra], f"node {hostname}")


class Cluster:
    """Nodes A, B, C of one zone, peered as README.md "Running a cluster" shows: A alone, B with
    ``--nodes A``, C with ``--nodes A,B``; A learns B and C from their ``infra.discovery`` registrations.
    Formed when every node's ``GET /discovery/nodes`` lists all three addresses. Stopped by PID."""

    def __init__(self, names: Sequence[str] = ("A", "B", "C"), extra: Sequence[str] = ()) -> None:
        self.names = list(names)
        self.extra = list(extra)
        self.nodes: list[Child] = []

    def __enter__(self) -> Cluster:
        try:
            for name in self.names:
                peers = ",".join(n.addr for n in self.nodes)
                self.nodes.append(node(name, *(("--nodes", peers) if peers else ()), *self.extra).start())
            t0 = time.monotonic()
            self.wait_formed()
            log(f"cluster {' '.join(n.addr for n in self.nodes)} formed in {time.monotonic() - t0:.2f} s")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every node by PID, the last started first."""
        for n in reversed(self.nodes):
            n.stop()

    def wait_formed(self, within: float = 30.0) -> None:
        """Return once every node lists every node's address; RuntimeError after ``within`` s."""
        want = {n.addr for n in self.nodes}
        seen: list[set[str]] = []

        def formed() -> bool:
            seen[:] = [
                {d["addr"] for d in api(n.addr, "GET", "/discovery/nodes")["data"]} for n in self.nodes
            ]
            return all(s >= want for s in seen)

        if not poll_until(formed, within):
            raise RuntimeError(f"cluster not formed after {within:.0f} s: nodes lists {seen}, want {want}")

    def log_lines(self) -> list[str]:
        """The non-blank stderr lines of every node."""
        return [ln for n in self.nodes for ln in n.log_lines()]


def repl_stats(m: dict[str, float], peer: str) -> dict[str, int]:
    """The replication gauges of one peer (-1 when the node does not export them)."""
    suffix = {"pending": ""}  # the others are counters: ``_total``
    return {
        f: int(m.get(f'discoverd_replication_{f}{suffix.get(f, "_total")}{{peer="{peer}"}}', -1))
        for f in REPL_FIELDS
    }


def has_host(node: Child, appid: str, hostname: str) -> bool:
    """Whether ``node`` lists ``hostname`` in ``appid``."""
    return hostname in fetch_hosts(node.addr, appid)


def has_instances(node: Child, count: int) -> bool:
    """Whether ``node`` holds at least ``count`` instances (its ``discoverd_instances`` gauge)."""
    return metrics(node.addr)["discoverd_instances"] >= count


def queues_empty(src: Child, peers: Sequence[Child]) -> bool:
    """Whether ``src`` has no replication pending for any of ``peers``."""
    m = metrics(src.addr)
    return all(repl_stats(m, p.addr)["pending"] == 0 for p in peers)
