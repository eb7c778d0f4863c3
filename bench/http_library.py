"""Would a well-kept HTTP server library serve the registry as fast? Throughput and held-request memory
of uvicorn (httptools + uvloop), hypercorn (uvloop) and granian (ASGI and RSGI interfaces), against
the hello-world baseline (``bench/baseline_server.py``) and ``discoverd serve``'s renew; and
``uvicorn-discoverd``: uvicorn serving discoverd's own request handler (the pipeline after parsing,
through a small ASGI adapter), i.e. what replacing our HTTP front with uvicorn would give.

* **Throughput**: every server gets the same wrk command, ``wrk -t2 -c64 -d10s -s bench/lua/renew.lua``
  (POST /discovery/renew, a urlencoded form), one after the other, ``--rounds`` times (alternated, as
  this shared machine is noisy), and the medians are compared. The library servers and the baseline
  run a hello world: read the body, answer the same 32-byte JSON (``{"code":0,...}``), so a library
  figure is the most that library could do before any registry work; discoverd and
  uvicorn-discoverd run the real renew. A library qualifies only if it keeps at least 95 % of
  discoverd's renew (its hello world, at least that; with discoverd's handler, the real figure).
* **Held requests** (long polls): ``--held`` connections from 8 loopback addresses each send one
  request the server holds (discoverd: a long poll of an app that does not change; the others: a
  handler awaiting an ``asyncio.Event``); the figure is the server's RSS growth (its whole process
  tree) per held request, after the server accepted them all. A library qualifies only if it needs
  at most 1/0.95 of discoverd's memory per held request.

The libraries are not dependencies of discoverd; install them into the venv for this measurement only::

    .venv/bin/pip install uvicorn hypercorn granian
    .venv/bin/python bench/http_library.py [--rounds 3] [--duration 10] [--held 10000] [--servers ...]
    .venv/bin/python bench/http_library.py --servers discoverd,granian-rsgi --granian-buffer 8192

(``--granian-buffer`` lowers granian's per-connection HTTP/1 buffer to its minimum, which trades
nothing here and lowers its memory per held request.)

Every server runs as a child process on 127.0.0.1 (OS-assigned port), stopped by PID. One line per
server on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path
from urllib.parse import urlencode

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run
from bench.harness import log, settle, wait_until
from bench.load import run_wrk
from bench.node_api import ENV, http_call, register, service_instance
from bench.procs import Child, baseline, discoverd, raise_fd_limit, tree_fds, tree_rss
from bench.renew import LUA_ARGS, renew_spec

SERVERS = (
    "baseline",
    "discoverd",
    "uvicorn",
    "uvicorn-discoverd",
    "hypercorn",
    "granian-asgi",
    "granian-rsgi",
)
HOLD_APPID = "bench.hold"
SOURCES = [f"127.0.0.{i}" for i in range(1, 9)]
ROOT = Path(__file__).resolve().parent.parent


def child(name: str, a: argparse.Namespace) -> Child:
    """Server ``name`` as a child process (a library server: this script with ``serve``)."""
    if name == "baseline":
        return baseline()
    if name == "discoverd":
        return discoverd()
    return Child([sys.executable, str(Path(__file__)), "serve", name, str(a.granian_buffer)], name)


def throughput(name: str, a: argparse.Namespace) -> float:
    """req/s of the renew wrk run on a fresh ``name`` (discoverd's: with the renewed instance registered)."""
    with child(name, a) as srv:
        if name.endswith("discoverd"):
            register(srv.addr, renew_spec())
        r = run_wrk(srv, "renew.lua", LUA_ARGS, a)
    if r.errors:
        raise RuntimeError(f"{name}: {r.errors}")
    log(f"{name}: {r.short()}")
    return r.rps


def hold_request(name: str, srv: Child) -> bytes:
    """The request ``srv`` holds: a long poll of an unchanging app (discoverd), else ``GET /hold``."""
    if not name.endswith("discoverd"):
        return b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"
    register(srv.addr, service_instance(HOLD_APPID, 1))
    query = {"env": ENV, "appid": HOLD_APPID, "status": "1"}
    _, body = http_call(srv.addr, "GET", "/discovery/fetch?" + urlencode(query))
    latest = json.loads(body)["data"]["latest_timestamp"]
    poll = {"env": ENV, "hostname": "c", "appid": HOLD_APPID, "latest_timestamp": str(latest)}
    return b"GET /discovery/polls?%s HTTP/1.1\r\nHost: x\r\n\r\n" % urlencode(poll).encode()


async def open_held(addr: str, request: bytes, n: int) -> list[asyncio.BaseTransport]:
    """``n`` connections from :data:`SOURCES`, each sending ``request``, opened 500 at a time."""
    loop = asyncio.get_running_loop()
    host, _, port = addr.rpartition(":")

    async def one(i: int) -> asyncio.BaseTransport:
        t, _ = await loop.create_connection(asyncio.Protocol, host, int(port), local_addr=(SOURCES[i % 8], 0))
        t.write(request)
        return t

    out: list[asyncio.BaseTransport] = []
    for start in range(0, n, 500):
        out += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 500))))
    return out


