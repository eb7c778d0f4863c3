"""Reading and writing memberlist stream messages (TCP: push/pull, fallback ping, reliable user messages)."""

from __future__ import annotations

import asyncio

from discoverd.backends.gossip.transport import Stream
from discoverd.core.gossip.framing import StreamMessage, encode_stream, parse_stream
from discoverd.core.gossip.keyring import Keyring
from discoverd.core.gossip.messages import ErrResp, encode
from discoverd.errors import GossipDecodeError


async def read_message(
    stream: Stream, *, keyring: Keyring | None, verify_incoming: bool, timeout: float
) -> StreamMessage:
    """Read one framed message from ``stream`` within ``timeout`` seconds.

    Raises :class:`GossipDecodeError` for a malformed stream or one that ends early, :class:`TimeoutError`.
    """
    buf = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            got = parse_stream(bytes(buf), keyring=keyring, verify_incoming=verify_incoming)
            if got is not None:
                return got[0]
            chunk = await stream.read(65536)
            if not chunk:
                raise GossipDecodeError("stream ended before a complete message" if buf else "empty stream")
            buf += chunk


async def write_message(
    stream: Stream, msg: bytes, *, compress: bool, keyring: Keyring | None, encryption_version: int
) -> None:
    """Frame ``msg`` (compression, encryption as configured) and write it."""
    stream.write(
        encode_stream(msg, compress=compress, keyring=keyring, encryption_version=encryption_version)
    )
    await stream.drain()


async def write_error(stream: Stream, error: str) -> None:
    """Answer an ``errMsg`` (never compressed or encrypted: the peer may not share our settings)."""
    stream.write(encode(ErrResp(error=error)))
    await stream.drain()
