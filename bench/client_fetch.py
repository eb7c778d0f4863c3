"""``client-fetch``: the client SDK's read path, ``AsyncClient.fetch`` from the watched cache (and, for
information, the sync ``Client.fetch`` through its portal)."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bench.fetch import FETCH_APPID, register_fetch_app
from bench.harness import log, pct, result, run_loop, verdict
from bench.node_api import ENV, ZONE
from bench.procs import Child, discoverd
from discoverd.client.async_client import AsyncClient
from discoverd.client.sync_client import Client as SyncClient

BATCH = 1000


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``client-fetch``."""
    p.add_argument("--cf-calls", type=int, default=100_000, help="cached AsyncClient.fetch calls timed")
    p.add_argument("--cf-sync-calls", type=int, default=10_000, help="sync Client.fetch calls timed")


def timer_overhead_ns() -> float:
    """Median cost of one ``perf_counter_ns()`` pair (subtracted from nothing, printed for reference)."""
    ns = time.perf_counter_ns
    samples = []
    for _ in range(10_000):
        t0 = ns()
        samples.append(ns() - t0)
    samples.sort()
    return float(samples[len(samples) // 2])


def per_call_us(per_call: list[int]) -> dict[str, Any]:
    """Count, median, p99 and max of nanosecond timings, in µs."""
    per_call.sort()
    return {
        "calls": len(per_call),
        "median_us": pct(per_call, 0.5) / 1000,
        "p99_us": pct(per_call, 0.99) / 1000,
        "max_us": per_call[-1] / 1000,
    }


async def check_cached(client: AsyncClient, count: int) -> AsyncIterator[Any]:
    """Watch the app and fetch it once; RuntimeError unless the cache holds its ``count`` instances.
    Returns the watch, to be closed after the measurement (the app stays watched until then)."""
    watch = client.watch(FETCH_APPID)
    first = await anext(watch)
    got = await client.fetch(FETCH_APPID)
    view = client._state.apps[FETCH_APPID]
    if len(first) != count or len(got) != count or not view.known or view.dirty:
        raise RuntimeError(f"client sees {len(first)}/{len(got)} instances, known={view.known}")
    return watch


async def time_each(fetch: Callable[[str], Awaitable[object]], n: int) -> list[int]:
    """``n`` calls timed one by one (ns), ``await asyncio.sleep(0)`` after every :data:`BATCH`."""
    ns = time.perf_counter_ns
    per_call: list[int] = []
    for _ in range(n // BATCH):
        for _ in range(BATCH):
            t0 = ns()
            await fetch(FETCH_APPID)
            per_call.append(ns() - t0)
        await asyncio.sleep(0)  # let the loop run between batches, as an application would
    return per_call


async def time_batches(fetch: Callable[[str], Awaitable[object]], n: int) -> list[float]:
    """``n`` calls in batches of :data:`BATCH`; the mean per call of each batch (ns), sorted."""
    ns = time.perf_counter_ns
    batch_means: list[float] = []
    for _ in range(n // BATCH):
        t0 = ns()
        for _ in range(BATCH):
            await fetch(FETCH_APPID)
        batch_means.append((ns() - t0) / BATCH)
        await asyncio.sleep(0)
    return sorted(batch_means)


async def client_fetch_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    """``--cf-calls`` cached ``AsyncClient.fetch`` calls; RuntimeError if the client re-polled meanwhile."""
    async with AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-fetcher") as client:
        watch = await check_cached(client, a.fetch_instances)
        await asyncio.sleep(0.3)  # the re-poll with the new latest_timestamp is held by now
        polls0 = client.polls_sent
        per_call = await time_each(client.fetch, a.cf_calls)
        batch_means = await time_batches(client.fetch, a.cf_calls)
        if client.polls_sent != polls0:
            raise RuntimeError("the client re-polled during the measurement (cache changed?)")
        await watch.aclose()  # type: ignore[attr-defined]
    return {
        **per_call_us(per_call),
        "batch_mean_median_us": pct(batch_means, 0.5) / 1000,
        "batch_mean_p99_us": pct(batch_means, 0.99) / 1000,
    }


def sync_fetch(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    """``--cf-sync-calls`` sync ``Client.fetch`` calls (cache + portal round trip), timed one by one."""
    ns = time.perf_counter_ns
    with SyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-sync-fetcher") as client:
        got = client.fetch(FETCH_APPID)  # the first call asks the node and starts watching
        view = client._async._state.apps.get(FETCH_APPID)
        if view is None or not view.known or view.dirty:
            raise RuntimeError("the sync client's cache does not hold the app after the first fetch")
        time.sleep(0.3)  # the poll with the app is held by now
        if len(got) != a.fetch_instances:
            raise RuntimeError(f"sync client sees {len(got)} instances")
        per_call: list[int] = []
        for _ in range(a.cf_sync_calls):
            t0 = ns()
            client.fetch(FETCH_APPID)
            per_call.append(ns() - t0)
    return per_call_us(per_call)


def bench_client_fetch(a: argparse.Namespace) -> dict[str, Any]:
    """The ``client-fetch`` benchmark; its result record."""
    overhead = timer_overhead_ns()
    with discoverd("--env", ENV, "--zone", ZONE) as srv:
        register_fetch_app(srv.addr, a.fetch_instances)
        log(f"client-fetch: {a.cf_calls:,} AsyncClient.fetch calls from the watched cache")
        r = run_loop(client_fetch_async(srv, a))
        log(f"client-fetch: {a.cf_sync_calls:,} sync Client.fetch calls (portal round trip)")
        s = sync_fetch(srv, a)
    v = verdict("client_fetch", r["median_us"])
    line = (
        f"client-fetch: AsyncClient.fetch from the watched cache ({a.fetch_instances} instances, "
        f"{r['calls']:,} calls timed one by one): median {r['median_us']:.2f} µs, p99 {r['p99_us']:.2f} µs, "
        f"max {r['max_us']:.0f} µs (target median <= 5 µs: {v}); in batches of 1,000: median "
        f"{r['batch_mean_median_us']:.2f} µs/call, p99 {r['batch_mean_p99_us']:.2f} | sync Client.fetch "
        f"({s['calls']:,} calls): median {s['median_us']:.1f} µs, p99 {s['p99_us']:.1f} µs, max "
        f"{s['max_us']:.0f} µs (no target) | timer pair {overhead:.0f} ns (included)"
    )
    return result("client-fetch", line, **r, sync=s, timer_overhead_ns=overhead, verdict=v)
