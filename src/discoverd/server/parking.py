"""Held requests: a request answered later, with a timer, a shared cap, and one abort path.

The protocol's long polls (``server/polls.py``) and the dashboard's live view (``server/dashboard.py``)
both hold requests. :class:`Parking` is what they share: it owns each held request's timer, counts
every held request of the node against one cap (``max_polls``), answers each at most once, and is
the HTTP server's single ``on_abort`` (a client that went away). What to answer stays with the
*holder* — the component that parked the request — which implements :class:`Holder`:

* the hold expires → ``holder.expired(held)``: the holder answers it (``-304``, or the unchanged
  dashboard state) through :meth:`Parking.respond`;
* the client disconnects → ``holder.gone(held)``: the holder forgets its own bookkeeping.

A held request costs one :class:`Held` (about 80 bytes) and one timer handle. One loop, not
thread-safe.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from discoverd.server.http import HttpRequest


class Holder(Protocol):
    """The component that parked a request and knows what to answer."""

    def expired(self, held: Held) -> None:
        """The hold ran out: answer ``held`` now (through :meth:`Parking.respond`)."""

    def gone(self, held: Held) -> None:
        """The client went away: ``held`` is already forgotten by the parking; drop its record."""


@dataclass(slots=True, eq=False)
class Held:
    """One held request: the holder's ``record`` (its own bookkeeping), and the timer (``None`` once
    the request was answered or its client went away)."""

    req: HttpRequest
    holder: Holder
    record: object
    timer: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        return self.timer is None


class Parking:
    """Every held request of one node."""

    __slots__ = ("_on_timer", "count", "limit", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.limit = limit
        """Requests held at once; :attr:`full` refuses more (the caller answers -503)."""
        self.count = 0
        self._on_timer = self._expire
        """Bound once: a bound method per held request would cost 64 bytes each."""

    def __repr__(self) -> str:
        return f"<Parking held={self.count} limit={self.limit}>"

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    def park(self, req: HttpRequest, hold: float, holder: Holder, record: object) -> Held:
        """Hold ``req`` for ``hold`` seconds (check :attr:`full` first); the handler returns ``None``."""
        held = Held(req, holder, record)
        held.timer = self.loop.call_later(hold, self._on_timer, held)
        req.state = held
        self.count += 1
        return held

    def respond(self, held: Held, answer: bytes) -> bool:
        """Answer ``held`` with ``answer``; False (nothing sent) when it was answered or aborted."""
        if not self._release(held):
            return False
        held.req.respond(answer)
        return True

    def abort(self, req: HttpRequest) -> None:
        """The HTTP server's ``on_abort``: the client of a deferred request went away."""
        held = req.state
        if isinstance(held, Held) and self._release(held):
            held.holder.gone(held)

    def _expire(self, held: Held) -> None:
        if held.timer is not None:
            held.holder.expired(held)

    def _release(self, held: Held) -> bool:
        timer = held.timer
        if timer is None:
            return False
        held.timer = None
        timer.cancel()
        self.count -= 1
        held.req.state = None  # no cycle left for the garbage collector
        return True
