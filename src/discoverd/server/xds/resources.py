"""xDS resources of the registry's apps, each encoded once per change and shared by every stream.

For a client using ``xds:///APPID`` (resource names are appids):

* **Listener** ``APPID``: an ``api_listener`` with an HttpConnectionManager, an inline route
  configuration sending everything to cluster ``APPID``, and the router filter (grpcio rejects a
  Listener without it);
* **Cluster** ``APPID``: EDS over ADS, ``ROUND_ROBIN``;
* **ClusterLoadAssignment** ``APPID``: the endpoints of :mod:`discoverd.server.xds.plan` for the
  client's env and zone, one locality per zone with its ``load_balancing_weight`` set (required).

Encoding once: each resource is kept as a **fragment**, the serialized bytes of a
``DiscoveryResponse`` holding only that resource. Concatenated serialized messages parse as their
merge, and a merge appends repeated fields, so a response is the small per-stream envelope (version,
nonce, type) followed by the cached fragments: no stream re-encodes a resource. Listener and Cluster
depend on the name only; an assignment on ``(appid, env)`` and the client's zone, and is dropped by
:meth:`Resources.invalidate` on every change of its app (the subscriber calls it synchronously, during
the event's delivery, so a cached fragment never outlives the content it was made from).

One event loop; not thread-safe. Memory is bounded: past :data:`MAX_ENTRIES` names or apps the
corresponding cache is emptied and refills on demand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from discoverd.core.events import AppKey
from discoverd.core.registry_state import RegistryState
from discoverd.server.xds import plan
from discoverd.server.xds.protos import (
    CLUSTER,
    ENDPOINTS,
    LISTENER,
    Address,
    AggregatedConfigSource,
    ApiListener,
    ApiVersion,
    Cluster,
    ClusterLoadAssignment,
    ConfigSource,
    DiscoveryResponse,
    Endpoint,
    HealthStatus,
    HttpConnectionManager,
    HttpFilter,
    LbEndpoint,
    Listener,
    Locality,
    LocalityLbEndpoints,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    Router,
    SocketAddress,
    UInt32Value,
    VirtualHost,
    pack,
)

MAX_ENTRIES: Final = 50_000
ROUTER_FILTER: Final = "envoy.filters.http.router"


def listener(name: str) -> Any:
    """The Listener of ``xds:///name``: everything routed to cluster ``name``."""
    route = RouteConfiguration(
        name=name,
        virtual_hosts=[
            VirtualHost(
                name=name,
                domains=["*"],
                routes=[Route(match=RouteMatch(prefix=""), route=RouteAction(cluster=name))],
            )
        ],
    )
    manager = HttpConnectionManager(
        stat_prefix=name,
        route_config=route,
        http_filters=[HttpFilter(name=ROUTER_FILTER, typed_config=pack(Router()))],
    )
    return Listener(name=name, api_listener=ApiListener(api_listener=pack(manager)))


def cluster(name: str) -> Any:
    """The Cluster ``name``: its endpoints by EDS over the same ADS stream, round robin."""
    eds = Cluster.EdsClusterConfig(
        eds_config=ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)
    )
    return Cluster(name=name, type=Cluster.EDS, eds_cluster_config=eds, lb_policy=Cluster.ROUND_ROBIN)


def assignment(name: str, localities: Iterable[plan.LocalityPlan]) -> Any:
    """The ClusterLoadAssignment ``name`` of these localities (none: an empty assignment)."""
    return ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            LocalityLbEndpoints(
                locality=Locality(region=loc.zone.region, zone=loc.zone.zone),
                load_balancing_weight=UInt32Value(value=loc.zone.weight),
                priority=loc.priority,
                lb_endpoints=[_lb_endpoint(ep) for ep in loc.zone.endpoints],
            )
            for loc in localities
        ],
    )


def _lb_endpoint(ep: plan.EndpointPlan) -> Any:
    address = Address(socket_address=SocketAddress(address=ep.host, port_value=ep.port))
    return LbEndpoint(
        endpoint=Endpoint(address=address, hostname=ep.hostname),
        health_status=HealthStatus.HEALTHY,
        load_balancing_weight=UInt32Value(value=ep.weight),
    )


def fragment(resource: Any) -> bytes:
    """The serialized ``DiscoveryResponse`` holding only ``resource`` (see the module doc)."""
    return bytes(DiscoveryResponse(resources=[pack(resource)]).SerializeToString())


def response(type_url: str, version: str, nonce: str, fragments: Iterable[bytes]) -> bytes:
    """A serialized ``DiscoveryResponse``: the envelope, then the resources' fragments."""
    envelope = DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    return bytes(envelope.SerializeToString()) + b"".join(fragments)


@dataclass(slots=True)
class _App:
    """One ``(appid, env)``: its zones with endpoints, and the assignment fragment per own zone."""

    zones: dict[str, plan.ZonePlan]
    encoded: dict[str, bytes] = field(default_factory=dict)


class Resources:
    """The fragments of the registry's resources, built on first use after each change.

    :meth:`exists` tells whether an app has instances in an env (any status); the fragments are for
    resources that exist *or* that a stream must keep receiving (see ``streams``): an assignment of
    an app without instances is empty. :attr:`encodings` counts the resources encoded so far.
    """

    __slots__ = ("_apps", "_registry", "_static", "encodings")

    def __init__(self, registry: RegistryState) -> None:
        self._registry = registry
        self._static: dict[tuple[str, str], bytes] = {}
        self._apps: dict[AppKey, _App] = {}
        self.encodings = 0

    def __repr__(self) -> str:
        return f"<Resources names={len(self._static)} apps={len(self._apps)} encodings={self.encodings}>"

    def exists(self, appid: str, env: str) -> bool:
        return self._registry.app(appid, env) is not None

    def invalidate(self, key: AppKey) -> None:
        """Forget the assignments of ``(appid, env)``: its content changed."""
        self._apps.pop(key, None)

    def fragment(self, type_url: str, name: str, env: str, zone: str) -> bytes:
        """The fragment of resource ``name`` of ``type_url`` for a client of ``env`` and ``zone``."""
        if type_url == ENDPOINTS:
            return self._assignment(name, env, zone)
        key = (type_url, name)
        out = self._static.get(key)
        if out is None:
            if len(self._static) >= MAX_ENTRIES:
                self._static.clear()
            out = self._static[key] = self._encode(listener(name) if type_url == LISTENER else cluster(name))
        return out

    def _assignment(self, appid: str, env: str, zone: str) -> bytes:
        app = self._apps.get((appid, env))
        if app is None:
            stored = self._registry.app(appid, env)
            if len(self._apps) >= MAX_ENTRIES:
                self._apps.clear()
            app = self._apps[(appid, env)] = _App(plan.zones(() if stored is None else stored.instances()))
        own = plan.own_zone(app.zones, zone)
        out = app.encoded.get(own)
        if out is None:
            out = app.encoded[own] = self._encode(assignment(appid, plan.prioritized(app.zones, own)))
        return out

    def _encode(self, resource: Any) -> bytes:
        self.encodings += 1
        return fragment(resource)


SERVED: Final = (LISTENER, CLUSTER, ENDPOINTS)
"""The resource types served, in the order a stream sends them (Listener before Cluster before
endpoints: what a client needs next is sent after what refers to it)."""
