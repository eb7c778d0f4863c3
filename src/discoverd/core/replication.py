"""What to send to which peer (spec §6.3–6.4), as pure bookkeeping.

:class:`PeerQueue` holds the operations still to be sent to one peer, bounded and coalescing:

* a ``register`` of an instance supersedes every pending operation on that instance (the peer gets the
  whole current copy); a ``cancel`` supersedes pending ``register``/``renew`` of it;
* a ``renew`` is dropped when a ``register`` of the instance is pending, and replaces a pending ``renew``
  in place (only the latest dirty timestamp matters);
* ``set`` operations are kept in order;
* past ``limit`` operations, the oldest ``renew`` is dropped first (the next renew cycle repairs it),
  then the oldest operation of any kind; every drop is counted.

So a dead peer costs at most ``limit`` operations of memory, whatever the write rate.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

from discoverd import jsoncodec
from discoverd.core.events import Cancelled, InstancesSet, Registered, Renewed, Source
from discoverd.model import Instance

InstanceKey = tuple[str, str, str, str]
"""``(appid, env, zone, hostname)``."""

REGISTER = "register"
RENEW = "renew"
CANCEL = "cancel"
SET = "set"


@dataclass(slots=True)
class PeerOp:
    """One form POST to ``/discovery/<action>`` of a peer; ``key`` names the instance (``None`` for set)."""

    action: str
    params: list[tuple[str, str]]
    key: InstanceKey | None = None
    replication: bool = False
    """The ``replication`` flag in ``params``: sent to an own-zone peer (True) or another zone."""
    attempts: int = 0
    queued_at: float = 0.0
    """When the change was queued (the caller's monotonic clock); a coalesced renew keeps the first time."""


@dataclass(slots=True)
class PeerQueue:
    """Pending operations for one peer. Not thread-safe."""

    limit: int = 10_000
    dropped: int = 0
    _ops: OrderedDict[tuple[str, object], PeerOp] = field(default_factory=OrderedDict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _renews: OrderedDict[object, None] = field(default_factory=OrderedDict)
    """Keys of the pending renews, in queue order: the drop-first victims, found in O(1)."""

    def __len__(self) -> int:
        return len(self._ops)

    def oldest(self) -> float | None:
        """``queued_at`` of the operation at the head of the queue (``None`` when empty): the peer's lag is
        ``now - oldest()``. Failed operations put back keep their time."""
        for op in self._ops.values():
            return op.queued_at
        return None

    def __repr__(self) -> str:
        return f"PeerQueue(pending={len(self._ops)}, dropped={self.dropped})"

    def push(self, op: PeerOp) -> None:
        """Queue ``op`` with the coalescing rules of the module docstring."""
        key = op.key
        if op.action == SET or key is None:
            self._ops[(SET, next(self._seq))] = op
        elif op.action == REGISTER:
            self._forget(key)
            self._ops[(REGISTER, key)] = op
        elif op.action == CANCEL:
            self._forget(key)
            self._ops[(CANCEL, key)] = op
        elif op.action == RENEW:
            if (REGISTER, key) in self._ops:
                return
            pending = self._ops.get((RENEW, key))
            if pending is not None:
                pending.params = op.params
                return
            self._ops[(RENEW, key)] = op
            self._renews[key] = None
        else:
            raise ValueError(f"unknown action {op.action!r}")
        self._enforce_limit()

    def push_front(self, op: PeerOp) -> None:
        """Put a failed ``op`` back at the head, unless a newer operation superseded it."""
        slot = (op.action, op.key) if op.key is not None and op.action != SET else (SET, next(self._seq))
        if op.key is not None and op.action != SET:
            superseding = {
                REGISTER: (REGISTER, CANCEL),
                RENEW: (REGISTER, RENEW, CANCEL),
                CANCEL: (REGISTER, CANCEL),
            }
            if any((a, op.key) in self._ops for a in superseding.get(op.action, ())):
                return
        self._ops[slot] = op
        self._ops.move_to_end(slot, last=False)
        if op.action == RENEW and op.key is not None:
            self._renews[op.key] = None
            self._renews.move_to_end(op.key, last=False)
        self._enforce_limit()

    def pop(self, busy: Collection[object] = ()) -> PeerOp | None:
        """The oldest pending operation whose :func:`lane` is not in ``busy``, or ``None``.

        Several senders may work on one peer: each passes the lanes in flight, so two operations on
        the same instance (or two ``set``s) are never sent concurrently and stay in order.
        """
        if not self._ops:
            return None
        if busy:
            slot = next((s for s, o in self._ops.items() if lane(o) not in busy), None)
            if slot is None:
                return None
            op = self._ops.pop(slot)
            action, key = slot
        else:
            (action, key), op = self._ops.popitem(last=False)
        if action == RENEW:
            del self._renews[key]
        return op

    def clear(self) -> int:
        """Forget everything (the peer left the cluster); returns how many were dropped."""
        n = len(self._ops)
        self._ops.clear()
        self._renews.clear()
        self.dropped += n
        return n

    def _forget(self, key: InstanceKey) -> None:
        for action in (REGISTER, RENEW, CANCEL):
            self._ops.pop((action, key), None)
        self._renews.pop(key, None)

    def _enforce_limit(self) -> None:
        while len(self._ops) > self.limit:
            if self._renews:
                key, _ = self._renews.popitem(last=False)
                del self._ops[(RENEW, key)]
            else:
                (action, key), _ = self._ops.popitem(last=False)
                if action == RENEW:  # pragma: no cover - every pending renew is in _renews
                    del self._renews[key]
            self.dropped += 1


def lane(op: PeerOp) -> object:
    """What must not be in flight twice: the instance, or the one lane of all ``set`` operations."""
    return op.key if op.key is not None and op.action != SET else SET


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _ident(ins: Instance) -> list[tuple[str, str]]:
    return [
        ("region", ins.region),
        ("zone", ins.zone),
        ("env", ins.env),
        ("appid", ins.appid),
        ("hostname", ins.hostname),
        ("from_zone", "true"),
    ]


def register_op(ins: Instance, *, replication: bool) -> PeerOp:
    """A full copy of ``ins`` for a peer; addrs as repeated keys (the Go server comma-joins them)."""
    meta = "" if ins.metadata is None else jsoncodec.dumps(ins.metadata).decode()
    params = [
        *_ident(ins),
        ("replication", _bool(replication)),
        *(("addrs", a) for a in ins.addrs),
        ("status", str(ins.status)),
        ("version", ins.version),
        ("metadata", meta),
        ("reg_timestamp", str(ins.reg_timestamp)),
        ("dirty_timestamp", str(ins.dirty_timestamp)),
        ("latest_timestamp", str(ins.latest_timestamp)),
    ]
    return PeerOp(REGISTER, params, ins.key, replication)


def renew_op(ins: Instance, *, replication: bool) -> PeerOp:
    params = [
        *_ident(ins),
        ("replication", _bool(replication)),
        ("dirty_timestamp", str(ins.dirty_timestamp)),
    ]
    return PeerOp(RENEW, params, ins.key, replication)


def cancel_op(ins: Instance, *, replication: bool) -> PeerOp:
    params = [
        *_ident(ins),
        ("replication", _bool(replication)),
        ("latest_timestamp", str(ins.latest_timestamp)),
    ]
    return PeerOp(CANCEL, params, ins.key, replication)


def set_op(event: InstancesSet, *, replication: bool) -> PeerOp:
    """A ``set`` with one ``hostname`` (and ``status``/``metadata`` when given) per change."""
    params = [
        ("region", event.region),
        ("zone", event.zone),
        ("env", event.env),
        ("appid", event.appid),
        ("set_timestamp", str(event.set_timestamp)),
        ("from_zone", "true"),
        ("replication", _bool(replication)),
    ]
    changes = event.changes
    params += [("hostname", c.hostname) for c in changes]
    params += [("status", str(c.status)) for c in changes if c.status is not None]
    params += [("metadata", jsoncodec.dumps(c.metadata).decode()) for c in changes if c.metadata is not None]
    return PeerOp(SET, params, None, replication)


Replicable = Registered | Renewed | Cancelled | InstancesSet
"""The events a node forwards to its peers."""

_FORWARDED = frozenset({Source.CLIENT, Source.ZONE, Source.NODE})
_LEASED = (Renewed, Cancelled)
"""Changes that go to other zones only for instances of the node's own zone."""


def fan_out(event: Replicable, zone: str) -> tuple[bool, bool]:
    """``(own-zone peers, other zones)``: where a change of the node in ``zone`` goes (the Go rules).

    Only writes of clients, of other zones' nodes and of the node itself are forwarded (a peer's
    replicated write is not sent on). Own-zone peers get every forwarded write. Other zones get
    registers and sets unless they came from another zone (``from_zone``), and renews and cancels of
    instances of the node's own zone.
    """
    if event.source not in _FORWARDED:
        return (False, False)
    if isinstance(event, _LEASED):
        return (True, event.instance.zone == zone)
    return (True, event.source is not Source.ZONE)


def peer_op(event: Replicable, *, replication: bool) -> PeerOp:
    """The operation that tells a peer of ``event`` (read at once: the event's instance is live)."""
    if isinstance(event, Registered):
        return register_op(event.instance, replication=replication)
    if isinstance(event, Renewed):
        return renew_op(event.instance, replication=replication)
    if isinstance(event, Cancelled):
        return cancel_op(event.instance, replication=replication)
    return set_op(event, replication=replication)
