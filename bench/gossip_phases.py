"""The gossip benchmark's measurements: join convergence, idle cost and failure detection, each next to
memberlist's formula (:func:`formulas`)."""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from typing import Any, cast

from bench.gossip_host import SCALED, Host, log, make_config
from bench.gossip_workers import GossipCluster, LocalWorker, RemoteWorker, Worker
from discoverd.core.gossip.broadcast import retransmit_limit
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.suspicion import suspicion_k, suspicion_timeouts

#: The configuration fields every result reports.
CONFIG_FIELDS = (
    *SCALED,
    "tcp_timeout",
    "gossip_nodes",
    "retransmit_mult",
    "suspicion_mult",
    "suspicion_max_timeout_mult",
    "indirect_checks",
)


def formulas(cfg: GossipConfig, n: int) -> dict[str, Any]:
    """memberlist's expectations for ``n`` nodes: gossip rounds and join estimate, retransmit limit,
    suspicion timeouts and ``k``, expected and longest detection time, idle packets per node and second."""
    rounds = math.ceil(math.log(n) / math.log(cfg.gossip_nodes + 1))
    lo, hi = suspicion_timeouts(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n, cfg.probe_interval)
    return {
        "gossip_rounds": rounds,
        "join": cfg.gossip_interval * rounds,
        "push_pull": cfg.push_pull_interval,
        "retransmit_limit": retransmit_limit(cfg.retransmit_mult, n),
        "suspicion_min": lo,
        "suspicion_max": hi,
        "suspicion_k": suspicion_k(cfg.suspicion_mult, n),
        "detect_expected": cfg.probe_interval + lo,
        "detect_max": cfg.probe_interval + hi,
        "packets_per_s": 2 / cfg.probe_interval,
    }


# -- join ------------------------------------------------------------------------------------------------


def join_pairs(names: list[str], addrs: dict[str, str], first: bool, rng: random.Random) -> list[list[str]]:
    """``[name, seed address]`` for every node but the first: node 0 (``first``) or a random earlier one."""
    return [
        [name, addrs[names[0] if first else names[rng.randrange(i)]]] for i, name in enumerate(names) if i
    ]


def join_timeout(cfg: GossipConfig, a: argparse.Namespace) -> float:
    """``--join-timeout``, else 3 push/pull intervals, 50 × the join estimate, at least 5 s."""
    if a.join_timeout is not None:
        return float(a.join_timeout)
    return max(3 * cfg.push_pull_interval, 50 * float(formulas(cfg, a.nodes)["join"]), 5.0)


async def phase_join(
    c: GossipCluster, a: argparse.Namespace, cfg: GossipConfig, rng: random.Random
) -> dict[str, Any]:
    """Start ``--nodes`` nodes, join them one after the other; until every node lists all of them."""
    names = c.new_names(a.nodes)
    await c.start(names)
    log(f"{len(names)} nodes started; joining")
    pairs = join_pairs(names, c.addrs, a.join_first, rng)
    await c.lag(on=True)
    t0 = time.monotonic()
    joins = await c.join(pairs)
    timeout = join_timeout(cfg, a)
    reached, members = await c.wait_members(timeout)
    lag = await c.lag(on=False)
    times = [t - t0 for t in reached.values() if t is not None]
    res = join_figures(times, members, a.nodes)
    res |= {
        "joins_took": max(j["done"] for j in joins) - t0,
        "join_errors": [e for j in joins for e in j["errors"]],
    }
    res |= {"timeout": timeout, "min_members": min(members.values()), "lag": lag}
    if not res["converged"]:
        res["unconverged"] = {k: v for k, v in members.items() if v < a.nodes}
        res["missing_pairs"] = sum(a.nodes - v for v in members.values())
    log(f"join: converged={res['converged']} in {res['seconds']} s (joins took {res['joins_took']:.3f} s)")
    return res


def join_figures(times: list[float], members: dict[str, int], n: int) -> dict[str, Any]:
    """Converged (all ``n`` reached), and when the last, the median and the first node got there."""
    converged = len(times) == n
    return {
        "converged": converged,
        "seconds": max(times) if converged else None,
        "median_node": statistics.median(times) if times else None,
        "first_node": min(times) if times else None,
    }


# -- idle ------------------------------------------------------------------------------------------------


async def drain_queues(c: GossipCluster, cfg: GossipConfig, limit: float) -> float:
    """Wait until every broadcast queue is empty (at most ``limit`` s); returns how long it took."""
    t0 = time.monotonic()
    while (await c.snapshot())["queued"] and time.monotonic() - t0 < limit:  # noqa: ASYNC110 - remote state
        await asyncio.sleep(cfg.gossip_interval)
    return time.monotonic() - t0


async def phase_idle(c: GossipCluster, a: argparse.Namespace, cfg: GossipConfig) -> dict[str, Any]:
    """With the queues drained and the lag monitors off: CPU, packets and health over ``--idle`` s."""
    settled = await drain_queues(c, cfg, max(2.0, 20 * cfg.gossip_interval))
    await c.lag(on=False)
    before = await c.snapshot()
    t0 = time.monotonic()
    await asyncio.sleep(a.idle)
    after = await c.snapshot()
    secs = time.monotonic() - t0
    res = idle_figures(before, after, secs, a.scale)
    res = {"seconds": secs, "settle": settled, **res}
    log(
        f"idle: {res['cpu_pct_per_node']:.3f} % of a core per node, {res['packets_per_s_per_node']:.1f} pkt/s"
    )
    return res


