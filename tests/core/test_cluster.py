"""Unit tests of peer admission (core/cluster.py): who counts as a peer, arrival order, the caps,
removal and re-admission, and the cost per registration (no event loop, no I/O)."""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from discoverd.core.cluster import (
    CappedOrder,
    PeerAdmission,
    counts_as_peer,
    desired_peers,
    forwardable,
)
from discoverd.core.events import Cancelled, Evicted, Registered, Renewed, Source
from discoverd.model import INFRA_APPID, Instance

ME = "10.0.0.1:7171"


def node(host: str, zone: str = "z1", *addrs: str, env: str = "dev", appid: str = INFRA_APPID) -> Instance:
    return Instance(zone=zone, env=env, appid=appid, hostname=host, addrs=[f"http://{a}" for a in addrs])


def admission(cap: int = 3, zones_cap: int = 2, secret: bool = False, **extra: object) -> PeerAdmission:
    config: dict[str, object] = {"nodes": (ME, "10.0.0.9:7171"), "zones": {"zc": ("10.9.0.1:7171",)}}
    config.update(extra)
    return PeerAdmission(
        me=ME,
        zone="z1",
        env="dev",
        max_per_zone=cap,
        max_zones=zones_cap,
        secret=secret,
        **config,  # type: ignore[arg-type]
    )


def own(a: PeerAdmission) -> list[str]:
    return list(a.peers().own)


def zones(a: PeerAdmission) -> dict[str, list[str]]:
    return a.peers().zone_map()


# -- CappedOrder -------------------------------------------------------------------------------------


def test_capped_order_admits_the_first_arrivals_and_promotes_the_oldest_waiting() -> None:
    order = CappedOrder(2)
    assert [order.add(k) for k in "abcd"] == [True, True, False, False]
    assert order.remove("c") is False  # a waiting key leaves: nothing admitted moved
    assert order.remove("a") is True
    assert list(order.admitted) == ["b", "d"] and not order.waiting
    assert order.remove("d") is True and list(order.admitted) == ["b"] and len(order) == 1


# -- order and caps ----------------------------------------------------------------------------------


def test_configured_peers_first_then_registrations_in_arrival_order_without_me() -> None:
    a = admission(cap=10)
    assert own(a) == ["10.0.0.9:7171"] and zones(a) == {"zc": ["10.9.0.1:7171"]}
    assert a.registered(node("B", "z1", "10.0.0.3:7171"), Source.PEER).changed
    assert a.registered(node("A", "z1", "10.0.0.2:7171"), Source.PEER).changed
    assert not a.registered(node("self", "z1", ME), Source.NODE).changed  # this node itself
    assert not a.registered(node("C9", "z1", "10.0.0.9:7171"), Source.PEER).changed  # configured
    assert a.registered(node("Z", "z2", "10.2.0.1:7171"), Source.ZONE).changed
    assert a.registered(node("Y", "zc", "10.9.0.2:7171"), Source.ZONE).changed
    assert own(a) == ["10.0.0.9:7171", "10.0.0.3:7171", "10.0.0.2:7171"]
    assert zones(a) == {"z2": ["10.2.0.1:7171"], "zc": ["10.9.0.1:7171", "10.9.0.2:7171"]}
    assert [z for z, _ in a.peers().zones] == ["z2", "zc"]  # zones by name


def test_caps_bound_registered_peers_configured_ones_come_on_top() -> None:
    a = admission(cap=2, zones_cap=2)
    for i in range(10):
        a.registered(node(f"o{i}", "z1", f"10.0.1.{i}:1"), Source.PEER)
        a.registered(node(f"f{i}", f"fake{i}", f"10.1.{i}.1:1"), Source.ZONE)
        a.registered(node(f"c{i}", "zc", f"10.9.1.{i}:1"), Source.ZONE)
    assert own(a) == ["10.0.0.9:7171", "10.0.1.0:1", "10.0.1.1:1"]
    assert zones(a) == {
        "fake0": ["10.1.0.1:1"],
        "fake1": ["10.1.1.1:1"],
        "zc": ["10.9.0.1:7171", "10.9.1.0:1", "10.9.1.1:1"],  # configured zone: not in the zone cap
    }
    assert a.ignored == 8 + 8 + 8


def test_a_zone_beyond_the_zone_cap_keeps_its_nodes_waiting() -> None:
    a = admission(cap=2, zones_cap=1)
    a.registered(node("a", "z2", "10.2.0.1:1"), Source.ZONE)
    done = a.registered(node("b", "z3", "10.3.0.1:1"), Source.ZONE)
    assert not done.changed and done.ignored == 1 and done.example == "z3/10.3.0.1:1"
    assert not a.registered(node("c", "z3", "10.3.0.2:1"), Source.ZONE).changed
    assert a.removed(node("a", "z2")).changed  # z2 leaves: z3 is admitted with its first two nodes
    assert zones(a) == {"z3": ["10.3.0.1:1", "10.3.0.2:1"], "zc": ["10.9.0.1:7171"]}


