"""A memberlist-compatible SWIM node on asyncio (spec ``memberlist-gomicro.md`` Part 1).

:class:`MemberlistNode` speaks HashiCorp memberlist 0.2.x on one UDP socket and one TCP listener sharing a
port: probing with indirect probes, nacks and the TCP fallback ping, Lifeguard suspicion and awareness,
gossip of membership messages and user broadcasts, push/pull state exchange, join and graceful leave,
AES-GCM keyrings and LZW compression, and optionally memberlist ≥ 0.3.0 cluster labels
(``GossipConfig.label``: packets and streams without our label are dropped). The rules live in
:mod:`discoverd.core.gossip` (the member table, the broadcast queue, the codecs); this module does the I/O
and the timers.

Lifecycle: ``await node.start()`` (binds, announces itself, starts its loops in one task group), then
``await node.join(["host:port"])``; ``await node.leave()`` tells the cluster and waits until the news went
out; ``await node.shutdown()`` stops everything without a word (peers detect the failure). ``async with``
does start … leave + shutdown. A stopped node cannot be restarted.

Task-safety: all methods run on the node's event loop. Membership changes are published to every iterator
returned by :meth:`MemberlistNode.events` (async iterators; nothing runs on internal threads). The delegate's
methods (:class:`~discoverd.backends.gossip.delegate.Delegate`) are called on the loop and must not block.

Structure: the node keeps the lifecycle, incoming packets, gossip rounds and suspicion timers, and builds
its parts — :class:`~discoverd.backends.gossip.sender.PacketSender` (UDP output),
:class:`~discoverd.backends.gossip.probe.Prober` (failure detection) and
:class:`~discoverd.backends.gossip.streams.StreamExchange` (TCP) — handing each the others it needs. The
parts see the node only as a :class:`~discoverd.backends.gossip.host.NodeHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Self

from discoverd.backends.gossip.delegate import Delegate
from discoverd.backends.gossip.probe import Prober
from discoverd.backends.gossip.sender import PacketSender
from discoverd.backends.gossip.streams import StreamExchange
from discoverd.backends.gossip.transport import Addr, GossipTransport, NetTransport
from discoverd.config import split_hostport
from discoverd.core.gossip.broadcast import TransmitLimitedQueue
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.framing import decode_packet, label_overhead
from discoverd.core.gossip.keyring import ENCRYPT_OVERHEAD, Keyring
from discoverd.core.gossip.members import Effects, Member, MemberEvent, MemberTable, ip_bytes
from discoverd.core.gossip.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MsgType,
    Nack,
    NodeState,
    Ping,
    Suspect,
    decode,
)
from discoverd.core.gossip.suspicion import Awareness
from discoverd.errors import ConfigError, GossipDecodeError, GossipError

log = logging.getLogger("discoverd.gossip")


class MemberlistNode:
    """One memberlist node (see the module docstring)."""

    def __init__(
        self, config: GossipConfig, delegate: Delegate | None = None, transport: GossipTransport | None = None
    ) -> None:
        self.config = config
        self.name = config.name or f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        self.delegate = delegate or Delegate()
        self.transport = transport or NetTransport(config.bind_host, config.bind_port)
        self.keyring = Keyring(config.keys) if config.keys else None
        self.rng = random.Random()
        self.table = MemberTable(config, self.name, self.rng)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.queue = TransmitLimitedQueue(config.retransmit_mult, self.table.num_members)
        self.user_queue = TransmitLimitedQueue(config.retransmit_mult, self.table.num_members)
        self.addr: Addr = ("", 0)
        self.sender = PacketSender(self)
        self.exchange = StreamExchange(self, self.delegate)
        self.prober = Prober(self, self.sender, self.exchange, self.awareness)
        self._subscribers: list[asyncio.Queue[MemberEvent | None]] = []
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._packets = 0
        self._bad_packets = 0
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<MemberlistNode {self.name!r} {self.addr[0]}:{self.addr[1]} members={self.table.num_members()}>"
        )

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind, announce ourselves (incarnation 1) and start probing, gossiping and push/pull."""
        if self.closed or self._runner is not None:
            raise GossipError("a memberlist node can be started once")
        bound = await self.transport.start(self.on_packet, self.exchange.on_stream)
        host = self.config.advertise_host or bound[0]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.addr = (host, self.config.advertise_port or bound[1])
        meta = self.delegate.node_meta(512)
        self.apply(self.table.bootstrap(ip_bytes(host), self.addr[1], meta, self.now()))
        self._runner = asyncio.get_running_loop().create_task(self._run(), name=f"memberlist {self.name}")
        await self._ready.wait()
        return self

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self.prober.run(self._stop))
                tg.create_task(self._gossip_loop())
                tg.create_task(self._timer_loop())
                if self.config.push_pull_interval > 0:
                    tg.create_task(self.exchange.periodic(self._sleep, self._stop))
                self._ready.set()
                await self._stop.wait()
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            self._ready.set()

    def now(self) -> float:
        """The event loop's clock, in seconds (the member table's time base)."""
        return asyncio.get_running_loop().time()

    async def shutdown(self) -> None:
        """Stop without telling anyone (idempotent). Peers will find out by probing."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self.transport.close()
        for q in self._subscribers:
            q.put_nowait(None)

    async def leave(self, timeout: float = 1.0) -> bool:
        """Tell the cluster we leave (peers mark us Left); waits until the news was gossiped or ``timeout``.

        Returns False when the broadcast could not be confirmed in time. The node keeps running until
        :meth:`shutdown`.
        """
        if self.closed or self.table.leaving:
            return True
        sent = asyncio.Event()
        effects = self.table.leave(self.now())
        for name, msg in effects.broadcasts:
            self.queue.queue(msg, name=name, on_done=sent.set)
        self._publish(effects.events)
        if not self.table.others((NodeState.ALIVE, NodeState.SUSPECT)):
            return True
        try:
            async with asyncio.timeout(timeout):
                await sent.wait()
        except TimeoutError:
            return False
        return True

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(GossipError):
            await self.leave(2 * self.config.gossip_interval + 0.5)
        await self.shutdown()

    # -- public API ---------------------------------------------------------------------------------------

    async def join(self, seeds: Sequence[str]) -> int:
        """Push/pull (``join=True``) with every seed (``host:port`` or ``name/host:port``); returns how many
        answered. Raises :class:`GossipError` when none did."""
        errors: list[str] = []
        ok = 0
        for seed in seeds:
            try:
                await self.push_pull(_parse_seed(seed), join=True)
                ok += 1
            except (GossipError, OSError, TimeoutError) as e:
                errors.append(f"{seed}: {e or type(e).__name__}")
        if not ok and seeds:
            raise GossipError("failed to join any seed: " + "; ".join(errors))
        return ok

    def members(self) -> list[Member]:
        """The live members (alive or suspect), ourselves included, sorted by name."""
        return self.table.members()

    def num_members(self) -> int:
        """How many members are alive or suspect, ourselves included."""
        return self.table.num_members()

    @property
    def stats(self) -> dict[str, int]:
        """Counters since start (a fresh dict on each read): ``packets`` received, ``bad_packets`` and
        ``bad_streams`` dropped, indirect probes ``dropped`` for load, ``push_pulls`` served."""
        return {
            "packets": self._packets,
            "bad_packets": self._bad_packets,
            "bad_streams": self.exchange.bad_streams,
            "dropped": self.prober.dropped,
            "push_pulls": self.exchange.push_pulls,
        }

    @property
    def health_score(self) -> int:
        """The Lifeguard awareness score: 0 is healthy; higher stretches our probe interval."""
        return self.awareness.score

    def events(self) -> AsyncIterator[MemberEvent]:
        """Membership changes from now on (join / leave / update); ends when the node shuts down."""
        q: asyncio.Queue[MemberEvent | None] = asyncio.Queue()
        self._subscribers.append(q)

        async def gen() -> AsyncIterator[MemberEvent]:
            try:
                while (ev := await q.get()) is not None:
                    yield ev
            finally:
                with contextlib.suppress(ValueError):
                    self._subscribers.remove(q)

        return gen()

    def broadcast(self, payload: bytes, name: str | None = None) -> None:
        """Queue a user broadcast (piggy-backed on gossip and probes, sent a limited number of times)."""
        self.user_queue.queue(payload, name=name)

    async def send_reliable(self, member: str, payload: bytes) -> None:
        """Send a user message to ``member`` over TCP (raises GossipError, OSError or TimeoutError)."""
        m = self.table.nodes.get(member)
        if m is None:
            raise GossipError(f"unknown member {member!r}")
        await self.exchange.send_user((m.host, m.port), payload)

    async def push_pull(self, addr: Addr, *, join: bool = False) -> None:
        """Exchange full state with the node at ``addr`` (raises GossipError, OSError or TimeoutError)."""
        await self.exchange.push_pull(addr, join=join)

    async def update_meta(self) -> None:
        """Re-read our metadata from the delegate and announce it with a new incarnation."""
        self.apply(self.table.update_local(self.delegate.node_meta(512), self.now()))

    # -- effects and events -------------------------------------------------------------------------------

    def apply(self, effects: Effects) -> None:
        """Carry out a member-table change: queue its broadcasts, adjust awareness, publish its events, wake
        the suspicion timer. Returns at once."""
        for name, msg in effects.broadcasts:
            self.queue.queue(msg, name=name)
        if effects.refuted:
            self.awareness.apply(effects.refuted)
        self._publish(effects.events)
        self._wake.set()

    def _publish(self, events: list[MemberEvent]) -> None:
        for ev in events:
            for q in self._subscribers:
                q.put_nowait(ev)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Membership broadcasts first, then user broadcasts (ours, then the delegate's) in what is left."""
        msgs = self.queue.get_broadcasts(overhead, limit)
        avail = limit - sum(len(m) + overhead for m in msgs)
        user_overhead = overhead + 1
        if avail > user_overhead:
            user = self.user_queue.get_broadcasts(user_overhead, avail)
            avail -= sum(len(m) + user_overhead for m in user)
            if avail > user_overhead:
                user += self.delegate.get_broadcasts(user_overhead, avail)
            msgs += [bytes([MsgType.USER]) + m for m in user if m]
        return msgs

    # -- incoming packets ---------------------------------------------------------------------------------

    def on_packet(self, data: bytes, src: Addr) -> None:
        """Handle one datagram from ``src`` (the transport's packet handler). Never raises: a malformed
        packet or message is dropped and counted, a failing delegate is logged."""
        if self.closed:
            return
        self._packets += 1
        try:
            msgs = decode_packet(
                data,
                keyring=self.keyring,
                verify_incoming=self.config.gossip_verify_incoming,
                label=self.config.label_bytes,
                skip_inbound_label_check=self.config.skip_inbound_label_check,
            )
        except GossipDecodeError as e:
            self._bad_packets += 1
            log.debug("%s: dropped a packet from %s:%d: %s", self.name, src[0], src[1], e)
            return
        for raw in msgs:
            try:
                self._handle(raw, src)
            except GossipDecodeError as e:
                self._bad_packets += 1
                log.debug("%s: dropped a message from %s:%d: %s", self.name, src[0], src[1], e)
            except Exception:  # a delegate's bug must not take the node down either
                log.exception("%s: handling a message from %s:%d failed", self.name, src[0], src[1])

    def _handle(self, raw: bytes, src: Addr) -> None:
        kind = raw[0]
        if kind == MsgType.USER:
            if len(raw) > 1:
                self.delegate.notify_msg(raw[1:])
            return
        if kind not in _PACKET_TYPES:
            raise GossipDecodeError(f"unexpected message type {kind} in a packet")
        msg = decode(raw)
        if isinstance(msg, Ping):
            self.prober.on_ping(msg, src)
        elif isinstance(msg, IndirectPing):
            self.prober.relay(msg, src, self._tasks)
        elif isinstance(msg, Ack):
            self.prober.on_ack(msg.seq_no, msg.payload)
        elif isinstance(msg, Nack):
            self.prober.on_nack(msg.seq_no)
        elif isinstance(msg, Alive):
            self.apply(self.table.on_alive(self._with_port(msg), self.now()))
        elif isinstance(msg, Suspect):
            self.apply(self.table.on_suspect(msg, self.now()))
        elif isinstance(msg, Dead):
            self.apply(self.table.on_dead(msg, self.now()))

    def _with_port(self, msg: Alive) -> Alive:
        """Pre-v2 senders carried no port in their alive messages: assume ours."""
        if msg.port != 0:
            return msg
        return Alive(
            incarnation=msg.incarnation,
            node=msg.node,
            addr=msg.addr,
            port=self.addr[1],
            meta=msg.meta,
            vsn=msg.vsn,
        )

    # -- loops --------------------------------------------------------------------------------------------

    async def _gossip_loop(self) -> None:
        interval = self.config.gossip_interval
        while not self._stop.is_set():
            await self._sleep(interval)
            try:
                self.gossip()
            except Exception:  # e.g. a delegate's get_broadcasts raised: log, keep gossiping
                log.exception("%s: gossip round failed", self.name)

    def gossip(self) -> None:
        """One gossip round: up to ``gossip_nodes`` random peers each get what fits in a packet."""
        if not (len(self.queue) or len(self.user_queue) or self.delegate.has_broadcasts()):
            return  # idle: don't even pick targets (most of an idle node's CPU went here)
        overhead = ENCRYPT_OVERHEAD[1] if self.keyring is not None else 0
        limit = self.config.udp_buffer_size - 2 - overhead - label_overhead(self.config.label_bytes)
        for m in self.table.gossip_targets(self.now()):
            msgs = self.get_broadcasts(2, limit)
            if not msgs:
                return
            self.sender.send_parts((m.host, m.port), msgs, member=m)

    async def _timer_loop(self) -> None:
        """Fires suspicion timers (woken early whenever the table changes)."""
        while not self._stop.is_set():
            deadline = self.table.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self.now())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self.apply(self.table.expire_suspicions(self.now()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()


class _Stopped(Exception):
    pass


_PACKET_TYPES = frozenset(
    {
        MsgType.PING,
        MsgType.INDIRECT_PING,
        MsgType.ACK,
        MsgType.NACK,
        MsgType.SUSPECT,
        MsgType.ALIVE,
        MsgType.DEAD,
    }
)


def _parse_seed(seed: str) -> Addr:
    """``host:port`` or ``name/host:port`` → ``(host, port)``; ``[v6]:port`` accepted."""
    try:
        return split_hostport(seed.split("/", 1)[-1])
    except ConfigError as e:
        raise GossipError(f"seed {seed!r}: {e}") from None
