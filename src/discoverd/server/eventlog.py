"""The structured event log: one INFO line per registry event, on the logger ``discoverd.events``.

A subscriber of the node's events (``server/events.py``). Each line has an ``event`` field:

==========  ===================================================================================
``register``  a new instance (re-registers of a known hostname are not logged); ``addrs``, ``status``
``cancel``    an instance removed by a cancel
``set``       status/metadata applied to hosts (``hostname`` and ``status`` are lists)
``evict``     one eviction pass: ``count`` and ``apps``
``guard``     self-preservation switched on or off, with the window's renew counts
``protect``   start-up protect ended, with the reason
``peers``     the replication peer set changed
``peer``      a replication peer went ``UP`` or ``LOST``
==========  ===================================================================================

Writes logged while a request is handled carry ``replication`` (it came from a peer), ``client``
(the request's address) and ``request_id`` (when the request had one). Renews, reads and the
node's own registration log nothing: they are the hot path or routine. When INFO is off for
``discoverd.events`` a line costs one level check.
"""

from __future__ import annotations

import logging
from typing import ClassVar

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
from discoverd.model import Instance
from discoverd.server.logs import RequestScope, request_id

events = logging.getLogger("discoverd.events")

_LOGGED_WRITES = frozenset({Source.CLIENT, Source.ZONE, Source.PEER})


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

    def __init__(self, scope: RequestScope) -> None:
        self.scope = scope

    def __repr__(self) -> str:
        return "<EventLog discoverd.events>"

    def on_event(self, event: Event) -> None:
        if not events.isEnabledFor(logging.INFO):
            return
        if isinstance(event, Registered):
            if event.new and event.source in _LOGGED_WRITES:
                self._registered(event)
        elif isinstance(event, Cancelled):
            if event.source in _LOGGED_WRITES:
                i = event.instance
                extra = self._request_fields(
                    _write("cancel", i.appid, i.env, i.zone, i.hostname), event.source
                )
                events.info("cancelled %s/%s", i.appid, i.hostname, extra=extra)
        elif isinstance(event, InstancesSet):
            if event.applied:
                self._set(event)
        else:
            _node_event(event)

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
