"""Which endpoints an xDS client of an app gets, as plain data (pure: no protobuf, no I/O).

For an app's instances and the client's zone:

* an instance is an endpoint when it is UP (WAITING instances never get traffic) and its **first**
  ``grpc://`` address is ``IP:PORT`` (``grpc://10.0.0.1:9000``, ``grpc://[::1]:9000``); instances
  without one are left out. A host name is left out too: gRPC and Envoy accept only IP addresses in
  an assignment, and one bad address would make the client refuse the whole assignment;
* the endpoint's weight is :func:`discoverd.core.balancing.weight_of` (metadata ``weight``, default
  10, the balancers' rule), capped at :data:`MAX_WEIGHT` so the sums stay within ``uint32``;
* endpoints are grouped by zone, one locality each (region from its instances), whose weight is the
  sum of its endpoints' weights;
* **priorities are dense from 0**: the client's own zone is priority 0 when it has an endpoint, the
  other zones priority 1; when the own zone has none, the other zones are priority 0 (a client rejects
  an assignment whose priorities skip 0). Fail-over is therefore a new assignment pushed when the own
  zone's last endpoint goes, and back again when one returns.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from discoverd.core.balancing import weight_of
from discoverd.model import UP, Instance

MAX_WEIGHT: Final = 1 << 16
"""Endpoint weights above this are capped (a locality of 65,536 such endpoints still fits ``uint32``)."""

SCHEME: Final = "grpc://"


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """One endpoint: an instance's gRPC address and weight."""

    hostname: str
    host: str
    port: int
    weight: int


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """The endpoints of one zone (one locality), sorted by hostname; ``weight`` is their sum."""

    region: str
    zone: str
    endpoints: tuple[EndpointPlan, ...]

    @property
    def weight(self) -> int:
        return sum(e.weight for e in self.endpoints)


@dataclass(frozen=True, slots=True)
class LocalityPlan:
    """A zone with the priority it has for one client."""

    zone: ZonePlan
    priority: int


def grpc_address(ins: Instance) -> tuple[str, int] | None:
    """``(ip, port)`` of the instance's first ``grpc://`` address, or ``None`` (none, or not IP:PORT)."""
    addr = next((a for a in ins.addrs if a.startswith(SCHEME)), None)
    if addr is None:
        return None
    try:
        parts = urlsplit(addr)
        host, port = parts.hostname, parts.port
        if host is None or port is None or port == 0:
            return None
        return str(ipaddress.ip_address(host)), port
    except ValueError:  # a bad port, or a host name
        return None


def endpoint(ins: Instance) -> EndpointPlan | None:
    """The endpoint of an instance, or ``None`` when it gets no traffic (not UP, no gRPC address)."""
    if ins.status != UP:
        return None
    address = grpc_address(ins)
    if address is None:
        return None
    return EndpointPlan(ins.hostname, address[0], address[1], min(weight_of(ins), MAX_WEIGHT))


def zones(instances: Iterable[Instance]) -> dict[str, ZonePlan]:
    """The app's zones that have at least one endpoint, by zone name, in name order."""
    found: dict[str, list[tuple[Instance, EndpointPlan]]] = {}
    for ins in instances:
        ep = endpoint(ins)
        if ep is not None:
            found.setdefault(ins.zone, []).append((ins, ep))
    out: dict[str, ZonePlan] = {}
    for zone in sorted(found):
        members = sorted(found[zone], key=lambda pair: pair[1].hostname)
        region = min((ins.region for ins, _ in members if ins.region), default="")
        out[zone] = ZonePlan(region, zone, tuple(ep for _, ep in members))
    return out


def own_zone(plans: dict[str, ZonePlan], client_zone: str) -> str:
    """The zone that gets priority 0 alone: the client's, when it has endpoints; else ``""`` (none).

    Clients whose zone has no endpoint all get the same assignment, so this is also the cache key.
    """
    return client_zone if client_zone in plans else ""


def prioritized(plans: dict[str, ZonePlan], client_zone: str) -> tuple[LocalityPlan, ...]:
    """The localities for a client of ``client_zone``: priorities dense from 0 (see the module doc)."""
    own = own_zone(plans, client_zone)
    others = 1 if own else 0
    return tuple(LocalityPlan(z, 0 if name == own else others) for name, z in plans.items())
