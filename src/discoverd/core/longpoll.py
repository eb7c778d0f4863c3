"""Long-poll bookkeeping (spec §4): which parked request waits for which app.

Waiters are tracked **per request**, not per polling hostname as in the Go server, so two polls from
one host never steal each other's wake-ups or zone filters (spec §11.18). A waiter is parked on every
app it asked for; when one app changes, :meth:`Waiters.take` removes the waiters of that app whose
zone filter the app satisfies (from every app they wait on) and returns them, grouped by the answer
they need, so the caller encodes each distinct answer once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from discoverd.core.registry_state import AppKey


@dataclass(slots=True, eq=False)
class Waiter:
    """One parked poll: the apps it waits on and what its answer depends on.

    ``missing`` is the ``error.-404`` list computed when the request arrived (spec §12.7);
    ``single`` marks ``/poll`` (standard envelope) rather than ``/polls`` (map envelope).
    ``token`` is the server's handle for answering; core never looks at it.
    """

    env: str
    appids: tuple[str, ...]
    zone: str = ""
    missing: tuple[str, ...] = ()
    single: bool = False
    token: object = None
    done: bool = field(default=False)

    @property
    def answer_key(self) -> tuple[bool, str, tuple[str, ...]]:
        """Waiters with the same key get byte-identical answers for the same change."""
        return (self.single, self.zone, self.missing)


class Waiters:
    """The parked polls of a node, indexed by ``(appid, env)``. Not thread-safe."""

    def __init__(self) -> None:
        self._by_app: dict[AppKey, dict[Waiter, None]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Waiters(parked={self.count}, apps={len(self._by_app)})"

    def park(self, w: Waiter) -> None:
        """Register ``w`` on each of its apps."""
        for appid in w.appids:
            self._by_app.setdefault((appid, w.env), {})[w] = None
        self.count += 1

    def discard(self, w: Waiter) -> bool:
        """Forget ``w`` (timeout, disconnect); returns False if it was already taken."""
        if w.done:
            return False
        w.done = True
        self.count -= 1
        for appid in w.appids:
            key = (appid, w.env)
            bucket = self._by_app.get(key)
            if bucket is not None:
                bucket.pop(w, None)
                if not bucket:
                    del self._by_app[key]
        return True

    def take(
        self, key: AppKey, accept: Callable[[str], bool]
    ) -> dict[tuple[bool, str, tuple[str, ...]], list[Waiter]]:
        """Remove and return the waiters of ``key`` whose zone filter ``accept`` allows, grouped.

        ``accept(zone)`` is called once per distinct zone filter ("" = all zones).
        """
        bucket = self._by_app.get(key)
        if not bucket:
            return {}
        verdicts: dict[str, bool] = {}
        groups: dict[tuple[bool, str, tuple[str, ...]], list[Waiter]] = {}
        for w in list(bucket):
            ok = verdicts.get(w.zone)
            if ok is None:
                ok = verdicts[w.zone] = accept(w.zone)
            if ok:
                self.discard(w)
                groups.setdefault(w.answer_key, []).append(w)
        return groups

    def drain(self) -> list[Waiter]:
        """Remove and return every parked waiter (shutdown)."""
        out = [w for bucket in self._by_app.values() for w in bucket]
        unique = list(dict.fromkeys(out))
        for w in unique:
            self.discard(w)
        return unique
