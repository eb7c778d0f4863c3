"""``propagation``: register / cancel through one server until another client's watch shows it; both
clients in this process and one event loop (one clock)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from bench.harness import log, result, run_loop, stats_ms, verdict
from bench.node_api import ENV, ZONE
from bench.procs import Child, discoverd
from discoverd.client.async_client import AsyncClient

PROP_APPID = "bench.prop.svc"


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``propagation``."""
    p.add_argument("--prop-rounds", type=int, default=200, help="register/cancel rounds in propagation")
    p.add_argument("--prop-gap", type=float, default=0.02, help="seconds between changes in propagation")


class Watch:
    """Client B's watch of the app: resolves the futures waiting for a hostname to (dis)appear with the
    ``perf_counter()`` of the first list that shows it."""

    def __init__(self) -> None:
        self.waiters: dict[tuple[str, bool], asyncio.Future[float]] = {}
        self.lists_seen = 0

    def expect(self, host: str, present: bool) -> asyncio.Future[float]:
        """A future for the first list where ``host`` is (``present``) or is not in the app."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[host, present] = fut
        return fut

    async def arrival(self, host: str, present: bool, fut: asyncio.Future[float]) -> float:
        """Wait (at most 10 s) for ``fut`` of :meth:`expect`; its time."""
        t = await asyncio.wait_for(fut, 10)
        del self.waiters[host, present]
        return t

    async def follow(self, client: AsyncClient) -> None:
        """Stamp every list ``client.watch`` yields (runs until cancelled)."""
        async for instances in client.watch(PROP_APPID):
            now = time.perf_counter()
            self.lists_seen += 1
            hosts = {i.hostname for i in instances}
            for (host, present), fut in list(self.waiters.items()):
                if (host in hosts) == present and not fut.done():
                    fut.set_result(now)


async def one_round(ca: AsyncClient, w: Watch, i: int, gap: float) -> tuple[float, float, float]:
    """Register ``prop-NNNN`` with A, then close it; (register call, register → seen, cancel → gone)."""
    host = f"prop-{i:04d}"
    seen = w.expect(host, True)
    t0 = time.perf_counter()
    addr = f"http://10.0.{i // 250}.{i % 250 + 1}:80"
    reg = await ca.register(PROP_APPID, [addr], hostname=host, metadata={"i": str(i)})
    rtt = time.perf_counter() - t0
    added = await w.arrival(host, True, seen) - t0
    await asyncio.sleep(gap)
    gone = w.expect(host, False)
    t1 = time.perf_counter()
    await reg.close()
    removed = await w.arrival(host, False, gone) - t1
    await asyncio.sleep(gap)
    return rtt, added, removed


async def propagation_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    """``--prop-rounds`` rounds of :func:`one_round` after an anchor instance is seen; the figures."""
    w = Watch()
    async with (
        AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-prop-a") as ca,
        AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-prop-b") as cb,
    ):
        anchor_seen = w.expect("prop-anchor", True)
        anchor = await ca.register(PROP_APPID, ["http://10.0.0.1:80"], hostname="prop-anchor")
        task = asyncio.create_task(w.follow(cb))
        await asyncio.wait_for(anchor_seen, 10)
        await asyncio.sleep(0.2)
        rounds = [await one_round(ca, w, i, a.prop_gap) for i in range(a.prop_rounds)]
        await anchor.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        polls = cb.polls_sent
    reg_rtt, added, removed = ([r[k] for r in rounds] for k in range(3))
    return {
        "rounds": len(added),
        "register": stats_ms(added),
        "cancel": stats_ms(removed),
        "register_rtt": stats_ms(reg_rtt),
        "lists_seen": w.lists_seen,
        "watcher_polls": polls,
    }


def bench_propagation(a: argparse.Namespace) -> dict[str, Any]:
    """The ``propagation`` benchmark; its result record."""
    with discoverd("--env", ENV, "--zone", ZONE) as srv:
        log(f"propagation: {a.prop_rounds} register/cancel rounds, watcher in the same loop")
        r = run_loop(propagation_async(srv, a))
    reg, can, rtt = r["register"], r["cancel"], r["register_rtt"]
    v = verdict("propagation", reg["p99_ms"])
    line = (
        f"propagation ({r['rounds']} rounds, 2 AsyncClients in one loop, one server): register → "
        f"watcher has it: p50 {reg['p50_ms']:.2f} ms, p99 {reg['p99_ms']:.2f} ms, max {reg['max_ms']:.2f} ms "
        f"(target p99 <= 50 ms: {v}) | cancel → gone: p50 {can['p50_ms']:.2f} ms, p99 "
        f"{can['p99_ms']:.2f} ms, max {can['max_ms']:.2f} ms | register call itself: p50 "
        f"{rtt['p50_ms']:.2f} ms, p99 {rtt['p99_ms']:.2f} ms | watcher: {r['lists_seen']} lists, "
        f"{r['watcher_polls']} polls"
    )
    return result("propagation", line, **r, verdict=v)
