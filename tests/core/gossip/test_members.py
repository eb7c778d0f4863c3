"""The member table's rules (spec §1.8–1.9), without sockets or an event loop."""

from __future__ import annotations

import random

import pytest

from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.members import MemberTable, ip_bytes, ip_text
from discoverd.core.gossip.messages import Alive, Dead, NodeState, PushNodeState, Suspect, decode, make_vsn
from discoverd.errors import GossipError

LO = ip_bytes("127.0.0.1")


def table(name: str = "me", **kw: object) -> MemberTable:
    t = MemberTable(GossipConfig.local(**kw), name, random.Random(1))
    t.bootstrap(LO, 7000, b"", now=0.0)
    return t


def alive(node: str, inc: int, port: int = 7001, meta: bytes = b"", vsn: bytes | None = None) -> Alive:
    return Alive(
        incarnation=inc, node=node, addr=LO, port=port, meta=meta, vsn=make_vsn() if vsn is None else vsn
    )


def test_bootstrap_creates_self_at_incarnation_1_and_gossips_it() -> None:
    t = MemberTable(GossipConfig.local(), "me")
    fx = t.bootstrap(LO, 7000, b"m", now=0.0)
    assert t.local.incarnation == 1 and t.local.state == NodeState.ALIVE
    [(name, msg)] = fx.broadcasts
    assert name == "me" and decode(msg) == Alive(
        incarnation=1, node="me", addr=LO, port=7000, meta=b"m", vsn=make_vsn()
    )


def test_new_node_joins_and_only_higher_incarnations_update_it() -> None:
    t = table()
    fx = t.on_alive(alive("a", 1), 1.0)
    assert [e.kind for e in fx.events] == ["join"] and fx.broadcasts
    assert not t.on_alive(alive("a", 1, meta=b"x"), 2.0).broadcasts  # same incarnation: ignored
    fx = t.on_alive(alive("a", 2, meta=b"x"), 2.0)
    assert [e.kind for e in fx.events] == ["update"] and t.nodes["a"].meta == b"x"


def test_conflicting_address_is_ignored_unless_the_node_left() -> None:
    t = table()
    t.on_alive(alive("a", 1), 1.0)
    assert not t.on_alive(alive("a", 5, port=9999), 2.0).broadcasts
    assert t.nodes["a"].port == 7001
    t.on_dead(Dead(incarnation=1, node="a", from_="a"), 3.0)
    assert t.nodes["a"].state == NodeState.LEFT
    fx = t.on_alive(alive("a", 1, port=9999), 4.0)  # came back elsewhere after leaving: reclaimed
    assert [e.kind for e in fx.events] == ["join"] and t.nodes["a"].port == 9999


@pytest.mark.parametrize(
    "vsn", [b"\x01", b"\x01\x05\x02\x00\x00", bytes([0, 5, 2, 0, 0, 0]), bytes([5, 1, 2, 0, 0, 0])]
)
def test_alive_with_bad_vsn_is_dropped(vsn: bytes) -> None:
    t = table()
    assert not t.on_alive(alive("a", 1, vsn=vsn), 1.0).broadcasts
    assert "a" not in t.nodes


def test_suspect_starts_timer_and_expiry_declares_dead() -> None:
    t = table()
    for n in "abc":
        t.on_alive(alive(n, 1, port=7000 + ord(n)), 0.0)
    fx = t.on_suspect(Suspect(incarnation=1, node="a", from_="b"), 10.0)
    assert t.nodes["a"].state == NodeState.SUSPECT and fx.broadcasts
    deadline = t.next_deadline()
    assert deadline is not None and deadline > 10.0
    assert not t.expire_suspicions(deadline - 0.01).events
    fx = t.expire_suspicions(deadline)
    assert [e.kind for e in fx.events] == ["leave"]
    assert t.nodes["a"].state is NodeState.DEAD  # type: ignore[comparison-overlap]
    assert decode(fx.broadcasts[0][1]) == Dead(incarnation=1, node="a", from_="me")


def test_confirmations_shorten_suspicion_and_are_regossiped_once() -> None:
    t = table()
    for n in "abcd":
        t.on_alive(alive(n, 1, port=7000 + ord(n)), 0.0)
    t.on_suspect(Suspect(incarnation=1, node="a", from_="b"), 0.0)
    first = t.next_deadline()
    assert t.on_suspect(Suspect(incarnation=1, node="a", from_="c"), 0.1).broadcasts
    assert not t.on_suspect(Suspect(incarnation=1, node="a", from_="c"), 0.2).broadcasts
    second = t.next_deadline()
    assert first is not None and second is not None and second < first


