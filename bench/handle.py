"""In-process cost of one request through a node's handler: no sockets, no HTTP parsing.

Starts a node in this process (``discoverd.testing.running_node``), registers one instance through
the node's request handler (``node.http.handler``: the whole server-side path of a request after
parsing), then times ``--calls`` renews, fetches and registers of new hostnames through the same
handler, best of ``--repeat``.
Run it with ``PYTHONPATH=<tree>/src`` to measure another source tree (A/B): it only uses names
both the current and earlier trees have.

Usage: ``.venv/bin/python bench/handle.py [--calls 50000] [--repeat 5] [--profile renew]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Callable

from discoverd.server.http import HttpConnection, HttpRequest
from discoverd.testing import fast_config, running_node

FORM = b"application/x-www-form-urlencoded"
REGISTER = (
    b"zone=sh001&env=dev&appid=bench.renew&hostname=h1&status=1&addrs=http%3A%2F%2F10.0.0.1%3A8000"
    b"&addrs=grpc%3A%2F%2F10.0.0.1%3A9000&version=v1&metadata=%7B%22weight%22%3A%2210%22%7D"
)
RENEW = b"zone=sh001&env=dev&appid=bench.renew&hostname=h1"
FETCH = b"env=dev&appid=bench.renew&status=1"


def timed(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Best of ``repeat`` runs: microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / calls * 1e6


async def main(a: argparse.Namespace) -> None:
    async with running_node(fast_config(log_level="warning")) as node:
        http = node.http
        assert http is not None
        handler, conn = http.handler, HttpConnection(http)

        def call(method: str, path: str, query: bytes, body: bytes) -> bytes:
            headers = {b"content-type": FORM} if body else {}
            req = HttpRequest(conn, method, path, query, headers, body, True)
            answer = handler(req)
            assert answer is not None and b'"code":0' in answer, answer
            return answer

        call("POST", "/discovery/register", b"", REGISTER)
        hosts = iter(range(10**9))

        def register_new() -> bytes:  # a new hostname every time, as a registration storm sends
            body = REGISTER.replace(b"hostname=h1", b"hostname=r%d" % next(hosts))
            return call("POST", "/discovery/register", b"", body)

        cases = {
            "renew": lambda: call("POST", "/discovery/renew", b"", RENEW),
            "fetch": lambda: call("GET", "/discovery/fetch", FETCH, b""),
            "register": register_new,
        }
        if a.profile:
            prof = cProfile.Profile()
            prof.enable()
            timed(cases[a.profile], a.calls, 1)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        for name, fn in cases.items():
            print(f"{name}: {timed(fn, a.calls, a.repeat):.2f} µs per request", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--profile", choices=("renew", "fetch", "register"))
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
