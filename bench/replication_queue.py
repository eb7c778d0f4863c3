"""``replication-queue``: node A's queue for a peer killed with SIGKILL while A takes renews, cancels and
re-registers of 1,000 instances; the queue's size, drops and A's RSS (and the queue for the live C)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
from functools import partial
from typing import Any

import aiohttp

from bench.cluster import Cluster, has_instances, queues_empty, repl_stats
from bench.harness import log, log_lines, mib, result, run_loop, settle, wait_until
from bench.load import (
    Pipeline,
    close_pipelines,
    failures,
    open_pipelines,
    post_request,
    register_request,
    send_spread,
)
from bench.node_api import ENV, ZONE, Spec, metrics, parse_metrics, service_instance
from bench.procs import Child, rss_bytes, settle_rss

RQ_APPS = 10


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``replication-queue`` (it also takes ``--mem-connections``)."""
    p.add_argument("--rq-instances", type=int, default=1000, help="instances registered in replication-queue")
    p.add_argument(
        "--rq-renews",
        type=int,
        default=20,
        help="renews of every instance in replication-queue (20 = 10 min)",
    )
    p.add_argument("--rq-churn", type=int, default=10, help="instances cancelled + re-registered per round")
    p.add_argument(
        "--rq-seconds", type=float, default=60.0, help="seconds the replication-queue load is spread over"
    )
    p.add_argument(
        "--rq-queue-limit",
        type=int,
        default=0,
        help="nodes' --replication-queue in replication-queue (default)",
    )


def rq_spec(i: int, version: str = "v1.0.0") -> Spec:
    """Instance ``i`` (10 apps round-robin) with ``version``."""
    spec = service_instance(f"bench.rq.svc-{i % RQ_APPS}", i)
    spec.hostname = f"rq-{i:05d}-7f9c4d5b"
    spec.version = version
    return spec


def rq_ident(i: int) -> list[tuple[str, str]]:
    """The renew / cancel form of instance ``i``."""
    return [
        ("zone", ZONE),
        ("env", ENV),
        ("appid", f"bench.rq.svc-{i % RQ_APPS}"),
        ("hostname", rq_spec(i).hostname),
    ]


class Sampler:
    """A's ``/metrics`` and RSS every 100 ms from its creation: (t, rss, pending B, dropped B, pending C)."""

    def __init__(self, na: Child, nb: Child, nc: Child) -> None:
        self.na, self.nb, self.nc = na, nb, nc
        self.samples: list[tuple[float, int, int, int, int]] = []
        self.t_start = time.monotonic()

    async def run(self) -> None:
        """Sample until cancelled."""
        async with aiohttp.ClientSession() as s:
            while True:
                async with s.get(f"{self.na.url}/metrics") as resp:
                    m = parse_metrics(await resp.text())
                rb, rc = repl_stats(m, self.nb.addr), repl_stats(m, self.nc.addr)
                t = time.monotonic() - self.t_start
                self.samples.append((t, rss_bytes(self.na.pid), rb["pending"], rb["dropped"], rc["pending"]))
                await asyncio.sleep(0.1)


async def load_instances(cl: Cluster, pipes: list[Pipeline], n: int) -> None:
    """Register ``n`` instances on A; return once B and C hold them and A's queues are empty."""
    na, nb, nc = cl.nodes
    await send_spread(pipes, [register_request(na.addr, rq_spec(i)) for i in range(n)])
    base = int(metrics(nc.addr)["discoverd_instances"]) - n  # the nodes' own infra.discovery records
    for peer in (nb, nc):
        await wait_until(partial(has_instances, peer, n + base), 30, f"{n} instances on {peer.name}", 0.1)
    await wait_until(lambda: queues_empty(na, (nb, nc)), 30, "A's queues to drain", 0.1)


def kill_b(nb: Child) -> None:
    """SIGKILL node B by PID and reap it."""
    os.kill(nb.pid, signal.SIGKILL)
    assert nb.proc is not None
    nb.proc.wait(10)


async def churn_round(pipes: list[Pipeline], addr: str, r: int, a: argparse.Namespace) -> int:
    """Round ``r``: cancel ``--rq-churn`` instances, renew the others, re-register the cancelled ones
    with a new version; RuntimeError if A answered any request with an error. The cancelled count."""
    n, churn = a.rq_instances, a.rq_churn
    out = {(r * churn + k) % n for k in range(churn)}
    await send_spread(pipes, [post_request(addr, "/discovery/cancel", rq_ident(i)) for i in sorted(out)])
    await send_spread(
        pipes, [post_request(addr, "/discovery/renew", rq_ident(i)) for i in range(n) if i not in out]
    )
    await send_spread(pipes, [register_request(addr, rq_spec(i, f"v1.{r + 1}.0")) for i in sorted(out)])
    if failures(pipes):
        raise RuntimeError(f"A answered {len(failures(pipes))} requests with an error: {failures(pipes)[:3]}")
    return len(out)


