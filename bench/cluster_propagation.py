"""``cluster-propagation``: register on node A of a 3-node cluster → a long poll parked on B and on C
answers with it; p50/p99/max of the later of the two (and a cancel, for information)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import aiohttp

from bench.cluster import Cluster, has_host
from bench.harness import log, result, run_loop, stats_ms, verdict, wait_until
from bench.node_api import ENV, ZONE, parse_metrics, service_instance
from bench.procs import Child

CPROP_APPID = "bench.cprop.svc"


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``cluster-propagation``."""
    p.add_argument("--cprop-rounds", type=int, default=200, help="register rounds in cluster-propagation")


class Probe:
    """Requests to the nodes over one aiohttp session: A takes the changes, B and C hold the polls."""

    def __init__(self, s: aiohttp.ClientSession, cl: Cluster) -> None:
        self.s = s
        self.na, nb, nc = cl.nodes
        self.watchers = (nb, nc)

    async def call(
        self, method: str, node: Child, path: str, form: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        """One request (form body for POST, query for GET); the decoded answer."""
        url = f"{node.url}{path}"
        if method == "POST":
            resp = await self.s.post(url, data=list(form))
        else:
            resp = await self.s.get(url, params=list(form))
        async with resp:
            body = await resp.read()
        return cast(dict[str, Any], json.loads(body))

    async def latest(self, node: Child) -> int:
        """The node's own ``latest_timestamp`` of the app."""
        form = [("env", ENV), ("appid", CPROP_APPID), ("status", "1")]
        doc = await self.call("GET", node, "/discovery/fetch", form)
        if doc.get("code") != 0:
            raise RuntimeError(f"fetch on {node.name}: {doc}")
        return int(doc["data"]["latest_timestamp"])

    async def held(self, node: Child) -> int:
        """The node's ``discoverd_held_polls`` gauge."""
        async with self.s.get(f"{node.url}/metrics") as resp:
            return int(parse_metrics(await resp.text())["discoverd_held_polls"])

    async def watch(self, node: Child, since: int, host: str, present: bool) -> float:
        """Long-poll ``node`` from ``since`` until ``host`` is (not) in the answer; its arrival."""
        form = [("env", ENV), ("appid", CPROP_APPID), ("latest_timestamp", str(since))]
        form.append(("hostname", f"bench-cprop-watch-{node.name[-1]}"))
        while True:
            doc = await self.call("GET", node, "/discovery/polls", form)
            now = time.perf_counter()
            if doc.get("code") == -304:
                continue
            if doc.get("code") != 0:
                raise RuntimeError(f"poll on {node.name}: {str(doc)[:300]}")
            info = doc["data"][CPROP_APPID]
            hosts = {i["hostname"] for items in info["instances"].values() for i in items}
            if (host in hosts) == present:
                return now
            form[2] = ("latest_timestamp", str(info["latest_timestamp"]))

    async def park(self, host: str, present: bool) -> list[asyncio.Task[float]]:
        """Park a poll on B and one on C; returns once both nodes count it held."""
        since = [await self.latest(w) for w in self.watchers]
        before = [await self.held(w) for w in self.watchers]
        tasks = [
            asyncio.create_task(self.watch(w, ts, host, present))
            for w, ts in zip(self.watchers, since, strict=True)
        ]
        deadline = time.monotonic() + 10
        while [await self.held(w) for w in self.watchers] != [b + 1 for b in before]:
            if time.monotonic() > deadline or any(t.done() for t in tasks):
                for t in tasks:
                    t.cancel()
                raise RuntimeError(f"polls not parked on B and C ({before}); done early: {tasks}")
            await asyncio.sleep(0.002)
        return tasks

    async def change(self, action: str, form: list[tuple[str, str]], host: str) -> tuple[float, list[float]]:
        """Park a poll on B and C, send ``action`` to A; (A's answer time, [B, C] delays)."""
        tasks = await self.park(host, action == "register")
        t0 = time.perf_counter()
        doc = await self.call("POST", self.na, f"/discovery/{action}", form)
        rtt = time.perf_counter() - t0
        if doc.get("code") != 0:
            raise RuntimeError(f"{action} on A: {doc}")
        arrivals = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return rtt, [t - t0 for t in arrivals]

    async def anchor(self) -> None:
        """Register the anchor instance on A; return once B and C have it."""
        anchor = service_instance(CPROP_APPID, 0)
        anchor.hostname = "cprop-anchor"
        doc = await self.call("POST", self.na, "/discovery/register", anchor.form())
        if doc.get("code") != 0:
            raise RuntimeError(f"anchor register: {doc}")
        for w in self.watchers:
            await wait_until(partial(has_host, w, CPROP_APPID, "cprop-anchor"), 10, "the anchor")


async def cluster_propagation_async(cl: Cluster, a: argparse.Namespace) -> dict[str, Any]:
    """``--cprop-rounds`` register + cancel rounds on A, watched on B and C; the figures."""
    both: list[float] = []
    per_node: list[list[float]] = [[], []]
    rtts: list[float] = []
    gone: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        probe = Probe(s, cl)
        await probe.anchor()
        for i in range(a.cprop_rounds):
            spec = service_instance(CPROP_APPID, i + 1)
            spec.hostname = f"cprop-{i:04d}"
            rtt, delays = await probe.change("register", spec.form(), spec.hostname)
            rtts.append(rtt)
            both.append(max(delays))
            for k, d in enumerate(delays):
                per_node[k].append(d)
            cancel = [("zone", ZONE), ("env", ENV), ("appid", CPROP_APPID), ("hostname", spec.hostname)]
            gone.append(max((await probe.change("cancel", cancel, spec.hostname))[1]))
    return {
        "rounds": len(both),
        "both": stats_ms(both),
        "on_b": stats_ms(per_node[0]),
        "on_c": stats_ms(per_node[1]),
        "register_rtt": stats_ms(rtts),
        "cancel_both": stats_ms(gone),
    }


def bench_cluster_propagation(a: argparse.Namespace) -> dict[str, Any]:
    """The ``cluster-propagation`` benchmark; its result record."""
    with Cluster() as cl:
        log(f"cluster-propagation: {a.cprop_rounds} rounds: register on A → long polls parked on B and C")
        r = run_loop(cluster_propagation_async(cl, a))
        errors = cl.log_lines()
    both, b, c, rtt, gone = r["both"], r["on_b"], r["on_c"], r["register_rtt"], r["cancel_both"]
    v = verdict("cluster_propagation", both["p99_ms"])
    line = (
        f"cluster-propagation ({r['rounds']} rounds, 3 nodes; register on A → a long poll parked on B and on "
        f"C answers): visible on both: p50 {both['p50_ms']:.2f} ms, p99 {both['p99_ms']:.2f} ms, max "
        f"{both['max_ms']:.2f} ms (target p99 <= 50 ms: {v}) | on B p50 {b['p50_ms']:.2f} / p99 "
        f"{b['p99_ms']:.2f} ms, on C p50 {c['p50_ms']:.2f} / p99 {c['p99_ms']:.2f} ms | register answered "
        f"by A: p50 {rtt['p50_ms']:.2f}, p99 {rtt['p99_ms']:.2f} ms | cancel on A → gone on both: p50 "
        f"{gone['p50_ms']:.2f}, p99 {gone['p99_ms']:.2f}, max {gone['max_ms']:.2f} ms | node log lines "
        f"{len(errors)}"
    )
    return result("cluster-propagation", line, **r, node_log=errors[:5], verdict=v)
