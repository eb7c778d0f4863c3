"""Binding the listen socket, accepting connections on it, and starting each admitted one.

The event loop's own servers hide accept errors: uvloop (libuv) silently accepts and closes pending
connections when the process is out of file descriptors, and asyncio logs every failure. A
:class:`Listener` accepts itself instead, so that admission
(:class:`~discoverd.server.http_limits.ConnectionTable`) decides on each connection before any
transport exists, and so that a failure (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ...) is counted,
reported occasionally, and answered by pausing accepts with a growing delay (5 ms doubling up to
1 s, as Go's net/http does) while pending connections wait in the backlog.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Final, Generic, cast

from discoverd.server.http_limits import C, ConnectionTable

log = logging.getLogger("discoverd.http")

BACKLOG: Final = 4096
ACCEPT_BATCH: Final = 128
"""Connections accepted per readiness callback at most (other work gets a turn in between)."""
FIRST_DELAY: Final = 0.005
MAX_DELAY: Final = 1.0


class Listener(Generic[C]):
    """Accepts on ``sock`` (bound, non-blocking) and starts each connection ``table`` admits.

    ``protocol(peer)`` builds the asyncio protocol of a connection from IP address ``peer`` (``""``
    when it has none); it is added to ``table`` and started on the loop (after a TLS handshake bounded by
    ``handshake_timeout`` with ``ssl_context``); a connection that fails to start is forgotten.
    A refused connection is closed at once. :meth:`start` and :meth:`stop` do not block; the
    listening socket stays open (its owner closes it).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        table: ConnectionTable[C],
        protocol: Callable[[str], C],
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.sock = sock
        self._table = table
        self._protocol = protocol
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._loop = loop
        self._delay = 0.0
        self._retry: asyncio.TimerHandle | None = None
        self._reading = False
        self._stopped = False
        self._starting: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "backing off" if self._retry else "accepting"
        return f"<Listener {self.sock.getsockname()} {state}>"

    def start(self) -> None:
        """Listen and accept from now on; raises :class:`ListenError` when the socket cannot listen."""
        try:
            self.sock.listen(BACKLOG)
        except OSError as exc:
            raise ListenError(exc.errno, exc.strerror or str(exc)) from exc
        self._watch()

    def stop(self) -> None:
        """Accept no more connections (idempotent); connections still starting are cancelled."""
        self._stopped = True
        self._unwatch()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for task in list(self._starting):
            task.cancel()

    def _watch(self) -> None:
        if not self._reading and not self._stopped:
            self._reading = True
            self._loop.add_reader(self.sock.fileno(), self._accept_some)

    def _unwatch(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.sock.fileno())

    def _accept_some(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._back_off(exc)
                return
            self._delay = 0.0
            self._admit(conn, str(addr[0]) if isinstance(addr, tuple) else "")
            if self._stopped:
                return

    def _admit(self, sock: socket.socket, peer: str) -> None:
        if not self._table.admit(peer):
            sock.close()
            return
        sock.setblocking(False)
        conn = self._protocol(peer)
        self._table.add(conn)
        task = self._loop.create_task(self._connect(conn, sock))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _connect(self, conn: C, sock: socket.socket) -> None:
        protocol = cast(asyncio.BaseProtocol, conn)  # an asyncio protocol, as ``protocol`` promises
        try:
            if self._ssl is None:
                await self._loop.connect_accepted_socket(lambda: protocol, sock)
            else:
                await self._loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
                )
        except (OSError, ssl.SSLError, TimeoutError, asyncio.CancelledError) as exc:
            log.debug("connection from %s failed to start: %r", conn.peer, exc)
            sock.close()
            self._table.forget(conn)

    def _back_off(self, exc: OSError) -> None:
        self._delay = min(MAX_DELAY, self._delay * 2) if self._delay else FIRST_DELAY
        self._table.accept_errors.note(f"{exc} (accepting again in {self._delay * 1000:.0f} ms)")
        self._unwatch()
        self._retry = self._loop.call_later(self._delay, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self._watch()


class ListenError(OSError):
    """The listen address cannot be bound (in use, not local, no permission)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``; ``port`` 0 picks a free one), not yet
    listening: the node learns its address before it builds its handler, and accepts only when ready.

    Raises :class:`ListenError` when the address cannot be bound.
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(exc.errno, exc.strerror or str(exc)) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):
            raise ListenError(exc.errno, exc.strerror or str(exc)) from exc
        raise
    return sock


def socket_address(sock: socket.socket) -> tuple[str, int]:
    """The bound ``(host, port)`` of ``sock``."""
    name = sock.getsockname()
    return str(name[0]), int(name[1])
