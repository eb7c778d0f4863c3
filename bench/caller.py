"""Caller overhead: ``AsyncCaller.get`` vs a plain aiohttp session to the same backend, keep-alive.

Starts a registry node and one aiohttp backend as child processes (loopback, OS-assigned ports),
registers the backend, then times sequential requests in alternating batches (plain, caller, plain,
caller, ...) so both see the same machine noise. Prints per-request medians and the ratio
(target: caller ≤ 1.2 × plain).

    .venv/bin/python bench/caller.py [--requests 4000] [--batch 250]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench.procs import Child
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.testing import ServerProcess

BACKEND = """
import sys
from aiohttp import web
async def ping(request):
    return web.Response(body=b"pong" * 64)
app = web.Application()
app.router.add_get("/ping", ping)
import asyncio
async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"backend listening on 127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def timed(call: Callable[[], Awaitable[None]], n: int) -> list[float]:
    """``n`` sequential calls, each timed (seconds)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def alternate(
    plain: Callable[[], Awaitable[None]], via_caller: Callable[[], Awaitable[None]], requests: int, batch: int
) -> tuple[list[float], list[float]]:
    """Warm both paths (connections, caches), then ``requests`` of each in alternating batches; timings."""
    await timed(plain, 200)
    await timed(via_caller, 200)
    p: list[float] = []
    c: list[float] = []
    for _ in range(requests // batch):
        p += await timed(plain, batch)
        c += await timed(via_caller, batch)
    return p, c


async def measure(backend: str, requests: int, batch: int) -> None:
    """Register the backend (``HOST:PORT``) on a fresh node, then time plain and caller requests in
    alternating batches; prints the line."""
    with ServerProcess(
        ["--hostname", "bench", "--env", "dev", "--zone", "sh001", "--log-level", "warning"]
    ) as srv:
        cfg = ClientConfig(start_timeout=10)
        async with AsyncClient([srv.addr], env="dev", zone="sh001", hostname="b", config=cfg) as client:
            await client.register("echo", [f"http://{backend}"])
            caller = client.caller()
            url = f"http://{backend}/ping"
            async with aiohttp.ClientSession() as session:

                async def plain() -> None:
                    async with session.get(url) as r:
                        await r.read()

                async def via_caller() -> None:
                    await caller.get("echo", "/ping")

                p, c = await alternate(plain, via_caller, requests, batch)
    mp, mc = statistics.median(p), statistics.median(c)
    ratio = mc / mp
    verdict = "MET" if ratio <= 1.2 else "MISSED"
    print(
        f"caller-overhead: plain aiohttp median {mp * 1e6:.0f} µs, caller median {mc * 1e6:.0f} µs "
        f"({len(p)} requests each, alternating batches of {batch}) | ratio {ratio:.2f} | "
        f"target <= 1.2: {verdict}"
    )


def main(requests: int, batch: int) -> None:
    """Start the backend (a child process, stopped by PID) and measure."""
    with Child([sys.executable, "-c", BACKEND], "backend") as backend:
        asyncio.run(measure(backend.addr, requests, batch))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=250)
    ns = ap.parse_args()
    main(ns.requests, ns.batch)
