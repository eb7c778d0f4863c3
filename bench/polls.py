"""``polls``: memory per held long poll, and the time from one register until every held poll is answered.

Run once per client of ``--poll-clients`` (``bench/poll_clients.py``), each on a fresh server started with
``--poll-hold``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bench.harness import log, mib, run_loop, settle, verdict, wait_until
from bench.node_api import ENV, service_instance
from bench.poll_clients import POLL_CLIENTS, PollClient
from bench.procs import Child, cpu_seconds, discoverd, open_fds, raise_fd_limit, settle_rss

POLLS_APPID = "main.feed.feed-service"
PARAMS = {"env": ENV, "appid": POLLS_APPID, "status": "1"}


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``polls``."""
    p.add_argument("--polls", type=int, default=10_000, help="held polls in the fan-out benchmark")
    p.add_argument("--poll-hold", type=float, default=120.0, help="server --poll-hold for the fan-out")
    p.add_argument("--poll-batch", type=int, default=500, help="polls opened per batch while parking")
    p.add_argument(
        "--poll-clients",
        default="aiohttp,raw",
        help="fan-out clients to run, in order: aiohttp (one task per poll) and/or raw (asyncio+httptools)",
    )
    p.add_argument(
        "--sources",
        default=",".join(f"127.0.0.{i}" for i in range(1, 9)),
        help="client source addresses for the polls (spread the ephemeral ports)",
    )


@dataclass(slots=True)
class FanOut:
    """Clocks around the change: perf_counter before the register, at its answer, when all polls ended;
    server CPU (/proc) and this process's CPU before and after."""

    t0: float
    t_reg: float
    t_end: float
    server_cpu_s: float
    client_cpu_s: float


async def register_app(ctl: aiohttp.ClientSession, base: str) -> int:
    """Register 5 instances of the app; its ``latest_timestamp``."""
    for i in range(5):
        form = service_instance(POLLS_APPID, i).form()
        async with ctl.post(f"{base}/discovery/register", data=form) as r:
            assert (await r.json())["code"] == 0
    async with ctl.get(f"{base}/discovery/fetch", params=PARAMS) as r:
        return int((await r.json())["data"]["latest_timestamp"])


def poll_query(i: int, latest: int) -> str:
    """The query of held poll ``i`` (its own hostname, the app's current ``latest_timestamp``)."""
    return urlencode(
        {"env": ENV, "hostname": f"consumer-{i:05d}", "appid": POLLS_APPID, "latest_timestamp": str(latest)}
    )


async def park(client: PollClient, srv: Child, a: argparse.Namespace, latest: int, fds0: int) -> None:
    """Open ``--polls`` polls in batches; return once the server accepted all of them (its fd count)."""
    n = a.polls
    for start in range(0, n, a.poll_batch):
        await client.open_batch(
            [(i, poll_query(i, latest)) for i in range(start, min(n, start + a.poll_batch))]
        )
    try:
        await wait_until(lambda: open_fds(srv.pid) >= fds0 + n, 30, "the server to accept them", 0.1)
    except RuntimeError:
        log(f"server has {open_fds(srv.pid) - fds0} of {n} connections; client sent {client.sent}")
        raise


async def held_rss(ctl: aiohttp.ClientSession, srv: Child, client: PollClient) -> int:
    """The server's settled RSS with every poll read; RuntimeError if any was answered already.

    A request on a fresh connection passes through the server's loop after the polls were read (every
    poll request was written before it); then the RSS is left to settle."""
    async with ctl.get(f"{srv.url}/discovery/fetch", params=PARAMS) as r:
        await r.read()
    rss = await settle_rss(srv.pid)
    done_early = sum(f.done() for f in client.futures)
    if done_early or client.bad:
        raise RuntimeError(f"{done_early} polls answered before the change: {client.bad[:3]}")
    return rss


async def fan_out(ctl: aiohttp.ClientSession, srv: Child, client: PollClient, n: int) -> FanOut:
    """The change: one register; waits until every held poll got its answer (RuntimeError otherwise)."""
    cpu0, pcpu0 = cpu_seconds(srv.pid), time.process_time()
    t0 = time.perf_counter()
    form = service_instance(POLLS_APPID, 99).form()
    async with ctl.post(f"{srv.url}/discovery/register", data=form) as r:
        reg_body = await r.read()
    t_reg = time.perf_counter()
    finished, pending = await asyncio.wait(client.futures, timeout=30)
    t_end = time.perf_counter()
    cpu1, pcpu1 = cpu_seconds(srv.pid), time.process_time()
    errors = [repr(f.exception()) for f in finished if f.exception() is not None]
    if pending or errors or client.bad or len(client.arrivals) != n:
        raise RuntimeError(
            f"{len(pending)} polls unanswered, errors: {(errors + client.bad)[:3]} {reg_body[:100]!r}"
        )
    return FanOut(t0, t_reg, t_end, cpu1 - cpu0, pcpu1 - pcpu0)


