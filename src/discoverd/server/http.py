"""A small, fast HTTP/1.1 server on asyncio and httptools (llhttp), made for the registry protocol.

Why not aiohttp (~12k renews/s here) or an ASGI server: uvicorn (httptools, uvloop) running this
node's handler serves 0.37 of this layer's renews per second and holds a long poll in 2.2x the
memory; hypercorn and granian need 2.9-5x the memory (``bench/http_library.py``). This layer
does keep-alive and pipelining (answers in request order), ``Expect: 100-continue``, ``HEAD`` (no
body), bodies up to a limit, deferred answers (a handler returns ``None`` and answers later through
:meth:`HttpRequest.respond`: long polls wait without a task each) and TLS; it refuses upgrades and
``CONNECT`` with one answer. Limits: ``server/http_limits.py``; accepting: ``server/http_listen.py``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Final, cast

from discoverd.errors import MissingExtra

try:
    import httptools
except ImportError as exc:
    raise MissingExtra("httptools", "server", "the discoverd server (discoverd serve)") from exc

from discoverd.server.http_answers import CONTINUE, build_response, head_only, text_response
from discoverd.server.http_limits import (
    BODY,
    CLOSING,
    HEADERS,
    HIGH_WATER,
    IDLE,
    LOW_WATER,
    PHASE_NAMES,
    ConnectionTable,
    HttpLimits,
)
from discoverd.server.http_listen import Listener, socket_address
from discoverd.server.http_request import METHODS, PATHS, Handler, HttpRequest, decode_path

__all__ = ["Handler", "HttpConnection", "HttpRequest", "HttpServer", "build_response", "text_response"]

log = logging.getLogger("discoverd.http")

MAX_HEADER_BYTES: Final = 64 * 1024
SLICE: Final = 1024
"""Input larger than this is parsed a slice at a time, so that reading can pause between slices:
at most one slice's requests (57 of the shortest) are read beyond the pipeline cap."""
_PARSE_ERRORS: Final = (httptools.HttpParserError, httptools.HttpParserUpgrade)


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, dispatches them in order, writes their answers.

    A request is dispatched when nothing is ahead of it: no deferred answer outstanding and the
    transport not above its high-water mark (:meth:`pause_writing`); otherwise it waits in the
    pipeline, and reading pauses while ``max_pipeline`` requests wait or writes are paused. A request
    refused by the HTTP layer (malformed, too large, upgrade) is answered after the answers ahead of
    it, then the connection closes. The server's reaper asks :meth:`overdue` and closes it.
    """

    def __init__(self, server: HttpServer, peer: str = "") -> None:
        self._server = server
        self._table = server.table
        self._handler = server.handler
        self._max_pipeline = server.limits.max_pipeline
        self._max_body = server.limits.max_body
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._pending: collections.deque[HttpRequest] = collections.deque()
        self._current: HttpRequest | None = None
        self._refusal: bytes | None = None
        self._rejected = False
        self._read_paused = False
        self._write_paused = False
        self._unparsed = b""
        self._phase = HEADERS
        self._since = server.table.now
        self._paused_since = 0.0
        self.closed = False
        self.peer = peer

    def __repr__(self) -> str:
        return f"<HttpConnection {self.peer} {PHASE_NAMES[self._phase]} pending={len(self._pending)}>"

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = t = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.closed:  # the server closed it before it was ready
            t.close()
            return
        t.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._table.forget(self)
        current, self._current = self._current, None
        self._pending.clear()
        if current is not None:
            self._server.on_abort(current)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._read_paused or len(data) > SLICE:
            self._feed(data)
            return
        try:
            self._parser.feed_data(data)
        except _PARSE_ERRORS as exc:
            self._malformed(exc)

    def pause_writing(self) -> None:
        """The transport holds more than :data:`HIGH_WATER` unsent bytes: dispatch and read no more."""
        self._write_paused = True
        self._paused_since = self._table.now
        self._pause_reading()

    def resume_writing(self) -> None:
        """The transport drained below :data:`LOW_WATER`: run what waits, read again if there is room."""
        self._write_paused = False
        self._drain()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._body_len = 0
        if self._phase != HEADERS:  # a new connection's first request keeps its accept deadline
            self._phase = HEADERS
            self._since = self._table.now

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
            self._refuse(431, "request headers too large")
            raise httptools.HttpParserError("headers too large")

    def on_headers_complete(self) -> None:
        self._phase = BODY
        self._since = self._table.now
        if self._parser.should_upgrade():  # Upgrade + Connection: upgrade, or CONNECT
            connect = self._parser.get_method() == b"CONNECT"
            self._refuse(405 if connect else 400, "CONNECT and protocol upgrades are not supported")
            raise httptools.HttpParserError("upgrade refused")
        headers = self._headers
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._refuse(413, f"request body over {self._max_body} bytes")
            raise httptools.HttpParserError("body too large")
        expect = headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and not self.waiting:
            self._write_continue()  # only at the head: never ahead of answers still owed

    def _write_continue(self) -> None:
        """Invite the body (a client waiting behind answers owed sends it after its own wait)."""
        if self._transport is not None and not self._write_paused:
            self._transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self._max_body:
            self._refuse(413, f"request body over {self._max_body} bytes")
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._phase = IDLE
        self._since = self._table.now
        raw_path, _, query = self._url.partition(b"?")
        path = PATHS.get(raw_path)
        if path is None:
            path = decode_path(raw_path)
        method = self._parser.get_method()
        req = HttpRequest(
            self,
            METHODS.get(method) or method.decode("latin-1"),
            path,
            query,
            self._headers,
            b"".join(self._body),
            bool(self._parser.should_keep_alive()),
        )
        if self._current is None and not self._pending and not self._write_paused:
            self._dispatch(req)
            return
        self._pending.append(req)
        if self.waiting >= self._max_pipeline:
            self._pause_reading()

    # -- input ---------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time; what is left when reading pauses is kept for later."""
        if self._unparsed:
            data, self._unparsed = self._unparsed + data, b""
        view = memoryview(data)
        for pos in range(0, len(data), SLICE):
            if self._rejected:
                return
            if self._read_paused:
                self._unparsed = bytes(view[pos:])
                return
            try:
                self._parser.feed_data(view[pos : pos + SLICE])
            except _PARSE_ERRORS as exc:
                self._malformed(exc)

    def _malformed(self, exc: Exception) -> None:
        if not self._rejected:  # else a callback refused the request already
            self._refuse(400, f"malformed HTTP request: {exc}")

    def _pause_reading(self) -> None:
        if not self._read_paused:
            self._read_paused = True
            if self._transport is not None and not self.closed:
                self._transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        """Read again once the pipeline has room and writes flow (held input is parsed first)."""
        if not self._read_paused or self._write_paused or self.closed or self._rejected:
            return
        if self.waiting >= self._max_pipeline:
            return
        self._read_paused = False
        self._since = self._table.now  # the pause was ours: its time does not count against the client
        if self._unparsed:
            self._feed(b"")
            if self._read_paused or self.closed:
                return
        if self._transport is not None:
            self._transport.resume_reading()

    # -- dispatch and output --------------------------------------------------------------------

    def _dispatch(self, req: HttpRequest) -> None:
        try:
            answer = self._handler(req)
        except Exception:
            log.exception("handler failed for %r", req)
            answer = text_response(500, "internal error")
        if answer is None:
            self._current = req
        else:
            self._write(req, answer)

    def finish(self, req: HttpRequest, answer: bytes) -> None:
        """Write the deferred answer of ``req``, then run the requests pipelined behind it."""
        if self.closed or req is not self._current:
            return
        self._current = None
        if self._phase == IDLE:
            self._since = self._table.now
        self._write(req, answer)
        self._drain()

    def _drain(self) -> None:
        """Dispatch the waiting requests nothing blocks any more; after the last answer owed, write
        the refusal and close; else read again if there is room."""
        pending = self._pending
        while pending and self._current is None and not self._write_paused and not self.closed:
            self._dispatch(pending.popleft())
        if self.closed:
            return
        if self._refusal is not None:
            if self._current is None and not pending and self._transport is not None:
                self._transport.write(self._refusal)
                self._close()
            return
        self._maybe_resume_reading()

    def _write(self, req: HttpRequest, answer: bytes) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        if req.method == "HEAD":
            answer = head_only(answer)
        transport.write(answer)
        if not req.keep_alive:
            self._close()

    def _refuse(self, status: int, text: str) -> None:
        """Read no more; answer ``status`` once the answers ahead are written, then close."""
        self._rejected = True
        self._unparsed = b""
        self._refusal = text_response(status, text, close=True)
        self._pause_reading()
        self._drain()

    def _close(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._phase = CLOSING
            self._since = self._table.now
            self._transport.close()

    # -- the server's side ------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests read whose answers are still owed (a held one included)."""
        return len(self._pending) + (self._current is not None)

    def overdue(self, now: float, timeouts: tuple[float, float, float, float]) -> str:
        """The deadline missed at ``now`` (``"send"`` or a :data:`PHASE_NAMES` entry), or ``""``.

        ``timeouts`` are :meth:`HttpLimits.timeouts`. No read deadline runs while this side paused
        reading, nor an idle one while answers are owed (a held request has its own timer).
        """
        if self._transport is None:
            return ""
        if self._write_paused:
            return "send" if now - self._paused_since > timeouts[CLOSING] else ""
        phase = self._phase
        if self._read_paused and phase != CLOSING:
            return ""
        if phase == IDLE and (self._current is not None or self._pending):
            return ""
        return PHASE_NAMES[phase] if now - self._since > timeouts[phase] else ""

    def close(self) -> None:
        """Close once the answers written are sent (the reaper aborts it after ``send_timeout``)."""
        if self._transport is None:
            self.closed = True  # not started yet: closed as soon as it is
        self._close()

    def abort(self) -> None:
        """Close at once, dropping unsent answers."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class HttpServer:
    """Accepts connections (within :class:`HttpLimits`), owns them, and reaps the overdue ones.

    ``handler`` answers each request (:data:`Handler`); ``on_abort(request)`` is called when a
    deferred request's client disconnects. A connection beyond the admission limits
    (:class:`~discoverd.server.http_limits.ConnectionAdmission`) is closed as soon as it is accepted, before
    any byte is read, and counted in :attr:`refused`. ``table.reap()`` must be called every
    ``limits.period`` seconds (the node's loop does): it closes the connections past a deadline.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        on_abort: Callable[[HttpRequest], None] = lambda _r: None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.handler = handler
        self.on_abort = on_abort
        self.limits = limits if limits is not None else HttpLimits()
        self.loop = asyncio.get_running_loop()
        self.table: ConnectionTable[HttpConnection] = ConnectionTable(self.limits, self.loop, log)
        self._listener: Listener[HttpConnection] | None = None

    def __repr__(self) -> str:
        return f"<HttpServer {self.table!r}>"

    @property
    def connections(self) -> set[HttpConnection]:
        """The open connections (and those in their TLS handshake)."""
        return self.table.connections

    @property
    def refused(self) -> int:
        """Connections closed at once by admission (``max_connections`` or the per-address cap)."""
        return self.table.admission.refused

    async def start(self, sock: socket.socket, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Start accepting on ``sock`` (from :func:`~discoverd.server.http_listen.bind_socket`; HTTPS
        with ``ssl_context``)."""
        self._listener = Listener(
            sock,
            table=self.table,
            protocol=lambda peer: HttpConnection(self, peer),
            ssl_context=ssl_context,
            handshake_timeout=self.limits.header_timeout,
            loop=self.loop,
        )
        self.table.tick()
        self._listener.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        assert self._listener is not None
        return socket_address(self._listener.sock)

    def stop_accepting(self) -> None:
        if self._listener is not None:
            self._listener.stop()

    async def close(self, within: float = 1.0) -> None:
        """Stop accepting and close every connection (answer deferred requests before this):
        gracefully, then, after ``within`` seconds, by aborting those still open."""
        self.stop_accepting()
        await self.table.close_all(within)