def test_removal_frees_a_slot_for_the_oldest_waiting_and_a_returning_node_queues_again() -> None:
    a = admission(cap=2)
    for h in "abcd":
        a.registered(node(h, "z1", f"{h}:1"), Source.PEER)
    assert own(a)[1:] == ["a:1", "b:1"]
    assert a.removed(node("a", "z1")).changed
    assert own(a)[1:] == ["b:1", "c:1"]  # the oldest waiting one
    assert not a.removed(node("d", "z1")).changed  # waiting: nothing admitted moved
    assert not a.registered(node("a", "z1", "a:1"), Source.PEER).changed  # back, at the end: waits
    assert not a.registered(node("e", "z1", "e:1"), Source.PEER).changed
    assert a.removed(node("b", "z1")).changed
    assert own(a)[1:] == ["c:1", "a:1"]


def test_only_changes_of_the_admitted_set_report_changed() -> None:
    a = admission(cap=1)
    first = node("a", "z1", "a:1")
    assert a.registered(first, Source.PEER).changed
    assert not a.registered(node("a", "z1", "a:1"), Source.PEER).changed  # re-registered, same address
    assert not a.registered(node("b", "z1", "b:1"), Source.PEER).changed  # beyond the cap
    assert a.registered(node("a", "z1", "a:2"), Source.PEER).changed  # moved: now behind b
    assert own(a)[1:] == ["b:1"]
    assert not a.removed(node("x", "z1")).changed  # unknown
    assert a.apply(Registered(node("a", "z1", "a:1", appid="other"), Source.CLIENT, True)).changed is False
    assert a.apply(Registered(node("q", "z1", "q:1", env="prod"), Source.PEER, True)).changed is False


def test_an_address_offered_twice_stays_until_its_last_instance_leaves() -> None:
    a = admission(cap=5)
    a.registered(node("a", "z1", "s:1"), Source.PEER)
    assert not a.registered(node("b", "z1", "s:1", "t:1"), Source.PEER).ignored
    assert own(a)[1:] == ["s:1", "t:1"]
    assert a.apply(Cancelled(node("b", "z1", "s:1", "t:1"), Source.CLIENT)).changed  # t:1 goes
    assert own(a)[1:] == ["s:1"]
    assert a.apply(Evicted((node("a", "z1", "s:1"), node("zz", "z1")))).changed
    assert own(a) == ["10.0.0.9:7171"]


def test_desired_peers_is_the_same_computation_from_scratch() -> None:
    infra = [node(f"h{i}", f"z{i % 3 + 1}", f"10.0.{i}.1:1") for i in range(9)]
    peers = desired_peers(me=ME, zone="z1", nodes=(ME,), zones={}, infra=infra, max_per_zone=2, max_zones=1)
    assert peers.own == ("10.0.0.1:1", "10.0.3.1:1")
    assert peers.zones == (("z2", ("10.0.1.1:1", "10.0.4.1:1")),)


# -- who counts ------------------------------------------------------------------------------------


def test_with_a_secret_only_registrations_authenticated_as_peers_count() -> None:
    assert all(counts_as_peer(s, secret=False) for s in Source)
    assert [s for s in Source if not counts_as_peer(s, secret=True)] == [Source.CLIENT]
    a = admission(secret=True)
    done = a.registered(node("fake", "z1", "6.6.6.6:1"), Source.CLIENT)
    assert not done.changed and done.untrusted and done.example == "z1/fake" and a.untrusted == 1
    assert a.registered(node("B", "z1", "10.0.0.2:1"), Source.PEER).changed
    assert a.registered(node("Z", "z2", "10.2.0.2:1"), Source.ZONE).changed
    assert own(a)[1:] == ["10.0.0.2:1"] and "z2" in zones(a)
    # a client re-registering a peer's hostname takes its place in the registry and in the peer set
    assert a.registered(node("B", "z1", "6.6.6.6:2"), Source.CLIENT).changed
    assert own(a) == ["10.0.0.9:7171"]


def test_a_registration_that_lost_to_the_stored_copy_changes_nothing() -> None:
    a = admission(secret=True)
    stored = node("B", "z1", "10.0.0.2:1")
    a.registered(stored, Source.PEER)
    # the registry answers an older incoming copy with the stored one: the peer stays
    assert a.apply(Registered(stored, Source.CLIENT, False)) == (False, 0, False, "")
    assert own(a)[1:] == ["10.0.0.2:1"] and a.untrusted == 0


