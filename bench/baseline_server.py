"""Hello-world HTTP/1.1 server on asyncio + httptools: the baseline of the throughput benchmarks.

Every request, whatever its method, path or body, is answered with the same 32-byte JSON
(``{"code":0,"message":"0","ttl":1}``) on a keep-alive connection. It runs on uvloop when
available, like ``discoverd serve``, so ``discoverd / baseline`` measures what the registry adds on
top of the same event loop and HTTP parser on the same machine, in the same run.

Usage: ``python bench/baseline_server.py [--addr 127.0.0.1:0]``; the first stdout line is
``baseline listening on HOST:PORT``. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import cast

import httptools

BODY = b'{"code":0,"message":"0","ttl":1}'
assert len(BODY) == 32
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY)
)
ANSWER_CLOSE = ANSWER.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


class Hello(asyncio.Protocol):
    """Parses requests with httptools and answers each one as soon as it is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        if self.parser.should_keep_alive():
            self.transport.write(ANSWER)
        else:
            self.transport.write(ANSWER_CLOSE)
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Hello, host, port, reuse_address=True, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    name = server.sockets[0].getsockname()
    print(f"baseline listening on {name[0]}:{name[1]}", flush=True)
    await stop.wait()
    server.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--addr", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0 = any free port)")
    ns = p.parse_args()
    host, _, port = str(ns.addr).rpartition(":")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(serve(host, int(port)))
    else:
        uvloop.run(serve(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
