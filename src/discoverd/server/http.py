"""A small, fast HTTP/1.1 server on asyncio and httptools (llhttp), made for the registry protocol.

Why not aiohttp here: the protocol's hot paths (renew, fetch) are tiny form requests, and aiohttp's
request machinery caps them at ~12k req/s on this hardware, half the target; this layer does ~50k.
It is deliberately small: keep-alive and pipelining (answers in request order), ``Expect:
100-continue``, request bodies up to a limit, idle-connection reaping, and deferred answers (a
handler returns ``None`` and answers later through :meth:`HttpRequest.respond`, which is how long
polls are parked without a task per request), TLS (an ``ssl.SSLContext`` passed to :meth:`HttpServer.start`)
and a cap on open connections per client address. HTTP/2, chunked answers and upgrades are out of scope.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Final, cast
from urllib.parse import unquote_to_bytes

import httptools

from discoverd.core.params import Form

log = logging.getLogger("discoverd.http")

_REASONS: Final = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Request Entity Too Large",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_PIPELINE: Final = 64
_METHODS: Final = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")}
_PATHS: dict[bytes, str] = {}
"""Raw request path → decoded path, for the first :data:`_MAX_CACHED_PATHS` short paths seen (the
routes, in practice): at most 256 × 64 bytes whatever clients send."""
_MAX_CACHED_PATHS: Final = 256


class _Clock:
    """The ``Date`` header, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


_CLOCK = _Clock()


def build_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json; charset=utf-8",
    headers: bytes = b"",
    close: bool = False,
) -> bytes:
    """Encode a whole HTTP/1.1 answer (status line, headers, body).

    ``headers`` are extra header lines, pre-rendered (``b"Name: value\\r\\n"`` each).
    """
    if close:
        headers += b"Connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nDate: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        _REASONS.get(status, b"Unknown"),
        content_type,
        _CLOCK.date(),
        len(body),
        headers,
        body,
    )


def text_response(status: int, text: str, *, close: bool = False) -> bytes:
    return build_response(status, text.encode(), content_type=b"text/plain; charset=utf-8", close=close)


class HttpRequest:
    """One parsed request. ``headers`` maps lower-case raw names to raw values (last value wins);
    :meth:`header` decodes one."""

    __slots__ = (
        "_conn",
        "body",
        "form",
        "headers",
        "keep_alive",
        "method",
        "path",
        "peer",
        "query",
        "state",
    )

    def __init__(
        self,
        conn: HttpConnection,
        method: str,
        path: str,
        query: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.peer: str = conn.peer
        self.state: object = None
        """Free for the handler: a held request keeps its parking record here."""
        self.form: Form | None = None
        """The parsed parameters, once the pipeline parsed them (``server/pipeline.py``)."""

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.path} from {self.peer}>"

    def header(self, name: str) -> str:
        """The value of header ``name`` (lower-case), or ``""``."""
        value = self.headers.get(name.encode("latin-1"))
        return "" if value is None else value.decode("latin-1")

    def respond(self, response: bytes) -> None:
        """Answer a deferred request (a no-op if the connection is gone). Call at most once."""
        self._conn.finish(self, response)


