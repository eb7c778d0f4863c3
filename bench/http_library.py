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
import importlib
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import run as harness

from discoverd.server.http import Handler, HttpRequest
from discoverd.testing import fast_config, running_node

BODY = b'{"code":0,"message":"0","ttl":1}'
JSON = b"application/json; charset=utf-8"
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
_release: asyncio.Event | None = None


# -- the library servers (child side) -------------------------------------------------------------------


def _held() -> asyncio.Event:
    global _release  # noqa: PLW0603 - one event per server process, made in its loop
    if _release is None:
        _release = asyncio.Event()
    return _release


async def asgi_app(
    scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any
) -> None:
    """Hello world: read the body, answer :data:`BODY`; ``/hold`` waits first (never released)."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()  # lifespan.startup, then lifespan.shutdown
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        msg = await receive()
        more = bool(msg.get("more_body"))
    if scope["path"] == "/hold":
        await _held().wait()
    headers = [(b"content-type", JSON), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def rsgi_app(scope: Any, protocol: Any) -> None:
    """The same hello world on granian's RSGI interface."""
    await protocol()
    if scope.path == "/hold":
        await _held().wait()
    protocol.response_bytes(200, [("content-type", JSON.decode())], BODY)


class _Deferred:
    """The connection side of one request handed to discoverd's handler from an ASGI server: a held
    request's answer (``respond``) resolves :attr:`answer`."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def finish(self, req: HttpRequest, answer: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(answer)


def discoverd_asgi(handler: Handler) -> Callable[..., Awaitable[None]]:
    """An ASGI app running discoverd's own request handler (the whole pipeline after parsing): the
    request becomes an ``HttpRequest``; the encoded answer is split back into status, headers, body."""

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
        body, more = b"", True
        while more:
            msg = await receive()
            body, more = body + msg.get("body", b""), bool(msg.get("more_body"))
        conn = _Deferred(scope["client"][0] if scope.get("client") else "")
        headers = {k.lower(): v for k, v in scope["headers"]}
        req = HttpRequest(conn, scope["method"], scope["path"], scope["query_string"], headers, body, True)
        answer = handler(req)
        if answer is None:
            answer = await conn.answer
        head, _, payload = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = [tuple(line.split(b": ", 1)) for line in lines[1:] if not line.startswith(b"Date:")]
        await send({"type": "http.response.start", "status": int(lines[0][9:12]), "headers": fields})
        await send({"type": "http.response.body", "body": payload})

    return app


async def _uvicorn_discoverd(port: int) -> None:
    uvicorn = importlib.import_module("uvicorn")
    config = fast_config(hostname="bench-node", log_level="warning")
    async with running_node(config) as node:  # its own HTTP front idles on another port
        app = discoverd_asgi(node.http.handler)
        await uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, loop="none", http="httptools", lifespan="off",
                log_level="warning", access_log=False, backlog=4096,
            )
        ).serve()  # fmt: skip


def _announce(name: str, port: int) -> None:
    """Print ``NAME listening on 127.0.0.1:PORT`` once the port accepts (from a thread)."""

    def wait() -> None:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.02)
                continue
            print(f"{name} listening on 127.0.0.1:{port}", flush=True)
            return

    threading.Thread(target=wait, daemon=True).start()


def serve(name: str, buffer: int = 0) -> None:
    """Run library server ``name`` on a free port until SIGTERM (child process; blocks); ``buffer``:
    granian's HTTP/1 ``max_buffer_size`` (0: its default)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _announce(name, port)
    if name == "uvicorn":
        uvicorn = importlib.import_module("uvicorn")
        uvicorn.run(
            asgi_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
            log_level="warning", access_log=False, backlog=4096,
        )  # fmt: skip
    elif name == "uvicorn-discoverd":
        importlib.import_module("uvloop").run(_uvicorn_discoverd(port))
    elif name == "hypercorn":
        config = importlib.import_module("hypercorn.config").Config()
        config.bind, config.accesslog, config.backlog = [f"127.0.0.1:{port}"], None, 4096
        serve_ = importlib.import_module("hypercorn.asyncio").serve
        importlib.import_module("uvloop").run(serve_(asgi_app, config))
    else:
        granian = importlib.import_module("granian")
        http1 = (
            importlib.import_module("granian.http").HTTP1Settings(max_buffer_size=buffer) if buffer else None
        )
        granian.Granian(
            "http_library:" + ("asgi_app" if name == "granian-asgi" else "rsgi_app"),
            address="127.0.0.1", port=port, interface=name.split("-")[1], workers=1, loop="uvloop",
            backlog=4096, backpressure=1_000_000, log_enabled=False, http1_settings=http1,
        ).serve()  # fmt: skip


