"""The go-micro registry riding on a memberlist node: its state, its update queue, its delegate hooks.

:class:`MicroDelegate` is what a :class:`~discoverd.backends.gossip.registry.GossipRegistry` hands its
:class:`~discoverd.backends.gossip.node.MemberlistNode` as the delegate. It owns the registry's
:class:`~discoverd.core.gossip.micro_state.MicroState` and the queue of go-micro ``Update`` broadcasts, and
publishes every resulting change to the registry's :class:`~discoverd.backends.watch.WatchHub`.

Updates we receive for the first time are queued again (re-gossiped); duplicates are recognised by digest
and ignored, so a late retransmission of a create cannot resurrect a node whose delete overtook it.

Task-safety: all methods run on the node's event loop and return at once (the node calls the
:class:`~discoverd.backends.gossip.delegate.Delegate` hooks from its packet and stream handlers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from discoverd.backends.gossip.delegate import Delegate
from discoverd.backends.watch import WatchHub
from discoverd.core.gossip.broadcast import TransmitLimitedQueue
from discoverd.core.gossip.micro import Update, decode_update, encode_update
from discoverd.core.gossip.micro_state import MicroState
from discoverd.errors import GossipDecodeError
from discoverd.model import Event

#: Retransmit multiplier of go-micro's update queue.
RETRANSMIT_MULT: Final = 3


class MicroDelegate(Delegate):
    """go-micro registry state and updates on a memberlist node (see the module docstring).

    ``hub`` receives every change to :attr:`state`; ``num_members`` is the cluster size, which scales how
    often each update is retransmitted. :attr:`state` may be read by the owner; it changes only through this
    object.
    """

    def __init__(self, hub: WatchHub, num_members: Callable[[], int]) -> None:
        self.hub = hub
        self.state = MicroState()
        self.queue = TransmitLimitedQueue(RETRANSMIT_MULT, num_members)

    def _publish(self, events: list[Event]) -> None:
        if events:
            self.hub.publish(events)

    # -- our own changes ----------------------------------------------------------------------------------

    def send(self, update: Update) -> None:
        """Apply our own ``update`` locally and queue it for the cluster."""
        msg = encode_update(update)
        now = time.time_ns()
        self.state.first_seen(msg, now)
        self.queue.queue(msg, unique=True)
        self._publish(self.state.apply(update, now))

    def expire(self) -> None:
        """Drop the entries whose ``expires`` has passed (go-micro's expiry tick)."""
        self._publish(self.state.expire(time.time_ns()))

    # -- Delegate -----------------------------------------------------------------------------------------

    def notify_msg(self, msg: bytes) -> None:
        """An ``Update`` from the cluster: applied and re-gossiped the first time, ignored when a duplicate or
        malformed."""
        try:
            update = decode_update(msg)
        except GossipDecodeError:
            return
        now = time.time_ns()
        if not self.state.first_seen(msg, now):
            # A duplicate (memberlist delivers each broadcast up to its retransmit limit): applying it again
            # could resurrect a node whose delete overtook the create's retransmissions.
            return
        self.queue.queue(msg, unique=True)  # re-gossip what we learn first (go-micro does not)
        self._publish(self.state.apply(update, now))

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return self.queue.get_broadcasts(overhead, limit)

    def has_broadcasts(self) -> bool:
        return len(self.queue) > 0

    def local_state(self, join: bool) -> bytes:
        # periodic exchanges carry only first-hand entries, so a dead node's entry cannot bounce between
        # peers forever with a fresh learned ttl each time
        return self.state.local_state(include_learned=join)

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        self._publish(self.state.merge_remote_state(buf, time.time_ns()))
