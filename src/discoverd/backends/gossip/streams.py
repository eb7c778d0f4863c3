"""Memberlist stream messages (TCP): push/pull state exchange, fallback ping, reliable user messages.

:class:`StreamExchange` serves a node's incoming streams and opens its outgoing push/pulls; a malformed stream
is answered with an ``errMsg`` and closed, it never stops the node.

Labels (memberlist ≥ 0.3.0, ``GossipConfig.label``): the side that dials writes the label header in front of
its message and the side that accepts checks it first; a stream with a missing or different label is closed
without an answer (memberlist ``handleConn`` drops it before reading anything). The answer carries no header,
but with encryption the label is part of its AAD in both directions (``rawSendMsgStream(…, streamLabel)``).

The exchange knows its node only through :class:`~discoverd.backends.gossip.host.NodeHost`; it satisfies
:class:`~discoverd.backends.gossip.host.StreamPinger` for the failure detector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

from discoverd.backends.gossip.delegate import Delegate
from discoverd.backends.gossip.host import NodeHost
from discoverd.backends.gossip.transport import Addr, GossipStream
from discoverd.core.gossip.framing import (
    PushPull,
    StreamMessage,
    UserStream,
    encode_push_pull,
    encode_stream,
    encode_user_stream,
    parse_stream,
)
from discoverd.core.gossip.keyring import Keyring
from discoverd.core.gossip.messages import Ack, ErrResp, Ping, encode
from discoverd.errors import GossipDecodeError, GossipError, GossipLabelError

log = logging.getLogger("discoverd.gossip")

#: Push/pull exchanges served at once; more are refused (memberlist ``maxPushPullRequests``).
MAX_PUSH_PULL = 128


async def read_message(
    stream: GossipStream,
    *,
    keyring: Keyring | None,
    verify_incoming: bool,
    timeout: float,
    label: bytes = b"",
    with_label_header: bool = True,
    skip_inbound_label_check: bool = False,
) -> StreamMessage:
    """Read one framed message from ``stream`` within ``timeout`` seconds (label arguments as
    :func:`~discoverd.core.gossip.framing.parse_stream`).

    Raises :class:`GossipDecodeError` for a malformed stream or one that ends early (its subclass
    :class:`GossipLabelError` for a label failure), :class:`TimeoutError`.
    """
    buf = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            got = parse_stream(
                bytes(buf),
                keyring=keyring,
                verify_incoming=verify_incoming,
                label=label,
                with_label_header=with_label_header,
                skip_inbound_label_check=skip_inbound_label_check,
            )
            if got is not None:
                return got[0]
            chunk = await stream.read(65536)
            if not chunk:
                raise GossipDecodeError("stream ended before a complete message" if buf else "empty stream")
            buf += chunk


async def write_message(
    stream: GossipStream,
    msg: bytes,
    *,
    compress: bool,
    keyring: Keyring | None,
    encryption_version: int,
    label: bytes = b"",
    with_label_header: bool = True,
) -> None:
    """Frame ``msg`` (compression, encryption, label as configured) and write it."""
    stream.write(
        encode_stream(
            msg,
            compress=compress,
            keyring=keyring,
            encryption_version=encryption_version,
            label=label,
            with_label_header=with_label_header,
        )
    )
    await stream.drain()


async def write_error(stream: GossipStream, error: str) -> None:
    """Answer an ``errMsg`` (never compressed or encrypted: the peer may not share our settings). It is an
    answer, so it never carries a label header (memberlist's responder writes none)."""
    stream.write(encode(ErrResp(error=error)))
    await stream.drain()


class StreamExchange:
    """The stream side of one node: serves what peers dial in, dials out for push/pull and pings.

    Every coroutine closes the streams it opened; :meth:`on_stream` leaves the accepted stream to the
    transport, which closes it when the handler returns. ``delegate`` receives reliable user messages and the
    user state of push/pull exchanges. Counters (read-only for others): ``bad_streams`` (malformed or
    foreign-label streams dropped), ``push_pulls`` (exchanges served).
    """

    def __init__(self, host: NodeHost, delegate: Delegate) -> None:
        self.host = host
        self.delegate = delegate
        self.active = 0
        self.bad_streams = 0
        self.push_pulls = 0

    async def write(self, stream: GossipStream, msg: bytes, *, initiator: bool) -> None:
        """Write ``msg``: ``initiator`` = we dialled and this message opens the stream (it gets the label
        header); otherwise it answers a stream we accepted (label only in the AAD)."""
        c = self.host.config
        version = 0 if c.protocol_version < 2 else 1
        keyring = self.host.keyring if c.gossip_verify_outgoing else None
        await write_message(
            stream,
            msg,
            compress=c.enable_compression,
            keyring=keyring,
            encryption_version=version,
            label=c.label_bytes,
            with_label_header=initiator,
        )

    async def read(self, stream: GossipStream, *, initiator: bool) -> object:
        """Read one message: ``initiator`` = the answer on a stream we dialled (no label header), otherwise
        the message opening a stream we accepted (its label header is checked)."""
        c = self.host.config
        return await read_message(
            stream,
            keyring=self.host.keyring,
            verify_incoming=c.gossip_verify_incoming,
            timeout=c.tcp_timeout,
            label=c.label_bytes,
            with_label_header=not initiator,
            skip_inbound_label_check=c.skip_inbound_label_check,
        )

    async def on_stream(self, stream: GossipStream) -> None:
        """Serve one stream a peer opened (the transport's stream handler). Never raises: a malformed stream
        is answered with an ``errMsg`` (or, with a foreign label, dropped) and counted."""
        if self.host.closed:
            return
        try:
            msg = await self.read(stream, initiator=False)
        except GossipLabelError as e:  # memberlist closes such a stream without an answer
            self.bad_streams += 1
            log.debug("%s: dropped a stream from %s: %s", self.host.name, stream.peer, e)
            return
        except GossipDecodeError as e:
            self.bad_streams += 1
            with contextlib.suppress(OSError, ConnectionError):
                await write_error(stream, str(e))
            return
        except (TimeoutError, OSError, ConnectionError):
            return
        try:
            await self.serve(stream, msg)
        except (GossipError, OSError, ConnectionError, TimeoutError) as e:
            log.debug("%s: stream from %s failed: %s", self.host.name, stream.peer, e)
        except Exception:
            log.exception("%s: serving a stream from %s failed", self.host.name, stream.peer)

    async def serve(self, stream: GossipStream, msg: object) -> None:
        """Answer ``msg``, the message that opened ``stream``: push/pull, ping or user message."""
        if isinstance(msg, PushPull):
            if self.active >= MAX_PUSH_PULL:
                await write_error(stream, "too many pending push/pull requests")
                return
            self.active += 1
            self.push_pulls += 1
            try:
                join = msg.header.join
                await self.write(stream, self.local_push_pull(join), initiator=False)
                self.merge(msg)
            finally:
                self.active -= 1
        elif isinstance(msg, Ping):
            if not msg.node or msg.node == self.host.name:
                await self.write(stream, encode(Ack(seq_no=msg.seq_no)), initiator=False)
        elif isinstance(msg, UserStream):
            if msg.payload:
                self.delegate.notify_msg(msg.payload)
        else:
            await write_error(stream, f"unexpected stream message {type(msg).__name__}")

    def local_push_pull(self, join: bool) -> bytes:
        """Our side of a push/pull: every member's state and the delegate's user state."""
        return encode_push_pull(self.host.table.push_states(), self.delegate.local_state(join), join)

    def merge(self, msg: PushPull) -> None:
        """Take a peer's push/pull into the member table and the delegate (raises GossipError when its
        protocol versions are incompatible with ours)."""
        self.host.table.verify_protocol(msg.states)
        self.host.apply(self.host.table.merge_remote(msg.states, self.host.now()))
        if msg.user_state:
            self.delegate.merge_remote_state(msg.user_state, msg.header.join)

    async def push_pull(self, addr: Addr, *, join: bool = False) -> None:
        """Exchange full state with the node at ``addr`` (raises GossipError, OSError or TimeoutError)."""
        stream = await self.host.transport.dial(addr, self.host.config.tcp_timeout)
        try:
            await self.write(stream, self.local_push_pull(join), initiator=True)
            reply = await self.read(stream, initiator=True)
        finally:
            stream.close()
        if isinstance(reply, ErrResp):
            raise GossipError(f"{addr[0]}:{addr[1]} refused the push/pull: {reply.error}")
        if not isinstance(reply, PushPull):
            raise GossipError(f"{addr[0]}:{addr[1]} answered a push/pull with {type(reply).__name__}")
        self.merge(reply)

    async def send_user(self, addr: Addr, payload: bytes) -> None:
        """Send a reliable user message to the node at ``addr`` on a new stream, which it then closes (raises
        GossipError, OSError or TimeoutError)."""
        stream = await self.host.transport.dial(addr, self.host.config.tcp_timeout)
        try:
            await self.write(stream, encode_user_stream(payload), initiator=True)
        finally:
            stream.close()

    async def ping(self, addr: Addr, ping: Ping, timeout: float) -> bool:
        """Send ``ping`` over a new stream and wait for its ack (memberlist ``sendPingAndWaitForAck``): True
        when the ack for ``ping.seq_no`` came within ``timeout`` seconds, False on any failure."""
        try:
            async with asyncio.timeout(timeout):
                stream = await self.host.transport.dial(addr, timeout)
                try:
                    await self.write(stream, encode(ping), initiator=True)
                    reply = await self.read(stream, initiator=True)
                finally:
                    stream.close()
        except (GossipError, OSError, TimeoutError, ConnectionError):
            return False
        return isinstance(reply, Ack) and reply.seq_no == ping.seq_no

    async def periodic(self, sleep: Callable[[float], Awaitable[None]], stop: asyncio.Event) -> None:
        """Push/pull with one random alive peer every ``push_pull_interval`` (scaled past 32 nodes) until
        ``stop`` is set; ``sleep`` is the node's stop-aware sleep. Failures are logged, never raised."""
        host = self.host
        await sleep(host.rng.uniform(0, host.config.push_pull_interval))
        while not stop.is_set():
            peers = host.table.others()
            if peers:
                m = host.rng.choice(peers)
                try:
                    await self.push_pull((m.host, m.port))
                except (GossipError, OSError, TimeoutError) as e:
                    log.debug("%s: push/pull with %s failed: %s", host.name, m.name, e)
                except Exception:
                    log.exception("%s: push/pull with %s failed", host.name, m.name)
            await sleep(_scaled_push_pull(host.config.push_pull_interval, host.table.num_members()))


def _scaled_push_pull(interval: float, n: int) -> float:
    """memberlist ``pushPullScale``: stretch the interval once the cluster passes 32 nodes."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)
