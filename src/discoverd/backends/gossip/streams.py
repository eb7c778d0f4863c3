"""Memberlist stream messages (TCP): push/pull state exchange, fallback ping, reliable user messages.

:class:`StreamExchange` serves a node's incoming streams and opens its outgoing push/pulls; a malformed stream
is answered with an ``errMsg`` and closed, it never stops the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from discoverd.backends.gossip.transport import Stream
from discoverd.core.gossip.framing import (
    PushPull,
    StreamMessage,
    UserStream,
    encode_push_pull,
    encode_stream,
    parse_stream,
)
from discoverd.core.gossip.keyring import Keyring
from discoverd.core.gossip.messages import Ack, ErrResp, Ping, encode
from discoverd.errors import GossipDecodeError, GossipError

if TYPE_CHECKING:
    from discoverd.backends.gossip.node import MemberlistNode
    from discoverd.backends.gossip.transport import Addr

log = logging.getLogger("discoverd.gossip")

#: Push/pull exchanges served at once; more are refused (memberlist ``maxPushPullRequests``).
MAX_PUSH_PULL = 128


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


class StreamExchange:
    """The stream side of one :class:`~discoverd.backends.gossip.node.MemberlistNode`."""

    def __init__(self, node: MemberlistNode) -> None:
        self.node = node
        self.active = 0

    async def write(self, stream: Stream, msg: bytes) -> None:
        c = self.node.config
        version = 0 if c.protocol_version < 2 else 1
        keyring = self.node.keyring if c.gossip_verify_outgoing else None
        await write_message(
            stream, msg, compress=c.enable_compression, keyring=keyring, encryption_version=version
        )

    async def read(self, stream: Stream) -> object:
        c = self.node.config
        return await read_message(
            stream, keyring=self.node.keyring, verify_incoming=c.gossip_verify_incoming, timeout=c.tcp_timeout
        )

    async def on_stream(self, stream: Stream) -> None:
        if self.node.closed:
            return
        try:
            msg = await self.read(stream)
        except GossipDecodeError as e:
            self.node.stats["bad_streams"] += 1
            with contextlib.suppress(OSError, ConnectionError):
                await write_error(stream, str(e))
            return
        except (TimeoutError, OSError, ConnectionError):
            return
        try:
            await self.serve(stream, msg)
        except (GossipError, OSError, ConnectionError, TimeoutError) as e:
            log.debug("%s: stream from %s failed: %s", self.node.name, stream.peer, e)
        except Exception:
            log.exception("%s: serving a stream from %s failed", self.node.name, stream.peer)

    async def serve(self, stream: Stream, msg: object) -> None:
        if isinstance(msg, PushPull):
            if self.active >= MAX_PUSH_PULL:
                await write_error(stream, "too many pending push/pull requests")
                return
            self.active += 1
            self.node.stats["push_pulls"] += 1
            try:
                join = msg.header.join
                await self.write(stream, self.local_push_pull(join))
                self.merge(msg)
            finally:
                self.active -= 1
        elif isinstance(msg, Ping):
            if not msg.node or msg.node == self.node.name:
                await self.write(stream, encode(Ack(seq_no=msg.seq_no)))
        elif isinstance(msg, UserStream):
            if msg.payload:
                self.node.delegate.notify_msg(msg.payload)
        else:
            await write_error(stream, f"unexpected stream message {type(msg).__name__}")

    def local_push_pull(self, join: bool) -> bytes:
        return encode_push_pull(self.node.table.push_states(), self.node.delegate.local_state(join), join)

    def merge(self, msg: PushPull) -> None:
        self.node.table.verify_protocol(msg.states)
        self.node._apply(self.node.table.merge_remote(msg.states, self.node.now()))
        if msg.user_state:
            self.node.delegate.merge_remote_state(msg.user_state, msg.header.join)

    async def push_pull(self, addr: Addr, *, join: bool = False) -> None:
        """Exchange full state with the node at ``addr`` (raises GossipError, OSError or TimeoutError)."""
        stream = await self.node.transport.dial(addr, self.node.config.tcp_timeout)
        try:
            await self.write(stream, self.local_push_pull(join))
            reply = await self.read(stream)
        finally:
            stream.close()
        if isinstance(reply, ErrResp):
            raise GossipError(f"{addr[0]}:{addr[1]} refused the push/pull: {reply.error}")
        if not isinstance(reply, PushPull):
            raise GossipError(f"{addr[0]}:{addr[1]} answered a push/pull with {type(reply).__name__}")
        self.merge(reply)

    async def periodic(self, sleep: Callable[[float], Awaitable[None]], stop: asyncio.Event) -> None:
        """Push/pull with one random alive peer every ``push_pull_interval`` (scaled past 32 nodes)."""
        node = self.node
        await sleep(node.rng.uniform(0, node.config.push_pull_interval))
        while not stop.is_set():
            peers = node.table.others()
            if peers:
                m = node.rng.choice(peers)
                try:
                    await self.push_pull((m.host, m.port))
                except (GossipError, OSError, TimeoutError) as e:
                    log.debug("%s: push/pull with %s failed: %s", node.name, m.name, e)
                except Exception:
                    log.exception("%s: push/pull with %s failed", node.name, m.name)
            await sleep(_scaled_push_pull(node.config.push_pull_interval, node.table.num_members()))


def _scaled_push_pull(interval: float, n: int) -> float:
    """memberlist ``pushPullScale``: stretch the interval once the cluster passes 32 nodes."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)