Handler = Callable[[HttpRequest], "bytes | None"]
"""Returns the encoded answer, or ``None`` to answer later through ``request.respond``."""


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, dispatches them in order, writes answers."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._pending: collections.deque[HttpRequest] = collections.deque()
        self._current: HttpRequest | None = None
        self._rejected = False
        self.closed = False
        self.peer = ""
        self.last_active = 0.0
        self._counted = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else ""
        self.last_active = self._server.loop.time()
        if not self._server.admit(self.peer):
            self._rejected = True
            self._close()
            return
        self._counted = bool(self.peer)
        self._server.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self._counted:
            self._counted = False
            self._server.release(self.peer)
        self._server.connections.discard(self)
        current, self._current = self._current, None
        self._pending.clear()
        if current is not None:
            self._server.on_abort(current)

    def data_received(self, data: bytes) -> None:
        self.last_active = self._server.loop.time()
        if self._rejected:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self._rejected:
                self._reject(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._body_len = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)  # inline: once per header of every request
        if self._header_bytes > MAX_HEADER_BYTES:
            self._count_header_bytes(0)
        self._headers[name.lower()] = value

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            self._reject(431, "request headers too large")
            raise httptools.HttpParserError("headers too large")

    def on_headers_complete(self) -> None:
        length = self._headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self._server.max_body:
            self._reject(413, f"request body over {self._server.max_body} bytes")
            raise httptools.HttpParserError("body too large")
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self._server.max_body:
            self._reject(413, f"request body over {self._server.max_body} bytes")
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        raw_path, _, query = self._url.partition(b"?")
        path = _PATHS.get(raw_path)
        if path is None:
            path = (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode("latin-1")
            if len(_PATHS) < _MAX_CACHED_PATHS and len(raw_path) <= 64:
                _PATHS[raw_path] = path
        method = self._parser.get_method()
        req = HttpRequest(
            self,
            _METHODS.get(method) or method.decode("latin-1"),
            path,
            query,
            self._headers,
            b"".join(self._body),
            bool(self._parser.should_keep_alive()),
        )
        if self._current is not None or self._pending:
            self._pending.append(req)
            if len(self._pending) >= MAX_PIPELINE and self._transport:
                self._transport.pause_reading()
            return
        self._dispatch(req)

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self, req: HttpRequest) -> None:
        try:
            answer = self._server.handler(req)
        except Exception:
            log.exception("handler failed for %r", req)
            answer = text_response(500, "internal error")
        if answer is None:
            self._current = req
        else:
            self._write(req, answer, deferred=False)

    def finish(self, req: HttpRequest, answer: bytes) -> None:
        """Write the deferred answer of ``req``, then run the requests pipelined behind it."""
        if self.closed or req is not self._current:
            return
        self._current = None
        self._write(req, answer)
        while self._pending and self._current is None and not self.closed:
            self._dispatch(self._pending.popleft())
        if not self._pending and self._transport and not self.closed:
            self._transport.resume_reading()

    def _write(self, req: HttpRequest, answer: bytes, *, deferred: bool = True) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        transport.write(answer)
        if deferred:  # an answer at once follows data_received, which set last_active already
            self.last_active = self._server.loop.time()
        if not req.keep_alive:
            self._close()

    def _reject(self, status: int, text: str) -> None:
        self._rejected = True
        if self._transport is not None and not self.closed:
            self._transport.write(text_response(status, text, close=True))
        self._close()

    def _close(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()

    @property
    def idle(self) -> bool:
        return self._current is None and not self._pending

    def close(self) -> None:
        self._close()


class HttpServer:
    """Listens, owns the connections, reaps idle keep-alive connections.

    ``on_abort(request)`` is called when a deferred request's client disconnects.
    ``max_conns_per_host`` (0: no limit) caps the open connections of one client IP address: a
    connection beyond it is closed as soon as it is accepted (after the TLS handshake with TLS), and
    counted in :attr:`refused`. Connections without an IP peer (Unix sockets) are not limited.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        on_abort: Callable[[HttpRequest], None] = lambda _r: None,
        max_body: int = 1 << 20,
        idle_timeout: float = 120.0,
        max_conns_per_host: int = 0,
    ) -> None:
        self.handler = handler
        self.on_abort = on_abort
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.max_conns_per_host = max_conns_per_host
        self.connections: set[HttpConnection] = set()
        self.per_host: dict[str, int] = {}
        """Open connections per client IP address (addresses with none are removed)."""
        self.refused = 0
        """Connections closed at once because their host was at ``max_conns_per_host``."""
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.base_events.Server | None = None

    def __repr__(self) -> str:
        return f"<HttpServer {self.address} connections={len(self.connections)}>"

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (and counted as refused) when over the limit."""
        if not peer:
            return True
        n = self.per_host.get(peer, 0)
        if self.max_conns_per_host and n >= self.max_conns_per_host:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "%s has %d open connections (the limit): refusing more (%d refused so far)",
                    peer,
                    n,
                    self.refused,
                )
            return False
        self.per_host[peer] = n + 1
        return True

    def release(self, peer: str) -> None:
        """A counted connection from ``peer`` closed."""
        n = self.per_host.get(peer, 0) - 1
        if n > 0:
            self.per_host[peer] = n
        else:
            self.per_host.pop(peer, None)

    async def start(self, sock: socket.socket, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Start accepting on ``sock`` (from :func:`bind_socket`; HTTPS with ``ssl_context``)."""
        self._server = await self.loop.create_server(
            lambda: HttpConnection(self), sock=sock, backlog=4096, ssl=ssl_context
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        assert self._server is not None and self._server.sockets
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def reap_idle(self) -> int:
        """Close keep-alive connections idle for longer than ``idle_timeout``; returns how many."""
        limit = self.loop.time() - self.idle_timeout
        stale = [c for c in self.connections if c.idle and c.last_active < limit]
        for c in stale:
            c.close()
        return len(stale)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Stop accepting and close every connection (answer deferred requests before this)."""
        self.stop_accepting()
        for c in list(self.connections):
            c.close()
        if self._server is not None:
            await self._server.wait_closed()


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``; ``port`` 0 picks a free one), not yet
    listening: the node learns its address before it builds its handler, and accepts only when ready.

    Raises :class:`OSError` when the address cannot be bound.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_address(sock: socket.socket) -> tuple[str, int]:
    """The bound ``(host, port)`` of ``sock``."""
    name = sock.getsockname()
    return str(name[0]), int(name[1])