def test_loaded_counts_every_copy_once_with_the_load_source() -> None:
    a = admission(secret=True, cap=1)
    first = node("B", "z1", "10.0.0.2:1")
    a.registered(first, Source.PEER)
    app = [first, node("C", "z1", "10.0.0.3:1"), node("D", "z2", "10.2.0.1:1")]
    done = a.loaded(app, Source.SYNC)
    assert done.changed and done.ignored == 1 and done.example == "z1/10.0.0.3:1"
    assert not a.loaded(app, Source.SNAPSHOT).changed  # the same copies again: nothing
    assert own(a)[1:] == ["10.0.0.2:1"] and list(zones(a)) == ["z2", "zc"]


def test_a_clients_infra_write_is_not_forwarded_with_a_secret() -> None:
    fake = node("fake", "z1", "6.6.6.6:1")
    assert forwardable(Registered(fake, Source.CLIENT, True), secret=False)
    assert not forwardable(Registered(fake, Source.CLIENT, True), secret=True)
    assert not forwardable(Renewed(fake, Source.CLIENT, 0), secret=True)
    assert forwardable(Registered(fake, Source.NODE, True), secret=True)
    assert forwardable(Registered(node("x", "z1", appid="svc"), Source.CLIENT, True), secret=True)


# -- cost ------------------------------------------------------------------------------------------


def test_cost_per_registration_does_not_grow_with_the_number_registered() -> None:
    a = admission(cap=16, zones_cap=16)
    n = 20_000
    nodes = [
        node(f"f{i}", f"fake{i % 5000}" if i % 2 else "z1", f"127.0.{i // 250}.{i % 250}:1") for i in range(n)
    ]
    started = time.perf_counter()
    for ins in nodes:
        a.registered(ins, Source.CLIENT)
    for ins in nodes:
        a.removed(ins)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed:.2f} s for {n} registrations and removals"
    assert own(a) == ["10.0.0.9:7171"] and list(zones(a)) == ["zc"]


# -- against a naive model -------------------------------------------------------------------------

OPS = st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 5), st.integers(0, 3)), max_size=60)


def model_peers(arrivals: list[tuple[str, str]], cap: int, zones_cap: int) -> dict[str, list[str]]:
    """From scratch: per zone the first ``cap`` addresses present, in arrival order; other zones in
    the order they last became non-empty, the first ``zones_cap`` of them."""
    per_zone: dict[str, list[str]] = {}
    for zone, addr in arrivals:
        per_zone.setdefault(zone, []).append(addr)
    out = {z: addrs[:cap] for z, addrs in per_zone.items()}
    others = [z for z in out if z != "z0"]
    return {z: a for z, a in out.items() if z == "z0" or z in others[:zones_cap]}


@settings(max_examples=500)
@given(OPS, st.integers(1, 3), st.integers(1, 2))
@example([(True, 0, 0, 0), (True, 0, 1, 1), (True, 0, 2, 2), (False, 0, 0, 0)], 1, 1)  # the oldest waits
@example([(True, 2, 2, 1), (True, 1, 0, 0), (True, 2, 2, 0)], 1, 1)  # a zone moving keeps its place
def test_incremental_admission_matches_a_model_recomputed_from_scratch(
    ops: list[tuple[bool, int, int, int]], cap: int, zones_cap: int
) -> None:
    a = PeerAdmission(
        me="me:0", zone="z0", env="dev", nodes=(), zones={}, max_per_zone=cap, max_zones=zones_cap
    )
    offers: dict[tuple[str, str], str] = {}
    refs: dict[tuple[str, str], int] = {}
    arrivals: list[tuple[str, str]] = []  # (zone, addr) present, in arrival order
    zone_arrivals: list[str] = []
    for register, z, h, ad in ops:
        zone, host, addr = f"z{z}", f"h{h}", f"a{ad}:1"
        before = a.peers()
        old = offers.pop((zone, host), None)
        if register and old == addr:
            offers[(zone, host)] = addr  # re-registered as it was: keeps its place
        elif old is not None:
            refs[(zone, old)] -= 1
            if not refs[(zone, old)]:
                del refs[(zone, old)]
                arrivals.remove((zone, old))
        if register and old != addr:
            offers[(zone, host)] = addr
            refs[(zone, addr)] = refs.get((zone, addr), 0) + 1
            if refs[(zone, addr)] == 1:
                arrivals.append((zone, addr))
        done = a.registered(node(host, zone, addr), Source.PEER) if register else a.removed(node(host, zone))
        present = {zn for zn, _ in arrivals}
        zone_arrivals = [zn for zn in zone_arrivals if zn in present]
        zone_arrivals += sorted(present - set(zone_arrivals))  # at most one new zone per step
        ordered = sorted(arrivals, key=lambda p: zone_arrivals.index(p[0]))
        expected = model_peers(ordered, cap, zones_cap)
        peers = a.peers()
        assert list(peers.own) == expected.pop("z0", [])
        assert peers.zone_map() == expected
        assert done.changed == (peers != before)
