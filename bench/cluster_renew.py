"""``cluster-renew``: wrk renews on a single node, then on node A of a 3-node cluster (replicated to B
and C); the ratio cluster / single, the peers' CPU and the replicated renews A sent."""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from typing import Any

from bench.cluster import Cluster, has_host, node, queues_empty, repl_stats
from bench.harness import log, result, verdict, wait_sync
from bench.load import WrkResult, run_wrk
from bench.node_api import metrics
from bench.procs import cpu_seconds
from bench.renew import LUA_ARGS, RENEW_APPID, RENEW_HOST, prepare_renew


def single(a: argparse.Namespace) -> WrkResult:
    """The renew wrk run on a lone node."""
    with node("single") as one:
        prepare_renew(one.addr)
        log(f"cluster-renew: wrk -t{a.threads} -c{a.connections} -d{a.duration}s renew on a single node")
        return run_wrk(one, "renew.lua", LUA_ARGS, a)


def prepare_cluster(cl: Cluster) -> None:
    """The renewed instance registered on A and present on B and C; A's replication queues empty."""
    na, nb, nc = cl.nodes
    prepare_renew(na.addr)
    for peer in (nb, nc):
        wait_sync(f"the instance on {peer.name}", partial(has_host, peer, RENEW_APPID, RENEW_HOST))
    wait_sync("A's replication queues to drain", lambda: queues_empty(na, (nb, nc)))


def on_cluster(cl: Cluster, a: argparse.Namespace) -> dict[str, Any]:
    """The same wrk run on node A; the peers' CPU share, replicated renews sent, drain time."""
    na, nb, nc = cl.nodes
    peers = (("B", nb), ("C", nc))
    m0 = metrics(na.addr)
    cpu_b0, cpu_c0, t0 = cpu_seconds(nb.pid), cpu_seconds(nc.pid), time.monotonic()
    log(f"cluster-renew: the same wrk run on node A of the cluster (B {nb.addr}, C {nc.addr})")
    three = run_wrk(na, "renew.lua", LUA_ARGS, a)
    wall = time.monotonic() - t0
    peers_cpu = [(cpu_seconds(p.pid) - c0) / wall for p, c0 in ((nb, cpu_b0), (nc, cpu_c0))]
    m1 = metrics(na.addr)
    sent = {k: repl_stats(m1, p.addr)["sent"] - repl_stats(m0, p.addr)["sent"] for k, p in peers}
    drain_s = wait_sync("A's replication queues to drain", lambda: queues_empty(na, (nb, nc)))
    m2 = metrics(na.addr)
    repl = {k: repl_stats(m2, p.addr) for k, p in peers}
    return {"wrk": three, "peers_cpu": peers_cpu, "sent": sent, "drain_s": drain_s, "repl": repl}


def bench_cluster_renew(a: argparse.Namespace) -> dict[str, Any]:
    """The ``cluster-renew`` benchmark; its result record."""
    one = single(a)
    with Cluster() as cl:
        prepare_cluster(cl)
        c = on_cluster(cl, a)
        errors = cl.log_lines()
    three, peers_cpu, sent = c["wrk"], c["peers_cpu"], c["sent"]
    ratio = three.rps / one.rps
    v = verdict("cluster_renew", ratio)
    line = (
        f"cluster-renew (wrk -t{a.threads} -c{a.connections} -d{a.duration}s, renew of one instance): single "
        f"node {one.short()} | node A of 3 {three.short()}; B {peers_cpu[0]:.0%}, C {peers_cpu[1]:.0%} of a "
        f"core | cluster/single {ratio:.2f} (target >= 0.60: {v}) | replicated renews sent during the run: "
        f"to B {sent['B']:,}, to C {sent['C']:,} (coalesced; queues drained {c['drain_s']:.2f} s after wrk) "
        "| "
        f"3 nodes + wrk on {os.cpu_count()} shared cores | node log lines {len(errors)}"
    )
    return result(
        "cluster-renew",
        line,
        single_rps=one.rps,
        single=one.short(),
        cluster_rps=three.rps,
        cluster=three.short(),
        ratio=ratio,
        peers_cpu=peers_cpu,
        replicated_sent=sent,
        replication=c["repl"],
        drain_s=c["drain_s"],
        node_log=errors[:5],
        verdict=v,
    )
