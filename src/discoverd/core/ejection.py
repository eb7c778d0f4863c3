"""Local outlier ejection that decays: keep *this* caller away from an instance that keeps failing.

ssgo/discover counts failures per node for ever and, after 10 lifetime failures, deleted the provider
from the registry for every consumer (which re-added itself a second later: flapping). Here the
verdict is local to one caller and temporary, never written anywhere:

* ``consecutive_failures`` failures in a row eject an instance for ``base_ejection × 2^(k−1)``
  seconds (capped at ``max_ejection``), ``k`` being how many times in a row it was ejected;
* a success resets both the consecutive count and ``k`` (the decay);
* :meth:`Ejector.available` never keeps out more than ``max_ejected_share`` of the instances it is
  given (those whose ejection ends soonest are re-admitted first) and never returns an empty list
  for a non-empty input — ejection is a preference, not an outage.

Synchronous and clock-free: ``now`` (seconds, any monotonic origin) is passed in. Thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from discoverd.core.balancing import instance_key
from discoverd.errors import ConfigError
from discoverd.model import Instance


@dataclass(slots=True)
class _Entry:
    """What is known of one instance key that failed recently."""

    consecutive: int = 0  # failures since the last success or ejection
    times: int = 0  # ejections since the last success
    until: float = -math.inf  # ejected while now < until
    seen: float = 0.0  # last report


class Ejector:
    """Tracks failures per instance key and tells which instances to avoid for now.

    * ``consecutive_failures`` (5) — failures in a row that eject;
    * ``base_ejection`` (10 s) — first ejection; each further one in a row doubles it;
    * ``max_ejection`` (300 s) — cap of one ejection;
    * ``max_ejected_share`` (0.5) — at most this share of a candidate list is kept out;
    * ``forget_after`` (3600 s) — entries neither ejected nor reported for this long are dropped.

    Memory holds only keys that failed since their last success (a success of a key that is not
    ejected drops its entry), and is swept of stale keys; :meth:`forget` drops keys at once.
    """

    def __init__(
        self,
        consecutive_failures: int = 5,
        base_ejection: float = 10.0,
        max_ejection: float = 300.0,
        max_ejected_share: float = 0.5,
        *,
        forget_after: float = 3600.0,
    ) -> None:
        if consecutive_failures < 1:
            raise ConfigError(f"consecutive_failures must be >= 1, got {consecutive_failures!r}")
        if not 0 <= base_ejection <= max_ejection < math.inf:
            raise ConfigError(
                f"need 0 <= base_ejection <= max_ejection < inf, got {base_ejection!r}, {max_ejection!r}"
            )
        if not 0.0 <= max_ejected_share <= 1.0:
            raise ConfigError(f"max_ejected_share must be in [0, 1], got {max_ejected_share!r}")
        self.consecutive_failures = consecutive_failures
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.max_ejected_share = max_ejected_share
        self.forget_after = forget_after
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._ejected: dict[str, float] = {}  # key -> until, for ejections possibly still running
        self._next_sweep = -math.inf

    def __repr__(self) -> str:
        return f"<Ejector tracked={len(self._entries)} ejected={len(self._ejected)}>"

    def duration(self, times: int) -> float:
        """How long the ``times``-th ejection in a row lasts (1-based)."""
        return min(self.max_ejection, self.base_ejection * 2.0 ** min(max(0, times - 1), 64))

    def report(self, key: str, ok: bool, now: float) -> None:
        """Record the outcome of one call to ``key``; may eject it (from ``now`` on)."""
        with self._lock:
            self._sweep(now)
            entry = self._entries.get(key)
            if ok:
                if entry is not None:
                    if entry.until > now:  # keep the running ejection, forget its growth
                        entry.consecutive, entry.times, entry.seen = 0, 0, now
                    else:
                        del self._entries[key]
                return
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.seen = now
            if entry.until > now:
                return  # late failures of calls started before the ejection do not extend it
            entry.consecutive += 1
            if entry.consecutive >= self.consecutive_failures:
                entry.consecutive = 0
                entry.times += 1
                entry.until = now + self.duration(entry.times)
                self._ejected[key] = entry.until

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + max(self.forget_after / 8, 1.0)
        horizon = now - self.forget_after
        for key in [k for k, e in self._entries.items() if e.until <= now and e.seen < horizon]:
            del self._entries[key]
        for key in [k for k, until in self._ejected.items() if until <= now]:
            del self._ejected[key]

    def available(self, instances: Sequence[Instance], now: float) -> list[Instance]:
        """``instances`` minus the ejected ones, in the given order, keeping out at most
        ``max_ejected_share`` of them (rounded down) and never all of them. O(n) key building only
        while some ejection may be running; otherwise a plain copy."""
        with self._lock:
            ejected = self._ejected
            for key in [k for k, until in ejected.items() if until <= now]:
                del ejected[key]
            if not ejected:
                return list(instances)
            out_pos = []
            for pos, ins in enumerate(instances):
                until = ejected.get(instance_key(ins))
                if until is not None and until > now:
                    out_pos.append((until, pos))
        if not out_pos:
            return list(instances)
        limit = min(math.floor(len(instances) * self.max_ejected_share), len(instances) - 1)
        out_pos.sort()  # soonest-ending first: those are re-admitted first
        kept_out = {pos for _, pos in out_pos[len(out_pos) - limit :]} if limit > 0 else set()
        return [ins for pos, ins in enumerate(instances) if pos not in kept_out]

    def ejected(self, now: float) -> list[str]:
        """The keys ejected at ``now``, sorted."""
        with self._lock:
            return sorted(k for k, until in self._ejected.items() if until > now)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop everything known about ``keys`` (e.g. instances that left the registry)."""
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
                self._ejected.pop(key, None)

    @property
    def tracked(self) -> int:
        """How many keys are tracked (bounded: see the class docstring). Not ``__len__``: an
        ``Ejector`` with nothing tracked must stay truthy (``ejector or Ejector()``)."""
        with self._lock:
            return len(self._entries)