# -- the measurements (parent side) ----------------------------------------------------------------------


def child(name: str, a: argparse.Namespace) -> harness.Child:
    if name == "baseline":
        return harness.baseline()
    if name == "discoverd":
        return harness.discoverd()
    return harness.Child([sys.executable, str(Path(__file__)), "serve", name, str(a.granian_buffer)], name)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian runs its worker as a child process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_rss(pid: int) -> int:
    return sum(harness.rss_bytes(p) for p in tree(pid))


def tree_fds(pid: int) -> int:
    return sum(harness.open_fds(p) for p in tree(pid))


def throughput(name: str, a: argparse.Namespace) -> float:
    with child(name, a) as srv:
        if name.endswith("discoverd"):
            _register_renew(srv)
        args = [harness.ZONE, harness.ENV, harness.RENEW_APPID, harness.RENEW_HOST]
        r = harness.run_wrk(srv, "renew.lua", args, a)
    if r.errors:
        raise RuntimeError(f"{name}: {r.errors}")
    harness.log(f"{name}: {r.short()}")
    return r.rps


def _register_renew(srv: harness.Child) -> None:
    """The instance bench/run.py's renew benchmark renews."""
    ins = harness.service_instance(harness.RENEW_APPID, 1)
    spec = harness.Spec(
        appid=harness.RENEW_APPID, hostname=harness.RENEW_HOST, addrs=ins.addrs, metadata=ins.metadata
    )
    harness.api(srv.addr, "POST", "/discovery/register", spec.form())


def hold_request(name: str, srv: harness.Child) -> bytes:
    if not name.endswith("discoverd"):
        return b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"
    harness.api(srv.addr, "POST", "/discovery/register", harness.service_instance(HOLD_APPID, 1).form())
    query = {"env": harness.ENV, "appid": HOLD_APPID, "status": "1"}
    _, body = harness.http_call(srv.addr, "GET", "/discovery/fetch?" + urlencode(query))
    latest = json.loads(body)["data"]["latest_timestamp"]
    poll = {"env": harness.ENV, "hostname": "c", "appid": HOLD_APPID, "latest_timestamp": str(latest)}
    return b"GET /discovery/polls?%s HTTP/1.1\r\nHost: x\r\n\r\n" % urlencode(poll).encode()


async def open_held(addr: str, request: bytes, n: int) -> list[asyncio.BaseTransport]:
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
        fds0 = await harness.settle(lambda: tree_fds(srv.pid))
        rss0 = await harness.settle(lambda: tree_rss(srv.pid) // 4096)
        transports = await open_held(srv.addr, request, a.held)
        try:
            await harness.wait_until(lambda: tree_fds(srv.pid) >= fds0 + a.held, 60, f"{name} accepted", 0.1)
            rss1 = await harness.settle(lambda: tree_rss(srv.pid) // 4096)
        finally:
            for t in transports:
                t.close()
    kb = (rss1 - rss0) * 4096 / a.held / 1024
    harness.log(f"{name}: {a.held:,} held requests, {kb:.2f} KB each")
    return float(kb)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser()
    p.description = __doc__.splitlines()[0] if __doc__ else None
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--held", type=int, default=10_000, help="held requests per server (0: skip)")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of " + ", ".join(SERVERS))
    p.add_argument("--granian-buffer", type=int, default=0, help="granian's max_buffer_size (its default)")
    a = p.parse_args(argv)
    here = str(Path(__file__).resolve().parent)  # granian imports the app by name in its worker
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    names = [s for s in a.servers.split(",") if s]
    rps: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            harness.log(f"round {r + 1}/{a.rounds}: {name}")
            rps[name].append(throughput(name, a))
    kb: dict[str, float] = {}
    if a.held:
        harness.raise_fd_limit(a.held + 1024)
        kb = {name: asyncio.run(held_memory(name, a)) for name in names}
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
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        serve(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