def idle_figures(before: dict[str, Any], after: dict[str, Any], secs: float, scale: float) -> dict[str, Any]:
    """The idle figures from two cluster snapshots ``secs`` apart."""
    nodes = after["nodes"]
    cpu = after["cpu"] - before["cpu"]
    refutations = sum(after["refutations"].values()) - sum(before["refutations"].values())
    return {
        "cpu_seconds": cpu,
        "cpu_pct_per_node": 100 * cpu / secs / nodes,
        "cpu_pct_per_node_scale1": 100 * cpu / secs / nodes / scale,
        "cpu_pct_total": 100 * cpu / secs,
        "packets_per_s_per_node": (after["packets"] - before["packets"]) / nodes / secs,
        "push_pulls": after["push_pulls"] - before["push_pulls"],
        "refutations": refutations,
        "false_deaths": [x for x in after["leaves"] if x not in before["leaves"]],
        "awareness_max": after["awareness"],
        "suspects_at_end": after["suspects"],
        "bad_or_dropped": after["bad"] + after["dropped"] - before["bad"] - before["dropped"],
    }


# -- failure detection -------------------------------------------------------------------------------------


async def phase_fail(
    c: GossipCluster, a: argparse.Namespace, cfg: GossipConfig, rng: random.Random, round_no: int
) -> dict[str, Any]:
    """Shut one random node down (never node 0) without a leave; until every other node has it DEAD.
    Then a new node replaces it (the rejoin is timed too)."""
    live = [n for n in c.where if n != "node-00" and n not in c.killed]
    victim = rng.choice(live)
    f = formulas(cfg, a.nodes)
    timeout = 1.5 * (cfg.awareness_max_multiplier * cfg.probe_interval + f["suspicion_max"]) + 5
    await c.lag(on=True)
    t_kill = cast(float, await c.where[victim].call("kill", name=victim))
    c.killed.add(victim)
    waits = await c.each("wait_dead", victim=victim, timeout=timeout)
    lag = await c.lag(on=False)
    res = fail_figures(waits, t_kill, cfg, a.nodes)
    res = {"victim": victim, **res, "lag": lag}
    res["ratio"] = res["all_dead"] / res["expected"] if res["all_dead"] is not None else None
    log(
        f"failure {round_no}: {victim} dead everywhere after {res['all_dead']} s "
        f"(first suspect {res['first_suspect']}, first dead {res['first_dead']})"
    )
    res["rejoin"], res["rejoin_min_members"] = await rejoin(c, a, cfg, victim)
    return res


def fail_figures(waits: list[dict[str, Any]], t_kill: float, cfg: GossipConfig, nodes: int) -> dict[str, Any]:
    """Suspicion and death times after ``t_kill`` from the workers' ``wait_dead``, and the formula's
    expectation for the survivors' median table size."""
    suspect = [t - t_kill for w in waits for t in w["suspect"].values()]
    dead = [t - t_kill for w in waits for t in w["dead"].values()]
    table_n = [n for w in waits for n in w["table_n"].values()]
    missing = [m for w in waits for m in w["missing"]]
    n_used = int(statistics.median(table_n)) if table_n else nodes
    fr = formulas(cfg, n_used)
    return {
        "all_dead": max(dead) if not missing else None,
        "first_suspect": min(suspect) if suspect else None,
        "first_dead": min(dead) if dead else None,
        "median_dead": statistics.median(dead) if dead else None,
        "suspected_by": len(suspect),
        "missing": missing,
        "table_n": n_used,
        "expected": fr["detect_expected"],
        "min_bound": fr["suspicion_min"],
        "max_bound": fr["detect_max"],
    }


async def rejoin(
    c: GossipCluster, a: argparse.Namespace, cfg: GossipConfig, victim: str
) -> tuple[float | None, int]:
    """Replace ``victim`` by a new node (same worker) joining node 0, so the next round again has N live
    nodes; (seconds until every node lists N, or None, and the fewest members a node lists)."""
    (name,) = c.new_names(1)
    await c.each("expect", n=a.nodes)
    await c.start([name], c.where[victim])
    t0 = time.monotonic()
    await c.where[name].call("join", pairs=[[name, c.addrs["node-00"]]])
    reached, members = await c.wait_members(max(3 * cfg.push_pull_interval, 5.0))
    times = [t - t0 for t in reached.values() if t is not None]
    return (max(times) if len(times) == len(reached) else None), min(members.values())


# -- the run ----------------------------------------------------------------------------------------------


async def make_workers(a: argparse.Namespace) -> list[Worker]:
    """``--procs`` worker processes, or (``--procs 1``) this process."""
    if a.procs > 1:
        return [await RemoteWorker.spawn(a) for _ in range(a.procs)]
    return [LocalWorker(Host(a.preset, a.scale, a.push_pull))]


async def run(a: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark: join, then (if it converged) idle and ``--repeat`` failure rounds; every
    figure. The workers are closed at the end."""
    cfg = make_config(a.preset, a.scale, push_pull=a.push_pull)
    rng = random.Random(a.seed)
    workers = await make_workers(a)
    c = GossipCluster(workers, a.nodes)
    out: dict[str, Any] = {
        **{k: getattr(a, k) for k in ("nodes", "preset", "scale")},
        "procs": max(1, a.procs),
        "loop": a.loop,
        "seed": a.seed,
        "config": {f: getattr(cfg, f) for f in CONFIG_FIELDS},
        "formula": formulas(cfg, a.nodes),
    }
    try:
        out["join"] = await phase_join(c, a, cfg, rng)
        if out["join"]["converged"]:
            out["idle"] = await phase_idle(c, a, cfg)
            out["failure"] = [await phase_fail(c, a, cfg, rng, i + 1) for i in range(a.repeat)]
            final = await c.snapshot()
            out["refutations_total"] = sum(final["refutations"].values())
            out["leaves_total"] = len(final["leaves"])
            out["false_deaths_total"] = [x for x in final["leaves"] if x[1] not in c.killed]
    finally:
        for w in workers:
            await w.close()
    return out
