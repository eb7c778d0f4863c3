"""The registry → endpoints mapping (pure): addresses, status, weights, zones and priorities."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from discoverd.model import UP, WAITING, Instance
from discoverd.server.xds import plan


def ins(
    host: str,
    *addrs: str,
    zone: str = "z1",
    region: str = "r1",
    status: int = UP,
    weight: str | None = None,
) -> Instance:
    meta = None if weight is None else {"weight": weight}
    return Instance(
        region=region, zone=zone, env="dev", appid="app", hostname=host, addrs=list(addrs), status=status,
        metadata=meta,
    )  # fmt: skip


def test_the_first_grpc_address_is_the_endpoint() -> None:
    assert plan.grpc_address(ins("h", "http://10.0.0.1:80", "grpc://10.0.0.2:9000")) == ("10.0.0.2", 9000)
    assert plan.grpc_address(ins("h", "grpc://[::1]:9000")) == ("::1", 9000)
    assert plan.grpc_address(ins("h", "grpc://10.0.0.3:1", "grpc://10.0.0.4:2")) == ("10.0.0.3", 1)


def test_instances_without_a_usable_grpc_address_have_none() -> None:
    for addrs in (
        (),
        ("http://10.0.0.1:80",),
        ("grpc://localhost:9000",),  # a host name: clients accept IP addresses only
        ("grpc://10.0.0.1",),  # no port
        ("grpc://10.0.0.1:0",),
        ("grpc://10.0.0.1:99999",),
        ("grpc://10.0.0.1:x",),
        ("grpc://bad:9000", "grpc://10.0.0.1:9000"),  # the first grpc:// address decides
    ):
        assert plan.grpc_address(ins("h", *addrs)) is None, addrs


def test_waiting_instances_are_no_endpoints() -> None:
    assert plan.endpoint(ins("h", "grpc://10.0.0.1:1", status=WAITING)) is None
    assert plan.endpoint(ins("h", "grpc://10.0.0.1:1")) == plan.EndpointPlan("h", "10.0.0.1", 1, 10)


def test_weights_follow_the_balancers_rule_and_are_capped() -> None:
    def weight(value: str | None) -> int:
        ep = plan.endpoint(ins("h", "grpc://10.0.0.1:1", weight=value))
        assert ep is not None
        return ep.weight

    assert [weight(v) for v in (None, "3", "0", "-1", "x")] == [10, 3, 10, 10, 10]
    assert weight(str(10**12)) == plan.MAX_WEIGHT


def test_zones_group_endpoints_sorted_with_summed_weights() -> None:
    zones = plan.zones(
        [
            ins("b", "grpc://10.0.0.2:1", zone="z2", region="r2", weight="5"),
            ins("a", "grpc://10.0.0.1:1", zone="z2", region="r2", weight="7"),
            ins("c", "grpc://10.0.0.3:1", zone="z1"),
            ins("d", "http://10.0.0.4:1", zone="z3"),  # a zone without endpoints is no locality
        ]
    )
    assert list(zones) == ["z1", "z2"]
    assert [e.hostname for e in zones["z2"].endpoints] == ["a", "b"]
    assert (zones["z2"].region, zones["z2"].weight, zones["z1"].weight) == ("r2", 12, 10)


def test_own_zone_is_priority_0_and_the_others_1() -> None:
    zones = plan.zones([ins(z, f"grpc://10.0.0.{i}:1", zone=z) for i, z in enumerate(("z1", "z2", "z3"))])
    got = {loc.zone.zone: loc.priority for loc in plan.prioritized(zones, "z2")}
    assert got == {"z1": 1, "z2": 0, "z3": 1}


def test_without_own_zone_endpoints_the_others_are_priority_0() -> None:
    zones = plan.zones([ins("a", "grpc://10.0.0.1:1", zone="z2"), ins("b", "grpc://10.0.0.2:1", zone="z3")])
    assert {loc.priority for loc in plan.prioritized(zones, "z1")} == {0}
    assert plan.own_zone(zones, "z1") == ""  # every such client shares one assignment
    assert plan.own_zone(zones, "z2") == "z2"


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from([UP, WAITING])), max_size=8),
    st.sampled_from("abcde"),
)
def test_priorities_are_always_dense_from_0(members: list[tuple[str, int]], client_zone: str) -> None:
    instances = [ins(f"h{i}", f"grpc://10.0.0.{i}:1", zone=z, status=s) for i, (z, s) in enumerate(members)]
    priorities = {loc.priority for loc in plan.prioritized(plan.zones(instances), client_zone)}
    assert priorities in (set(), {0}, {0, 1})