def test_suspect_or_dead_about_self_is_refuted() -> None:
    t = table()
    fx = t.on_suspect(Suspect(incarnation=7, node="me", from_="x"), 1.0)
    assert fx.refuted == 1 and t.local.incarnation == 8 and t.local.state == NodeState.ALIVE
    refutation = decode(fx.broadcasts[0][1])
    assert isinstance(refutation, Alive) and refutation.incarnation == 8
    fx = t.on_dead(Dead(incarnation=8, node="me", from_="x"), 2.0)
    assert fx.refuted == 1 and t.local.incarnation == 9


def test_alive_about_self_with_other_meta_is_refuted_but_an_echo_is_not() -> None:
    t = table()
    echo = Alive(incarnation=1, node="me", addr=LO, port=7000, meta=b"", vsn=t.vsn())
    assert not t.on_alive(echo, 1.0).broadcasts
    fx = t.on_alive(Alive(incarnation=1, node="me", addr=LO, port=7000, meta=b"impostor", vsn=t.vsn()), 1.0)
    assert fx.refuted == 1 and t.local.incarnation == 2


def test_leave_is_a_dead_from_self_and_peers_record_left() -> None:
    t = table()
    fx = t.leave(1.0)
    assert decode(fx.broadcasts[0][1]) == Dead(incarnation=1, node="me", from_="me")
    peer = table("peer")
    peer.on_alive(Alive(incarnation=1, node="me", addr=LO, port=7000, vsn=make_vsn()), 0.0)
    fx = peer.on_dead(Dead(incarnation=1, node="me", from_="me"), 1.0)
    assert peer.nodes["me"].state == NodeState.LEFT and [e.kind for e in fx.events] == ["leave"]


def test_older_incarnations_are_ignored() -> None:
    t = table()
    t.on_alive(alive("a", 5), 0.0)
    assert not t.on_suspect(Suspect(incarnation=4, node="a", from_="b"), 1.0).broadcasts
    assert not t.on_dead(Dead(incarnation=4, node="a", from_="b"), 1.0).broadcasts
    assert t.nodes["a"].state == NodeState.ALIVE


def test_merge_remote_turns_dead_into_suspect_and_left_into_left() -> None:
    t = table()
    t.on_alive(alive("a", 1), 0.0)
    t.on_alive(alive("b", 1, port=7002), 0.0)
    remote = [
        PushNodeState(
            name="a", addr=LO, port=7001, meta=b"", incarnation=1, state=NodeState.DEAD, vsn=make_vsn()
        ),
        PushNodeState(
            name="b", addr=LO, port=7002, meta=b"", incarnation=1, state=NodeState.LEFT, vsn=make_vsn()
        ),
        PushNodeState(
            name="c", addr=LO, port=7003, meta=b"", incarnation=3, state=NodeState.ALIVE, vsn=make_vsn()
        ),
    ]
    t.merge_remote(remote, 1.0)
    assert t.nodes["a"].state == NodeState.SUSPECT
    assert t.nodes["b"].state == NodeState.LEFT
    assert t.nodes["c"].state == NodeState.ALIVE and t.nodes["c"].incarnation == 3


def test_verify_protocol_rejects_out_of_range_versions() -> None:
    t = table()
    ok = PushNodeState(name="a", addr=LO, port=1, meta=b"", incarnation=1, state=0, vsn=make_vsn(4))
    t.verify_protocol([ok])
    bad = PushNodeState(
        name="b", addr=LO, port=2, meta=b"", incarnation=1, state=0, vsn=bytes([3, 5, 3, 0, 0, 0])
    )
    with pytest.raises(GossipError, match="incompatible"):
        t.verify_protocol([bad])  # b needs ≥ 3 but we speak 2


def test_probe_order_visits_everyone_and_forgets_long_dead_nodes() -> None:
    t = table(gossip_to_the_dead_time=5.0)
    for n in "abc":
        t.on_alive(alive(n, 1, port=7000 + ord(n)), 0.0)
    seen = {t.next_probe_target(0.0).name for _ in range(3)}  # type: ignore[union-attr]
    assert seen == {"a", "b", "c"}
    t.on_dead(Dead(incarnation=1, node="c", from_="a"), 1.0)
    targets = {t.next_probe_target(10.0).name for _ in range(4)}  # type: ignore[union-attr]
    assert "c" not in targets and "c" not in t.nodes


def test_ip_text_handles_v4_mapped_and_junk() -> None:
    assert ip_text(LO) == "127.0.0.1"
    assert ip_text(bytes(10) + b"\xff\xff" + LO) == "127.0.0.1"
    assert ip_text(b"xyz") == ""
