"""Listener, Cluster and ClusterLoadAssignment messages, and their encode-once cache."""

from __future__ import annotations

from typing import Any

from discoverd.core.registry_state import RegistryState
from discoverd.model import Instance
from discoverd.server.xds import protos, resources
from discoverd.server.xds.protos import CLUSTER, ENDPOINTS, LISTENER


def decode(type_url: str, fragment: bytes) -> Any:
    """The one resource of a fragment, unpacked."""
    msg = protos.DiscoveryResponse.FromString(fragment)
    assert len(msg.resources) == 1 and msg.resources[0].type_url == type_url
    cls = {LISTENER: protos.Listener, CLUSTER: protos.Cluster, ENDPOINTS: protos.ClusterLoadAssignment}
    out = cls[type_url]()
    msg.resources[0].Unpack(out)
    return out


def registry(*instances: Instance) -> RegistryState:
    reg = RegistryState()
    for i in instances:
        reg.register(i, 1)
    return reg


def ins(host: str, port: int, zone: str = "z1", env: str = "dev", weight: str = "") -> Instance:
    return Instance(
        region="r1", zone=zone, env=env, appid="app", hostname=host, addrs=[f"grpc://10.0.0.1:{port}"],
        metadata={"weight": weight} if weight else None,
    )  # fmt: skip


def test_listener_routes_everything_to_the_cluster_through_the_router_filter() -> None:
    listener = decode(LISTENER, resources.fragment(resources.listener("app")))
    assert listener.name == "app"
    manager = protos.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(manager)
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    assert manager.http_filters[0].typed_config.type_url == protos.type_url(protos.Router)
    [host] = manager.route_config.virtual_hosts
    assert list(host.domains) == ["*"]
    assert [(r.match.prefix, r.route.cluster) for r in host.routes] == [("", "app")]


def test_cluster_is_eds_over_ads_round_robin() -> None:
    cluster = decode(CLUSTER, resources.fragment(resources.cluster("app")))
    assert (cluster.name, cluster.type, cluster.lb_policy) == (
        "app",
        protos.Cluster.EDS,
        protos.Cluster.ROUND_ROBIN,
    )
    assert cluster.eds_cluster_config.eds_config.HasField("ads")


def test_assignment_has_weighted_localities_by_zone_with_dense_priorities() -> None:
    res = resources.Resources(registry(ins("a", 1, "z1", weight="3"), ins("b", 2, "z2"), ins("c", 3, "z2")))
    cla = decode(ENDPOINTS, res.fragment(ENDPOINTS, "app", "dev", "z2"))
    assert cla.cluster_name == "app"
    got = [
        (loc.locality.zone, loc.locality.region, loc.priority, loc.load_balancing_weight.value)
        for loc in cla.endpoints
    ]
    assert got == [("z1", "r1", 1, 3), ("z2", "r1", 0, 20)]
    ep = cla.endpoints[1].lb_endpoints[0]
    address = ep.endpoint.address.socket_address
    assert (address.address, address.port_value, ep.load_balancing_weight.value) == ("10.0.0.1", 2, 10)
    assert (ep.endpoint.hostname, ep.health_status) == ("b", protos.HealthStatus.HEALTHY)


def test_unknown_app_or_env_gives_an_empty_assignment() -> None:
    res = resources.Resources(registry(ins("a", 1, env="prod")))
    assert not res.exists("app", "dev") and res.exists("app", "prod")
    cla = decode(ENDPOINTS, res.fragment(ENDPOINTS, "app", "dev", "z1"))
    assert (cla.cluster_name, len(cla.endpoints)) == ("app", 0)


def test_each_resource_is_encoded_once_until_its_app_changes() -> None:
    reg = registry(ins("a", 1, "z1"))
    res = resources.Resources(reg)
    first = res.fragment(ENDPOINTS, "app", "dev", "z9")
    # clients of every zone without endpoints share one encoding; the own zone gets its own
    assert res.fragment(ENDPOINTS, "app", "dev", "z8") is first
    assert res.fragment(ENDPOINTS, "app", "dev", "z1") is not first
    assert res.fragment(LISTENER, "app", "dev", "z1") is res.fragment(LISTENER, "app", "prod", "z2")
    assert res.encodings == 3
    event = reg.register(ins("b", 2, "z1"), 2)
    res.invalidate((event.instance.appid, event.instance.env))
    changed = res.fragment(ENDPOINTS, "app", "dev", "z9")
    assert changed != first and res.encodings == 4
    assert len(decode(ENDPOINTS, changed).endpoints[0].lb_endpoints) == 2


def test_a_response_is_the_envelope_followed_by_the_fragments() -> None:
    parts = [resources.fragment(resources.listener(n)) for n in ("a", "b")]
    msg = protos.DiscoveryResponse.FromString(resources.response(LISTENER, "7", "42", parts))
    assert (msg.version_info, msg.nonce, msg.type_url) == ("7", "42", LISTENER)
    assert [decode(LISTENER, resources.fragment(_unpacked(r))).name for r in msg.resources] == ["a", "b"]


def _unpacked(any_message: Any) -> Any:
    out = protos.Listener()
    any_message.Unpack(out)
    return out
