"""Transports for the memberlist node: real UDP + TCP on one port, and an in-memory network for tests.

A transport delivers packets (UDP datagrams) to ``on_packet(data, (host, port))`` and incoming streams
(TCP connections) to ``on_stream(stream)``; it sends packets with :meth:`GossipTransport.send_packet`
and opens streams with :meth:`GossipTransport.dial`. memberlist uses the same port number for UDP and
TCP, so the real transport binds both on one port (OS-assigned when the port is 0, retried until both
binds succeed).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Final

Addr = tuple[str, int]
PacketHandler = Callable[[bytes, Addr], None]

#: The size Go reads UDP packets with; a bigger datagram is truncated by the kernel anyway.
UDP_READ_SIZE: Final = 65536
_BIND_ATTEMPTS: Final = 10


class GossipStream:
    """One stream connection (a TCP connection, or its in-memory twin)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        write: Callable[[bytes], None],
        close: Callable[[], None],
        peer: Addr,
        drain: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.reader = reader
        self._write = write
        self._close = close
        self._drain = drain
        self.peer = peer

    def __repr__(self) -> str:
        return f"<GossipStream peer={self.peer[0]}:{self.peer[1]}>"

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` at end of stream."""
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self._write(data)

    async def drain(self) -> None:
        if self._drain is not None:
            await self._drain()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._close()


StreamHandler = Callable[[GossipStream], Awaitable[None]]


class GossipTransport(abc.ABC):
    """Where a node's packets and streams come from and go to."""

    @abc.abstractmethod
    async def start(self, on_packet: PacketHandler, on_stream: StreamHandler) -> Addr:
        """Start receiving; returns the bound ``(host, port)``."""

    @abc.abstractmethod
    def send_packet(self, data: bytes, addr: Addr) -> None:
        """Send one datagram (best effort; errors are swallowed like UDP loss)."""

    @abc.abstractmethod
    async def dial(self, addr: Addr, timeout: float) -> GossipStream:
        """Open a stream to ``addr``; raises :class:`OSError` or :class:`TimeoutError`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving and release the sockets (idempotent)."""


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, on_packet: PacketHandler) -> None:
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_packet(data, (str(addr[0]), int(addr[1])))

    def error_received(
        self, exc: Exception
    ) -> None:  # ICMP port unreachable and the like: like a lost packet
        pass


class NetTransport(GossipTransport):
    """UDP and TCP on the same ``host:port`` (port 0 = one free port for both)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def __repr__(self) -> str:
        return f"<NetTransport {self.host}:{self.port}>"

    async def start(self, on_packet: PacketHandler, on_stream: StreamHandler) -> Addr:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._conns.add(writer)
            peer = writer.get_extra_info("peername") or ("", 0)
            try:
                await on_stream(self._wrap(reader, writer, (str(peer[0]), int(peer[1]))))
            finally:
                self._conns.discard(writer)
                writer.close()

        last: OSError | None = None
        for _ in range(_BIND_ATTEMPTS):
            server = await asyncio.start_server(accept, self.host, self.port, family=family, backlog=128)
            port = server.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagram(on_packet), local_addr=(self.host, port), family=family
                )
            except (
                OSError
            ) as e:  # the UDP port is taken: try another pair (only when the port was free to pick)
                last = e
                server.close()
                await server.wait_closed()
                if self.port:
                    raise
                continue
            sock = udp.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 << 20)
            self._udp, self._server, self.port = udp, server, port
            return (self.host, port)
        raise last or OSError("could not bind UDP and TCP on one port")

    def send_packet(self, data: bytes, addr: Addr) -> None:
        if self._udp is not None and not self._udp.is_closing():
            with contextlib.suppress(OSError):
                self._udp.sendto(data, addr)

    async def dial(self, addr: Addr, timeout: float) -> GossipStream:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(addr[0], addr[1]), timeout)
        return self._wrap(reader, writer, addr)

    @staticmethod
    def _wrap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Addr) -> GossipStream:
        return GossipStream(reader, writer.write, writer.close, peer, writer.drain)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            await self._server.wait_closed()
            self._server = None


class MemoryNetwork:
    """An in-process network of :class:`MemoryTransport` endpoints, for multi-node tests without sockets.

    Packets are delivered on the next loop iteration; ``block(a, b)`` drops packets and refuses streams from
    ``a`` to ``b`` (one direction; ``streams=False`` drops only packets, as a UDP-only firewall would),
    ``isolate(a)`` cuts ``a`` off completely.
    """

    def __init__(self) -> None:
        self.endpoints: dict[Addr, MemoryTransport] = {}
        self.blocked: set[tuple[Addr, Addr]] = set()
        self.blocked_streams: set[tuple[Addr, Addr]] = set()
        self.isolated: set[Addr] = set()
        self._next_port = 10000
        self.packets = 0

    def transport(self, host: str = "127.0.0.1") -> MemoryTransport:
        self._next_port += 1
        return MemoryTransport(self, (host, self._next_port))

    def block(self, src: Addr, dst: Addr, *, streams: bool = True) -> None:
        self.blocked.add((src, dst))
        if streams:
            self.blocked_streams.add((src, dst))

    def isolate(self, addr: Addr) -> None:
        self.isolated.add(addr)

    def heal(self) -> None:
        self.blocked.clear()
        self.blocked_streams.clear()
        self.isolated.clear()

    def reachable(self, src: Addr, dst: Addr, *, stream: bool = False) -> bool:
        pairs = self.blocked_streams if stream else self.blocked
        return (src, dst) not in pairs and src not in self.isolated and dst not in self.isolated


class MemoryTransport(GossipTransport):
    """One endpoint of a :class:`MemoryNetwork`."""

    def __init__(self, net: MemoryNetwork, addr: Addr) -> None:
        self.net = net
        self.addr = addr
        self.on_packet: PacketHandler | None = None
        self.on_stream: StreamHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.addr[0]}:{self.addr[1]}>"

    async def start(self, on_packet: PacketHandler, on_stream: StreamHandler) -> Addr:
        self.on_packet, self.on_stream = on_packet, on_stream
        self.net.endpoints[self.addr] = self
        return self.addr

    def send_packet(self, data: bytes, addr: Addr) -> None:
        dst = self.net.endpoints.get(addr)
        if dst is None or dst.on_packet is None or not self.net.reachable(self.addr, addr):
            return
        self.net.packets += 1
        asyncio.get_running_loop().call_soon(dst.on_packet, bytes(data), self.addr)

    async def dial(self, addr: Addr, timeout: float) -> GossipStream:
        dst = self.net.endpoints.get(addr)
        if dst is None or dst.on_stream is None or not self.net.reachable(self.addr, addr, stream=True):
            raise ConnectionRefusedError(f"{addr[0]}:{addr[1]} unreachable")
        mine, theirs = asyncio.StreamReader(), asyncio.StreamReader()
        closed = False

        def close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                mine.feed_eof()
                theirs.feed_eof()

        def writer(to: asyncio.StreamReader) -> Callable[[bytes], None]:
            def write(data: bytes) -> None:
                if not closed:
                    to.feed_data(bytes(data))

            return write

        server_side = GossipStream(theirs, writer(mine), close, self.addr)
        task = asyncio.get_running_loop().create_task(dst.serve(server_side))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return GossipStream(mine, writer(theirs), close, addr)

    async def serve(self, stream: GossipStream) -> None:
        """Hand ``stream``, dialled to this endpoint by another, to our stream handler; closes it when the
        handler returns. Called by the dialling endpoint (it runs in that endpoint's task set)."""
        assert self.on_stream is not None
        try:
            await self.on_stream(stream)
        finally:
            stream.close()

    async def close(self) -> None:
        self.net.endpoints.pop(self.addr, None)
        for t in list(self._tasks):
            t.cancel()