async def run_rounds(pipes: list[Pipeline], addr: str, a: argparse.Namespace) -> tuple[dict[str, int], int]:
    """``--rq-renews`` rounds, each given ``--rq-seconds`` / rounds; (operations sent, late rounds)."""
    ops = {"renew": 0, "cancel": 0, "register": 0}
    per_round = a.rq_seconds / a.rq_renews
    slow_rounds = 0
    for r in range(a.rq_renews):
        t_round = time.monotonic()
        out = await churn_round(pipes, addr, r, a)
        ops["cancel"] += out
        ops["renew"] += a.rq_instances - out
        ops["register"] += out
        left = per_round - (time.monotonic() - t_round)
        if left > 0:
            await asyncio.sleep(left)
        else:
            slow_rounds += 1
    return ops, slow_rounds


async def replication_queue_async(cl: Cluster, a: argparse.Namespace) -> dict[str, Any]:
    """The whole run on ``cl``; its figures."""
    na, nb, nc = cl.nodes
    n = a.rq_instances
    pipes = await open_pipelines(na.addr, a.mem_connections)
    await load_instances(cl, pipes, n)
    rss0 = await settle_rss(na.pid)
    before = repl_stats(metrics(na.addr), nb.addr)
    log(f"replication-queue: {n:,} instances on A, B and C; A RSS {mib(rss0)} MiB; kill -9 B (pid {nb.pid})")
    kill_b(nb)
    sampler = Sampler(na, nb, nc)
    sample_task = asyncio.create_task(sampler.run())
    try:
        ops, slow_rounds = await run_rounds(pipes, na.addr, a)
        work_s = time.monotonic() - sampler.t_start
        await asyncio.sleep(0.5)
    finally:
        sample_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sample_task
        close_pipelines(pipes)
    rss1 = await settle_rss(na.pid)
    after = repl_stats(metrics(na.addr), nb.addr)
    c_drain = await settle(lambda: repl_stats(metrics(na.addr), nc.addr)["pending"], within=10, step=0.1)
    counts = metrics(na.addr)["discoverd_instances"], metrics(nc.addr)["discoverd_instances"]
    run = {"instances": n, "rounds": a.rq_renews, "ops": ops, "work_s": work_s, "slow_rounds": slow_rounds}
    return {**run, **figures(sampler.samples, (rss0, rss1), (before, after), c_drain, counts)}


def figures(
    samples: list[tuple[float, int, int, int, int]],
    rss: tuple[int, int],
    b: tuple[dict[str, int], dict[str, int]],
    c_drain: int,
    counts: tuple[float, float],
) -> dict[str, Any]:
    """RSS, B's queue (``b``: A's gauges for B before and after), C's queue and the instance counts."""
    before, after = b
    return {
        "rss_before": rss[0],
        "rss_max": max(s[1] for s in samples),
        "rss_after": rss[1],
        "pending_b_before": before["pending"],
        "pending_b_max": max(s[2] for s in samples),
        "pending_b_after": after["pending"],
        "dropped_b": after["dropped"] - before["dropped"],
        "failed_b": after["failed"] - before["failed"],
        "pending_c_max": max(s[4] for s in samples),
        "pending_c_after": c_drain,
        "instances_a": counts[0],
        "instances_c": counts[1],
        "samples": len(samples),
        "trace": [
            (round(t, 1), round(rss / 2**20, 1), pb)
            for t, rss, pb, _, _ in samples[:: max(1, len(samples) // 12)]
        ],
    }


def line(r: dict[str, Any], bound: int, limit: int, v: str, log_a: list[str]) -> str:
    """The result line."""
    grow = (r["rss_after"] - r["rss_before"]) / 2**20
    return (
        f"replication-queue ({r['instances']:,} instances on A; B killed -9; then {r['rounds']} renews of "
        f"every instance = {r['rounds'] * 30 / 60:.0f} min of 30 s renews, compressed into "
        f"{r['work_s']:.0f} s, plus {r['ops']['cancel']} cancels and {r['ops']['register']} re-registers; "
        f"{sum(r['ops'].values()):,} "
        f"writes): A's queue for dead B: {r['pending_b_before']} → max {r['pending_b_max']:,} → "
        f"{r['pending_b_after']:,} pending at the end (target <= {bound:,}: one op per instance, "
        f"at most the queue limit {limit:,}: {v}), "
        f"{r['dropped_b']:,} dropped (queue full or 10 failed attempts), {r['failed_b']} failed sends | "
        f"A RSS "
        f"{mib(r['rss_before'])} → max {mib(r['rss_max'])} → {mib(r['rss_after'])} MiB "
        f"({grow:+.1f} MiB) | queue for live C: max {r['pending_c_max']:,}, {r['pending_c_after']} at the "
        f"end; instances A {r['instances_a']:.0f} / C {r['instances_c']:.0f} | A log lines {len(log_a)}"
    )


def bench_replication_queue(a: argparse.Namespace) -> dict[str, Any]:
    """The ``replication-queue`` benchmark; its result record."""
    extra = ("--replication-queue", str(a.rq_queue_limit)) if a.rq_queue_limit else ()
    with Cluster(extra=extra) as cl:
        r = run_loop(replication_queue_async(cl, a))
        log_a = log_lines(cl.nodes[0].stderr_tail(1_000_000))
    limit = a.rq_queue_limit or 10_000
    bound = min(r["instances"] + 10, limit)
    ok = r["pending_b_max"] <= bound and r["instances_a"] == r["instances_c"]
    v = "MET" if ok else "MISSED"
    return result("replication-queue", line(r, bound, limit, v, log_a), **r, node_log=log_a[:5], verdict=v)
