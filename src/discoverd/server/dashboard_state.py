"""The dashboard's state document: what ``GET /dashboard/api/state`` shows, read from the node.

:class:`StateView` reads the node's parts (:class:`~discoverd.server.parts.NodeParts`) and builds
the JSON-ready state: ``version``, ``now`` (ns), ``renew_mark``, ``node``, ``guard``, ``nodes``,
``apps`` (with per-zone counts by status), ``selected`` and ``instances``. It also computes what the
live view compares between ticks (:meth:`StateView.summary`, :meth:`StateView.renew_mark`).
Reading is cheap and side-effect free.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Final

from discoverd.core.registry_state import App, AppKey
from discoverd.model import UP, WAITING, Instance
from discoverd.server.parts import NodeParts
from discoverd.server.replication import NODE_UP

_STATUS_NAMES: Final = {UP: "UP", WAITING: "WAITING"}

Filter = AppKey | None
"""The app whose instances a state includes, or ``None`` for every app."""


def status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, f"UNKNOWN({status})")


class StateView:
    """Builds the dashboard state of one node."""

    def __init__(self, parts: NodeParts) -> None:
        self.parts = parts
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"<StateView {self.parts.config.advertise}>"

    @functools.cached_property
    def software(self) -> str:
        """discoverd's version, read from the package metadata at the first state (importlib.metadata
        costs a few MB: a node whose dashboard is never opened does not load it)."""
        import importlib.metadata

        try:
            return importlib.metadata.version("discoverd")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
            return "unknown"

    def summary(self) -> tuple[object, ...]:
        """What, besides the registry, changes the version: guard, protect, grace, peers' status."""
        p = self.parts
        g = p.registry.guard
        nodes = tuple((n["addr"], n["status"]) for n in self.nodes())
        grace = p.clock() < p.lifecycle.no_evict_until
        xds = tuple((c["peer"], c["node_id"], str(c["watching"])) for c in self.xds_clients())
        return (
            g.protecting,
            g.last_window,
            g.expected,
            g.threshold,
            p.lifecycle.protected,
            grace,
            nodes,
            xds,
        )

    def renew_mark(self, flt: Filter) -> int:
        """Moves on every renew shown by ``flt``: the app's latest renew, or the node's renew count."""
        if flt is None:
            return self.parts.counters.renews
        a = self.parts.registry.apps.get(flt)
        return 0 if a is None else max((i.renew_timestamp for i in a.instances()), default=0)

    def state(self, version: int, flt: Filter = None) -> dict[str, Any]:
        """The state document for ``flt`` at ``version``."""
        reg = self.parts.registry
        now = self.parts.clock()
        apps = [a for _, a in sorted(reg.apps.items())]
        shown = apps if flt is None else [a for a in (reg.apps.get(flt),) if a is not None]
        return {
            "version": version,
            "now": now,
            "renew_mark": str(self.renew_mark(flt)),
            "node": self.node_info(),
            "guard": self.guard(now),
            "nodes": self.nodes(),
            "xds": None if self.parts.xds is None else self.xds_clients(),
            "apps": [_app_row(a) for a in apps],
            "selected": None if flt is None else {"appid": flt[0], "env": flt[1], "found": bool(shown)},
            "instances": [
                _instance_row(i, now)
                for a in shown
                for zone in sorted(a.zones)
                for _, i in sorted(a.zones[zone].items())
            ],
        }

    def xds_clients(self) -> list[dict[str, Any]]:
        """The xDS (ADS) streams: node id, address, env, zone, what each watches, NACKs; ``[]`` without
        an xDS server."""
        xds = self.parts.xds
        if xds is None:
            return []
        rows = [dataclasses.asdict(c) for c in xds.clients()]
        for row in rows:
            row["watching"] = {kind: list(names) for kind, names in row["watching"].items()}
        return sorted(rows, key=lambda r: (r["node_id"], r["peer"]))

    def node_info(self) -> dict[str, Any]:
        p = self.parts
        c = p.config
        return {
            "addr": c.advertise,
            "zone": c.zone,
            "region": c.region,
            "env": c.env,
            "hostname": c.hostname,
            "version": self.software,
            "uptime": round(time.monotonic() - self.started, 1),
            "startup_protect": p.lifecycle.protected,
            "protect_duration": c.protect_duration,
            "instances": p.registry.size,
            "apps": len(p.registry.apps),
        }

    def guard(self, now: int) -> dict[str, Any]:
        """The renew guard and why eviction is suspended (``reasons``, empty when it runs normally)."""
        p = self.parts
        c, g = p.config, p.registry.guard
        reasons: list[dict[str, str]] = []
        if g.protecting:
            reasons.append(
                {
                    "kind": "self-preservation",
                    "text": f"{g.last_window} renews in the last {c.evict_interval:g} s window, fewer than "
                    f"the {g.needed} needed ({g.threshold:.0%} of {g.expected} expected): only instances "
                    f"silent for more than {c.evict_ceiling:g} s are evicted",
                }
            )
        grace = max(0.0, (p.lifecycle.no_evict_until - now) / 1e9)
        if grace > 0:
            reasons.append(
                {
                    "kind": "restore-grace",
                    "text": f"restored from a snapshot: nothing is evicted for another {grace:.0f} s",
                }
            )
        return {
            "renews_last_window": g.last_window,
            "renews_this_window": g.this_window,
            "needed": g.needed,
            "expected": g.expected,
            "threshold": g.threshold,
            "window": c.evict_interval,
            "evict_after": c.evict_after,
            "protecting": g.protecting,
            "restore_grace": round(grace, 1),
            "startup_protect": p.lifecycle.protected,
            "eviction_suspended": bool(reasons),
            "reasons": reasons,
        }

    def nodes(self) -> list[dict[str, Any]]:
        """This node, its own-zone peers and one target per other zone, each ``UP`` or ``LOST``."""
        c, rep = self.parts.config, self.parts.replicator
        rows = [_node(c.advertise, c.zone, True, "self")]
        rows += [_node(a, c.zone, p.status == NODE_UP, "peer") for a, p in sorted(rep.own.items())]
        rows += [_node(p.addr, z, p.status == NODE_UP, "zone") for z, p in sorted(rep.remote.items())]
        return rows


def _node(addr: str, zone: str, up: bool, role: str) -> dict[str, Any]:
    return {"addr": addr, "zone": zone, "status": "UP" if up else "LOST", "role": role}


def _app_row(a: App) -> dict[str, Any]:
    zones: dict[str, dict[str, int]] = {}
    for zone, hosts in sorted(a.zones.items()):
        counts = zones[zone] = {"UP": 0, "WAITING": 0}
        for ins in hosts.values():
            name = status_name(ins.status)
            counts[name] = counts.get(name, 0) + 1
    return {"appid": a.appid, "env": a.env, "instances": len(a), "latest": a.latest, "zones": zones}


def _instance_row(i: Instance, now: int) -> dict[str, Any]:
    return {
        "appid": i.appid,
        "env": i.env,
        "region": i.region,
        "zone": i.zone,
        "hostname": i.hostname,
        "addrs": i.addrs,
        "version": i.version,
        "metadata": dict(sorted((i.metadata or {}).items())),
        "status": i.status,
        "status_name": status_name(i.status),
        "reg_timestamp": i.reg_timestamp,
        "up_timestamp": i.up_timestamp,
        "renew_timestamp": i.renew_timestamp,
        "dirty_timestamp": i.dirty_timestamp,
        "reg_age": round((now - i.reg_timestamp) / 1e9, 1),
        "renew_age": round((now - i.renew_timestamp) / 1e9, 1),
    }
