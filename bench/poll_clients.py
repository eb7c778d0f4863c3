"""The two clients of the ``polls`` fan-out: aiohttp (a typical Python consumer) and raw asyncio + httptools.

Both open one held ``GET /discovery/polls`` per connection, spread over several source addresses, and
stamp each answer's arrival with ``time.perf_counter()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import cast

import aiohttp
import httptools

from bench.harness import wait_until


class PollClient:
    """Opens held polls and records when their answers arrive (``futures`` end with the answer)."""

    name = ""

    def __init__(self, addr: str, sources: Sequence[str], hold: float) -> None:
        self.addr = addr
        self.sources = list(sources)
        self.hold = hold
        self.sent = 0
        self.arrivals: list[float] = []
        self.bad: list[str] = []
        self.answer_bytes = 0
        self.futures: list[asyncio.Future[None]] = []

    def answered(self, body: bytes) -> None:
        """Stamp one answer; a body that is not ``code 0`` is kept in :attr:`bad`."""
        self.arrivals.append(time.perf_counter())
        self.answer_bytes = len(body)
        if not body.startswith(b'{"code":0,'):
            self.bad.append(body[:120].decode(errors="replace"))

    async def open_batch(self, queries: Sequence[tuple[int, str]]) -> None:
        """Start these polls; returns once every request was written."""
        raise NotImplementedError

    async def close(self) -> None:
        """Cancel what is still waiting and close the connections."""
        for f in self.futures:
            f.cancel()
        await asyncio.gather(*self.futures, return_exceptions=True)


class AiohttpPolls(PollClient):
    """One aiohttp ``ClientSession`` per source address, one task per poll (a typical Python consumer)."""

    name = "aiohttp"

    def __init__(self, addr: str, sources: Sequence[str], hold: float) -> None:
        super().__init__(addr, sources, hold)
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(self._on_sent)
        timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=hold + 60)
        self.sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, local_addr=(src, 0), ttl_dns_cache=None),
                timeout=timeout,
                trace_configs=[trace],
                skip_auto_headers=("User-Agent",),
            )
            for src in self.sources
        ]

    async def _on_sent(self, *_: object) -> None:
        self.sent += 1

    async def _one(self, i: int, query: str) -> None:
        session = self.sessions[i % len(self.sessions)]
        async with session.get(f"http://{self.addr}/discovery/polls?{query}") as r:
            body = await r.read()
        self.answered(body)

    async def open_batch(self, queries: Sequence[tuple[int, str]]) -> None:
        self.futures.extend(asyncio.create_task(self._one(i, q)) for i, q in queries)
        want = len(self.futures)
        await wait_until(lambda: self.sent >= want, 60, f"{want} polls sent")

    async def close(self) -> None:
        await super().close()
        for s in self.sessions:
            await s.close()


class RawPoll(asyncio.Protocol):
    """One poll on its own connection: writes the GET, parses the answer with httptools."""

    def __init__(self, owner: RawPolls, request: bytes, done: asyncio.Future[None]) -> None:
        self.owner = owner
        self.request = request
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)
        self.owner.sent += 1

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.owner.answered(b"".join(self.body))
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"poll connection lost before its answer: {exc}"))


class RawPolls(PollClient):
    """Minimal asyncio + httptools client: shows the server's fan-out with little client overhead."""

    name = "raw"

    def __init__(self, addr: str, sources: Sequence[str], hold: float) -> None:
        super().__init__(addr, sources, hold)
        self.transports: list[asyncio.BaseTransport] = []

    async def _open(self, i: int, query: str) -> None:
        loop = asyncio.get_running_loop()
        host, _, port = self.addr.rpartition(":")
        req = b"GET /discovery/polls?%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (query.encode(), self.addr.encode())
        done: asyncio.Future[None] = loop.create_future()
        self.futures.append(done)
        src = self.sources[i % len(self.sources)]
        transport, _ = await loop.create_connection(
            lambda: RawPoll(self, req, done), host, int(port), local_addr=(src, 0)
        )
        self.transports.append(transport)

    async def open_batch(self, queries: Sequence[tuple[int, str]]) -> None:
        await asyncio.gather(*(self._open(i, q) for i, q in queries))

    async def close(self) -> None:
        await super().close()
        for t in self.transports:
            t.close()


POLL_CLIENTS: dict[str, type[PollClient]] = {"aiohttp": AiohttpPolls, "raw": RawPolls}
