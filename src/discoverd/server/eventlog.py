"""The structured event log: one INFO line per registry event, on the logger ``discoverd.events``.

A subscriber of the node's events (``server/events.py``). Each line has an ``event`` field:

==============  ===================================================================================
``register``    a new instance (re-registers of a known hostname are not logged); ``addrs``, ``status``
``cancel``      an instance removed by a cancel
``set``         status/metadata applied to hosts (``hostname`` and ``status`` are lists)
``evict``       one eviction pass: ``count`` and ``apps``
``guard``       self-preservation switched on or off, with the window's renew counts
``protect``     start-up protect ended, with the reason
``peers``       the replication peer set changed
``peer``        a replication peer went ``UP`` or ``LOST``
``suppressed``  write lines past the budget (below): ``counts`` by kind, ``apps`` (up to five)
==============  ===================================================================================

Writes logged while a request is handled carry ``replication`` (it came from a peer), ``client``
(the request's address) and ``request_id`` (when the request had one). Renews, reads and the
node's own registration log nothing: they are the hot path or routine. When INFO is off for
``discoverd.events`` a line costs one level check.

**Storms stay cheap.** A written line costs about as much as the register it reports (tens of
microseconds), so the write lines (``register``, ``cancel``, ``set``) have a budget: at most
:data:`WRITE_BURST` per :data:`WRITE_WINDOW` seconds are written one by one. The writes past it in a
window are counted and written as one ``suppressed`` line when the window ends (``counts`` by kind, up
to five ``apps``): a re-register storm of 100,000 instances costs about a hundred lines a second, and a
quiet registry logs every write. Node events (``evict``, ``guard``, ``protect``, ``peers``, ``peer``)
are always written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import ClassVar, Final

from discoverd.core.events import (
    Cancelled,
    Event,
    Evicted,
    GuardChanged,
    InstancesSet,
    PeersChanged,
    PeerStatusChanged,
    ProtectChanged,
    Registered,
    Source,
)
from discoverd.core.throttle import Budget
from discoverd.model import Instance
from discoverd.server.logs import RequestScope, request_id

events = logging.getLogger("discoverd.events")

_LOGGED_WRITES = frozenset({Source.CLIENT, Source.ZONE, Source.PEER})

#: Write lines written one by one per window; the rest of the window's writes are summarised.
WRITE_BURST: Final = 100
#: The window of :data:`WRITE_BURST`, in seconds.
WRITE_WINDOW: Final = 1.0
_SAMPLE_APPS: Final = 5

Schedule = Callable[[float, Callable[[], None]], asyncio.TimerHandle]
"""``loop.call_later``: run a callback once, after a delay in seconds."""


class EventLog:
    """Subscriber: logs the events of the table in the module docstring."""

    kinds: ClassVar[tuple[type[Event], ...]] = (
        Registered,
        Cancelled,
        InstancesSet,
        Evicted,
        GuardChanged,
        ProtectChanged,
        PeersChanged,
        PeerStatusChanged,
    )

    def __init__(
        self,
        scope: RequestScope,
        call_later: Schedule,
        *,
        burst: int = WRITE_BURST,
        window: float = WRITE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scope = scope
        self._call_later = call_later
        self._clock = clock
        self._budget = Budget(burst, window)
        self._skipped: Counter[str] = Counter()
        self._apps: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return "<EventLog discoverd.events>"

    def on_event(self, event: Event) -> None:
        if not events.isEnabledFor(logging.INFO):
            return
        if isinstance(event, Registered):
            if event.new and event.source in _LOGGED_WRITES and self._admit("register", event.instance.appid):
                self._registered(event)
        elif isinstance(event, Cancelled):
            if event.source in _LOGGED_WRITES and self._admit("cancel", event.instance.appid):
                i = event.instance
                extra = self._request_fields(
                    _write("cancel", i.appid, i.env, i.zone, i.hostname), event.source
                )
                events.info("cancelled %s/%s", i.appid, i.hostname, extra=extra)
        elif isinstance(event, InstancesSet):
            if event.applied and self._admit("set", event.appid):
                self._set(event)
        else:
            _node_event(event)

    def _admit(self, kind: str, appid: str) -> bool:
        """Whether this write's line fits the window's budget; else it is counted for the summary."""
        now = self._clock()
        if self._skipped and now >= self._budget.window_end():
            self.flush()
        if self._budget.take(now):
            return True
        self._skipped[kind] += 1
        if len(self._apps) < _SAMPLE_APPS:
            self._apps.add(appid)
        if self._timer is None:
            self._timer = self._call_later(max(0.0, self._budget.window_end() - now), self._on_timer)
        return False

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write the ``suppressed`` line for the writes counted and not written yet (if any)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._skipped:
            return
        total = self._budget.drain()
        counts = dict(sorted(self._skipped.items()))
        extra = {"event": "suppressed", "counts": counts, "apps": sorted(self._apps)}
        self._skipped.clear()
        self._apps.clear()
        events.info(
            "%d write line(s) not written one by one (over %d per %gs): %s",
            total,
            self._budget.burst,
            self._budget.interval,
            ", ".join(f"{n} {kind}" for kind, n in counts.items()),
            extra=extra,
        )

    def _request_fields(self, out: dict[str, object], source: Source) -> dict[str, object]:
        out["replication"] = source is Source.PEER
        out["client"] = self.scope.peer
        rid = request_id.get()
        if rid:  # also without our handler's filter (e.g. another handler set up by an embedder)
            out["request_id"] = rid
        return out

    def _registered(self, event: Registered) -> None:
        i: Instance = event.instance
        extra = _write("register", i.appid, i.env, i.zone, i.hostname)
        extra["addrs"] = list(i.addrs)
        extra["status"] = str(i.status)
        extra = self._request_fields(extra, event.source)
        events.info("registered %s/%s", i.appid, i.hostname, extra=extra)

    def _set(self, event: InstancesSet) -> None:
        hosts = [c.hostname for c in event.changes]
        extra = _write("set", event.appid, event.env, event.zone, hosts)
        extra["status"] = [str(c.status) for c in event.changes if c.status is not None]
        self._request_fields(extra, event.source)
        extra["metadata"] = any(c.metadata is not None for c in event.changes)
        events.info("set %s/%s", event.appid, ",".join(hosts), extra=extra)


def _write(kind: str, appid: str, env: str, zone: str, hostname: object) -> dict[str, object]:
    return {"event": kind, "appid": appid, "env": env, "zone": zone, "hostname": hostname}


def _node_event(event: Event) -> None:
    if isinstance(event, Evicted):
        apps = sorted({i.appid for i in event.instances})
        extra: dict[str, object] = {"event": "evict", "count": len(event.instances), "apps": apps}
        events.info("evicted %d instance(s)", len(event.instances), extra=extra)
    elif isinstance(event, GuardChanged):
        _guard(event)
    elif isinstance(event, ProtectChanged):
        state = "on" if event.protected else "off"
        extra = {"event": "protect", "protect": event.protected, "reason": event.reason}
        events.info("start-up protect %s: %s", state, event.reason, extra=extra)
    elif isinstance(event, PeersChanged):
        zones = {z: list(addrs) for z, addrs in event.peers.zones}
        extra = {"event": "peers", "own": list(event.peers.own), "zones": zones}
        events.info(
            "peer set: %d own-zone peer(s), %d other zone(s)", len(event.peers.own), len(zones), extra=extra
        )
    elif isinstance(event, PeerStatusChanged):
        state = "UP" if event.up else "LOST"
        extra = {"event": "peer", "peer": event.name, "addr": event.addr, "zone": event.zone, "status": state}
        events.info("peer %s is %s", event.name, state, extra=extra)


def _guard(event: GuardChanged) -> None:
    extra = {
        "event": "guard",
        "protecting": event.protecting,
        "renews_last_window": event.renews_last_window,
        "needed_renews": event.needed_renews,
        "expected_renews": event.expected_renews,
    }
    if event.protecting:
        msg = "self-preservation on: %d renews in the last window < %d needed, eviction suspended"
    else:
        msg = "self-preservation off: %d renews in the last window >= %d needed, eviction resumed"
    events.info(msg, event.renews_last_window, event.needed_renews, extra=extra)
