"""The seams between the parts of one memberlist node.

A :class:`~discoverd.backends.gossip.node.MemberlistNode` is split by concern: the packet sender
(:mod:`~discoverd.backends.gossip.sender`), the failure detector (:mod:`~discoverd.backends.gossip.probe`) and
the stream exchange (:mod:`~discoverd.backends.gossip.streams`). None of them imports the node or each other:
each depends on the interfaces declared here, and the node module, the only one that imports them all,
builds the parts and hands each the others it needs.

Everything here is structural (:class:`typing.Protocol`): the node and the parts satisfy these interfaces by
having the members, without inheriting. All calls happen on the node's event loop; none of them blocks.
"""

from __future__ import annotations

import random
from typing import Protocol

from discoverd.backends.gossip.transport import Addr, GossipTransport
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.keyring import Keyring
from discoverd.core.gossip.members import Effects, Member, MemberTable
from discoverd.core.gossip.messages import Ping


class NodeHost(Protocol):
    """The node as its parts see it: shared state it owns, and the two things only the node may do.

    The parts read the attributes and never rebind them; they may change the objects behind them only through
    those objects' own methods (e.g. ``table.on_suspect``), and hand every resulting
    :class:`~discoverd.core.gossip.members.Effects` to :meth:`apply`.
    """

    @property
    def name(self) -> str:
        """Our member name (fixed for the node's life)."""

    @property
    def config(self) -> GossipConfig:
        """The node's configuration (immutable)."""

    @property
    def keyring(self) -> Keyring | None:
        """The encryption keys, or None for a plain cluster (keys may rotate while running)."""

    @property
    def table(self) -> MemberTable:
        """The member table: the membership rules and their state."""

    @property
    def transport(self) -> GossipTransport:
        """The node's transport (started by the node; the parts only send and dial)."""

    @property
    def rng(self) -> random.Random:
        """The node's random source (probe helpers, push/pull peers, jitter)."""

    @property
    def addr(self) -> Addr:
        """Our advertised address; ``("", 0)`` until the node has started."""

    @property
    def closed(self) -> bool:
        """True once the node has shut down: a part then serves nothing new."""

    def now(self) -> float:
        """The event loop's clock, in seconds (the time base of the member table)."""

    def apply(self, effects: Effects) -> None:
        """Carry out what a member-table change asks for: queue its broadcasts, adjust our awareness,
        publish its events and wake the suspicion timers. Returns at once."""

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Queued broadcasts to piggy-back, each costing ``len + overhead``, in total at most ``limit``
        bytes; taking them counts as one transmission."""


class PacketOut(Protocol):
    """Sending UDP packets (implemented by :class:`~discoverd.backends.gossip.sender.PacketSender`)."""

    def send_msg(self, addr: Addr, msg: bytes, member: Member | None = None) -> None:
        """Send ``msg`` to ``addr`` with as many queued broadcasts piggy-backed as fit; never blocks."""

    def raw(self, addr: Addr, payload: bytes, member: Member | None = None) -> None:
        """Send ``payload`` (one message or a compound) to ``addr`` as one packet; never blocks."""


class StreamPinger(Protocol):
    """The TCP fallback ping (implemented by :class:`~discoverd.backends.gossip.streams.StreamExchange`)."""

    async def ping(self, addr: Addr, ping: Ping, timeout: float) -> bool:
        """Send ``ping`` over a new stream to ``addr``; True when its ack came within ``timeout`` seconds,
        False on any failure (never raises for network errors). Closes the stream it opened."""
