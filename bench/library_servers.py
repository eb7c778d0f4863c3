"""The library servers of ``bench/http_library.py`` (child side): a hello world on ASGI and on granian's
RSGI, and discoverd's own request handler behind uvicorn. Each runs on a free port of 127.0.0.1 until
SIGTERM and prints ``NAME listening on 127.0.0.1:PORT`` once the port accepts connections.

The libraries are not dependencies of discoverd (``importlib`` imports them when a server starts).
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import poll_until
from bench.procs import free_port
from discoverd.server.http import Handler, HttpRequest
from discoverd.testing import fast_config, running_node

BODY = b'{"code":0,"message":"0","ttl":1}'
JSON = b"application/json; charset=utf-8"
_release: asyncio.Event | None = None


def _held() -> asyncio.Event:
    """The event held requests wait for (never set), made in the running loop."""
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
    """uvicorn on ``port`` running a node's request handler (the node's own front idles on another port)."""
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


def _accepts(port: int) -> bool:
    """Whether 127.0.0.1:``port`` accepts a connection."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _announce(name: str, port: int) -> None:
    """Print ``NAME listening on 127.0.0.1:PORT`` once the port accepts (from a thread, within 60 s)."""

    def wait() -> None:
        if poll_until(lambda: _accepts(port), 60, 0.02):
            print(f"{name} listening on 127.0.0.1:{port}", flush=True)

    threading.Thread(target=wait, daemon=True).start()


def _uvicorn(port: int, buffer: int) -> None:
    uvicorn = importlib.import_module("uvicorn")
    uvicorn.run(
        asgi_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
        log_level="warning", access_log=False, backlog=4096,
    )  # fmt: skip


def _uvicorn_discoverd_main(port: int, buffer: int) -> None:
    importlib.import_module("uvloop").run(_uvicorn_discoverd(port))


def _hypercorn(port: int, buffer: int) -> None:
    config = importlib.import_module("hypercorn.config").Config()
    config.bind, config.accesslog, config.backlog = [f"127.0.0.1:{port}"], None, 4096
    serve_ = importlib.import_module("hypercorn.asyncio").serve
    importlib.import_module("uvloop").run(serve_(asgi_app, config))


def _granian(name: str, port: int, buffer: int) -> None:
    granian = importlib.import_module("granian")
    http1 = importlib.import_module("granian.http").HTTP1Settings(max_buffer_size=buffer) if buffer else None
    granian.Granian(
        "bench.library_servers:" + ("asgi_app" if name == "granian-asgi" else "rsgi_app"),
        address="127.0.0.1", port=port, interface=name.split("-")[1], workers=1, loop="uvloop",
        backlog=4096, backpressure=1_000_000, log_enabled=False, http1_settings=http1,
    ).serve()  # fmt: skip


SERVE: dict[str, Callable[[int, int], None]] = {
    "uvicorn": _uvicorn,
    "uvicorn-discoverd": _uvicorn_discoverd_main,
    "hypercorn": _hypercorn,
}


def serve(name: str, buffer: int = 0) -> None:
    """Run library server ``name`` on a free port until SIGTERM (child process; blocks); ``buffer``:
    granian's HTTP/1 ``max_buffer_size`` (0: its default). granian imports its app by name in its worker:
    the checkout must be on ``PYTHONPATH``."""
    port = free_port()
    _announce(name, port)
    if name in SERVE:
        SERVE[name](port, buffer)
    else:
        _granian(name, port, buffer)