async def held_memory(name: str, a: argparse.Namespace) -> float:
    """RSS growth of the server's process tree per held request, in KB."""
    with child(name, a) as srv:
        request = hold_request(name, srv)
        fds0 = await settle(lambda: tree_fds(srv.pid))
        rss0 = await settle(lambda: tree_rss(srv.pid) // 4096)
        transports = await open_held(srv.addr, request, a.held)
        try:
            await wait_until(lambda: tree_fds(srv.pid) >= fds0 + a.held, 60, f"{name} accepted", 0.1)
            rss1 = await settle(lambda: tree_rss(srv.pid) // 4096)
        finally:
            for t in transports:
                t.close()
    kb = (rss1 - rss0) * 4096 / a.held / 1024
    log(f"{name}: {a.held:,} held requests, {kb:.2f} KB each")
    return float(kb)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """``bench/run.py``'s command line (wrk settings) plus rounds, held requests, servers, granian buffer."""
    p = run.parser()
    p.description = __doc__.splitlines()[0] if __doc__ else None
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--held", type=int, default=10_000, help="held requests per server (0: skip)")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of " + ", ".join(SERVERS))
    p.add_argument("--granian-buffer", type=int, default=0, help="granian's max_buffer_size (its default)")
    return p.parse_args(argv)


def print_results(names: list[str], rps: dict[str, list[float]], kb: dict[str, float]) -> None:
    """One line per server: median req/s, its ratio to discoverd's renew, KB per held request."""
    ref_rps = statistics.median(rps["discoverd"]) if "discoverd" in rps else float("nan")
    for name in names:
        med = statistics.median(rps[name])
        runs = " / ".join(f"{x:,.0f}" for x in rps[name])
        line = f"{name}: {med:,.0f} req/s (median of {runs}), {med / ref_rps:.2f} of discoverd renew"
        if name in kb:
            line += f" | {kb[name]:.2f} KB per held request"
            if "discoverd" in kb:
                line += f" ({kb[name] / kb['discoverd']:.2f} of discoverd's)"
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Throughput rounds (the order reversed every other round), then held-request memory per server."""
    a = parse(argv)
    # granian imports the app by name in its worker: the checkout goes on every child's PYTHONPATH
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    names = [s for s in a.servers.split(",") if s]
    rps: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            log(f"round {r + 1}/{a.rounds}: {name}")
            rps[name].append(throughput(name, a))
    kb: dict[str, float] = {}
    if a.held:
        raise_fd_limit(a.held + 1024)
        kb = {name: asyncio.run(held_memory(name, a)) for name in names}
    print_results(names, rps, kb)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        from bench.library_servers import serve

        serve(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