def record(
    client: PollClient, a: argparse.Namespace, rss: tuple[int, int], park_s: float, f: FanOut
) -> dict[str, Any]:
    """The figures of one run (``rss``: before parking, held)."""
    n, arrivals = a.polls, sorted(client.arrivals)
    return {
        "client": client.name,
        "polls": n,
        "sources": len([s for s in a.sources.split(",") if s]),
        "rss_before": rss[0],
        "rss_held": rss[1],
        "kb_per_poll": (rss[1] - rss[0]) / n / 1024,
        "all_answered_ms": (arrivals[-1] - f.t0) * 1000,
        "register_rtt_ms": (f.t_reg - f.t0) * 1000,
        "first_ms": (arrivals[0] - f.t0) * 1000,
        "median_ms": (arrivals[n // 2] - f.t0) * 1000,
        "server_cpu_ms": f.server_cpu_s * 1000,
        "client_cpu_ms": f.client_cpu_s * 1000,
        "wall_ms": (f.t_end - f.t0) * 1000,
        "answer_bytes": client.answer_bytes,
        "park_s": park_s,
    }


async def polls_async(srv: Child, a: argparse.Namespace, client_name: str) -> dict[str, Any]:
    """One fan-out run with client ``client_name`` against ``srv``; its figures."""
    sources = [s for s in a.sources.split(",") if s]
    # The control session closes its connections after each request, so that the server's fd count
    # before parking holds no client connection.
    ctl_conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=ctl_conn, timeout=aiohttp.ClientTimeout(total=30)) as ctl:
        latest = await register_app(ctl, srv.url)
        await settle(lambda: open_fds(srv.pid))
        rss0 = await settle_rss(srv.pid)
        fds0 = open_fds(srv.pid)
        log(f"polls[{client_name}]: server RSS {mib(rss0)} MiB, {fds0} fds; parking {a.polls:,} polls")
        client = POLL_CLIENTS[client_name](srv.addr, sources, a.poll_hold)
        try:
            t_park = time.monotonic()
            await park(client, srv, a, latest, fds0)
            rss1 = await held_rss(ctl, srv, client)
            park_s = time.monotonic() - t_park
            kb = (rss1 - rss0) / a.polls / 1024
            log(f"polls[{client_name}]: {a.polls:,} held after {park_s:.1f} s; {kb:.2f} KB per held poll")
            f = await fan_out(ctl, srv, client, a.polls)
        finally:
            await client.close()
    return record(client, a, (rss0, rss1), park_s, f)


def line(r: dict[str, Any], kb_v: str, ms_v: str) -> str:
    """The result line of one run."""
    return (
        f"polls[{r['client']} client]: {r['polls']:,} held polls ({r['sources']} source addrs): "
        f"{r['kb_per_poll']:.2f} KB per held poll (RSS {mib(r['rss_before'])} → "
        f"{mib(r['rss_held'])} MiB; target <= 16 KB: {kb_v}) | one register → all answered in "
        f"{r['all_answered_ms']:.0f} ms (first {r['first_ms']:.0f}, median {r['median_ms']:.0f}, "
        f"register answered {r['register_rtt_ms']:.0f} ms; target <= 400 ms: {ms_v}) | CPU during "
        f"fan-out: server {r['server_cpu_ms']:.0f} ms, client {r['client_cpu_ms']:.0f} ms | "
        f"answer {r['answer_bytes']} B"
    )


def bench_polls(a: argparse.Namespace) -> dict[str, Any]:
    """The ``polls`` benchmark, one run per ``--poll-clients`` entry; its result record (``runs``)."""
    raise_fd_limit(a.polls + 1024)
    runs: list[dict[str, Any]] = []
    lines = []
    for client_name in a.poll_clients.split(","):
        with discoverd("--poll-hold", str(a.poll_hold)) as srv:
            r = run_loop(polls_async(srv, a, client_name))
        kb_v, ms_v = verdict("polls_kb", r["kb_per_poll"]), verdict("polls_ms", r["all_answered_ms"])
        lines.append(line(r, kb_v, ms_v))
        print(lines[-1], flush=True)
        runs.append({**r, "verdict_kb": kb_v, "verdict_ms": ms_v})
    return {"bench": "polls", "runs": runs, "line": "\n".join(lines)}
