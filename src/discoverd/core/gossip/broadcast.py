"""memberlist's ``TransmitLimitedQueue``: the broadcast queue that gossip and piggy-backing drain.

Semantics (memberlist ``queue.go``, spec §1.10):

* every entry carries a *transmit count* (starts at 0) and an increasing insertion id;
* :meth:`TransmitLimitedQueue.get_broadcasts` walks the transmit-count tiers from the lowest up and, in the
  current tier, picks the **largest** entry that still fits the remaining space (ties → the newest); each
  pick costs ``len(msg) + overhead`` bytes. When nothing in a tier fits it moves to the next tier, until no
  space is left or the tiers are exhausted. An entry is picked at most once per call;
* a picked entry's count is incremented; once it reaches :func:`retransmit_limit` (evaluated per call with the
  current ``num_nodes()``) the entry leaves the queue and its ``on_done`` runs. A limit of 0 (no other nodes)
  means "send exactly once";
* a *named* entry replaces (invalidates) a queued entry with the same name; *unique* entries and unnamed
  entries are never invalidated and never invalidate anything;
* :meth:`TransmitLimitedQueue.prune` keeps at most ``max_retain`` entries, dropping the most transmitted first
  (then the smallest, then the oldest) — the reverse of the selection order.

``on_done`` callbacks run after the queue is consistent again, so a callback may re-enter the queue.

Data structure: one sorted list of ``(len(msg), id)`` keys per transmit count (tier) plus a name index, so a
pick is a bisection and an insert/removal is a bisection plus a list shift — cheap for thousands of entries.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, insort
from collections.abc import Callable

__all__ = ["TransmitLimitedQueue", "retransmit_limit"]

_Key = tuple[int, int]  # (len(msg), id): ascending = smaller first, then older first


def retransmit_limit(mult: int, num_nodes: int) -> int:
    """``mult × ⌈log10(num_nodes + 1)⌉`` (memberlist ``retransmitLimit``); 0 when ``num_nodes <= 0``.

    Computed exactly on integers: ``⌈log10(n + 1)⌉`` is the number of decimal digits of ``n`` for ``n >= 1``.
    """
    if num_nodes <= 0:
        return 0
    return mult * len(str(num_nodes))


class _Entry:
    __slots__ = ("id", "msg", "name", "on_done", "transmits")

    def __init__(
        self, msg: bytes, entry_id: int, name: str | None, on_done: Callable[[], None] | None
    ) -> None:
        self.msg = msg
        self.id = entry_id
        self.name = name
        self.on_done = on_done
        self.transmits = 0

    @property
    def key(self) -> _Key:
        return (len(self.msg), self.id)


class TransmitLimitedQueue:
    """Broadcast queue with memberlist's retransmit limits and selection order (see the module docstring).

    ``retransmit_mult`` is ``RetransmitMult``; ``num_nodes`` returns the current (estimated) cluster size and
    is called once per :meth:`get_broadcasts`.
    """

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int]) -> None:
        if retransmit_mult < 0:
            raise ValueError(f"retransmit_mult must be >= 0, got {retransmit_mult}")
        self.retransmit_mult = retransmit_mult
        self._num_nodes = num_nodes
        self._ids = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        self._tiers: dict[int, list[_Key]] = {}
        self._named: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def queue(
        self,
        msg: bytes,
        *,
        name: str | None = None,
        unique: bool = False,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Enqueue ``msg`` with transmit count 0.

        ``name`` (non-empty): the entry replaces any queued entry with the same name (whose ``on_done`` is
        called). ``unique``: the entry is never invalidated (also true of unnamed entries here, since only a
        same-named entry can invalidate). Passing both is a programming error (``ValueError``). ``on_done`` is
        called exactly once, when the entry leaves the queue: sent ``retransmit_limit`` times, invalidated or
        pruned.
        """
        if name and unique:
            raise ValueError("a broadcast is either named or unique, not both")
        entry = _Entry(bytes(msg), next(self._ids), name or None, on_done)
        old = self._named.get(entry.name) if entry.name is not None else None
        if old is not None:
            self._remove(old)
        self._add(entry)
        if old is not None and old.on_done is not None:
            old.on_done()

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Pick broadcasts whose ``sum(len(msg) + overhead)`` is at most ``limit``, in memberlist's order.

        Returns the messages in the order picked (possibly empty). Picked entries are counted as transmitted;
        those reaching the retransmit limit are removed and their ``on_done`` called.
        """
        if not self._entries:
            return []
        transmit_limit = retransmit_limit(self.retransmit_mult, self._num_nodes())
        used = 0
        picked: list[_Entry] = []
        for transmits in sorted(self._tiers):
            tier = self._tiers[transmits]
            while tier:
                free = limit - used - overhead
                if free <= 0:
                    break
                # The key just below (free + 1, 0) (ids are >= 1): the largest message that fits, and the
                # newest among equally large ones.
                i = bisect_left(tier, (free + 1, 0)) - 1
                if i < 0:
                    break
                entry = self._entries.pop(tier.pop(i)[1])
                used += overhead + len(entry.msg)
                picked.append(entry)
            if not tier:
                del self._tiers[transmits]
            if limit - used - overhead <= 0:
                break
        return self._finish_picked(picked, transmit_limit)

    def prune(self, max_retain: int) -> None:
        """Drop entries until at most ``max(0, max_retain)`` remain: highest transmit count first, then the
        smallest, then the oldest (memberlist ``Prune``). Each dropped entry's ``on_done`` is called."""
        dropped: list[_Entry] = []
        excess = len(self._entries) - max(0, max_retain)
        for transmits in sorted(self._tiers, reverse=True):
            if excess <= 0:
                break
            tier = self._tiers[transmits]
            take = min(excess, len(tier))
            for _, entry_id in tier[:take]:
                dropped.append(self._entries.pop(entry_id))
            del tier[:take]
            if not tier:
                del self._tiers[transmits]
            excess -= take
        for entry in dropped:
            self._unname(entry)
        _call_done(dropped)

    # -- internals ---------------------------------------------------------------------------------------

    def _finish_picked(self, picked: list[_Entry], transmit_limit: int) -> list[bytes]:
        """Re-insert picked entries one tier up, or retire them at the limit; returns their messages."""
        done: list[_Entry] = []
        for entry in picked:
            entry.transmits += 1
            if entry.transmits >= transmit_limit:
                self._unname(entry)
                done.append(entry)
            else:
                self._entries[entry.id] = entry
                insort(self._tiers.setdefault(entry.transmits, []), entry.key)
        _call_done(done)
        return [entry.msg for entry in picked]

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.id] = entry
        insort(self._tiers.setdefault(entry.transmits, []), entry.key)
        if entry.name is not None:
            self._named[entry.name] = entry

    def _remove(self, entry: _Entry) -> None:
        tier = self._tiers[entry.transmits]
        del tier[bisect_left(tier, entry.key)]
        if not tier:
            del self._tiers[entry.transmits]
        del self._entries[entry.id]
        self._unname(entry)

    def _unname(self, entry: _Entry) -> None:
        if entry.name is not None and self._named.get(entry.name) is entry:
            del self._named[entry.name]


def _call_done(entries: list[_Entry]) -> None:
    for entry in entries:
        if entry.on_done is not None:
            entry.on_done()
