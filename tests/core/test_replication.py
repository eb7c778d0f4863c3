"""Unit tests of the per-peer replication queue and the peer operation builders."""

from __future__ import annotations

import pytest

from discoverd.core.events import Cancelled, InstancesSet, Registered, Renewed, SetChange, Source
from discoverd.core.replication import (
    CANCEL,
    REGISTER,
    RENEW,
    SET,
    PeerOp,
    PeerQueue,
    Replicable,
    cancel_op,
    fan_out,
    peer_op,
    register_op,
    renew_op,
    set_op,
)
from discoverd.model import Instance


def key(h: str) -> tuple[str, str, str, str]:
    return ("a", "dev", "z", h)


def op(action: str, h: str, tag: str = "") -> PeerOp:
    return PeerOp(action, [("tag", tag)], None if action == SET else key(h))


def drain(q: PeerQueue) -> list[tuple[str, str]]:
    out = []
    while (o := q.pop()) is not None:
        out.append((o.action, o.params[0][1]))
    return out


def test_renews_coalesce_in_place_and_yield_to_a_pending_register() -> None:
    q = PeerQueue()
    q.push(op(RENEW, "h1", "r1"))
    q.push(op(REGISTER, "h2", "g2"))
    q.push(op(RENEW, "h1", "r1-newer"))
    q.push(op(REGISTER, "h3", "g3"))
    q.push(op(RENEW, "h3", "dropped"))
    assert drain(q) == [(RENEW, "r1-newer"), (REGISTER, "g2"), (REGISTER, "g3")]


def test_register_and_cancel_supersede_everything_pending_on_the_instance() -> None:
    q = PeerQueue()
    q.push(op(REGISTER, "h1", "old"))
    q.push(op(SET, "", "s"))
    q.push(op(CANCEL, "h1", "c"))
    q.push(op(REGISTER, "h1", "new"))
    assert drain(q) == [(SET, "s"), (REGISTER, "new")]


def test_bound_drops_oldest_renews_first_then_oldest_ops() -> None:
    q = PeerQueue(limit=3)
    q.push(op(REGISTER, "h1", "g1"))
    q.push(op(RENEW, "h2", "r2"))
    q.push(op(RENEW, "h3", "r3"))
    q.push(op(CANCEL, "h4", "c4"))  # over the limit: the oldest renew goes
    assert q.dropped == 1
    q.push(op(SET, "", "s"))  # again: the other renew
    q.push(op(SET, "", "t"))  # no renew left: the oldest op
    assert q.dropped == 3 and len(q) == 3
    assert drain(q) == [(CANCEL, "c4"), (SET, "s"), (SET, "t")]


def test_push_front_requeues_unless_superseded() -> None:
    q = PeerQueue()
    failed = op(REGISTER, "h1", "first")
    q.push(op(RENEW, "h2", "r"))
    q.push_front(failed)
    assert drain(q) == [(REGISTER, "first"), (RENEW, "r")]
    q.push(op(REGISTER, "h1", "newer"))
    q.push_front(op(RENEW, "h1", "stale"))  # a register of h1 is pending: the renew is moot
    assert drain(q) == [(REGISTER, "newer")]


def test_clear_counts_as_dropped() -> None:
    q = PeerQueue()
    for i in range(5):
        q.push(op(RENEW, f"h{i}"))
    assert q.clear() == 5 and q.dropped == 5 and q.pop() is None


def test_builders_send_what_the_go_peers_expect() -> None:
    ins = Instance(
        region="r",
        zone="z",
        env="dev",
        appid="a",
        hostname="h",
        addrs=["http://x:1", "grpc://x:2"],
        version="v",
        metadata={"w": "1"},
        status=1,
        reg_timestamp=1,
        dirty_timestamp=2,
        latest_timestamp=3,
    )
    reg = dict_multi(register_op(ins, replication=True).params)
    assert reg["addrs"] == ["http://x:1", "grpc://x:2"]  # repeated keys, not comma-joined
    assert reg["replication"] == ["true"] and reg["from_zone"] == ["true"]
    assert reg["metadata"] == ['{"w":"1"}'] and reg["dirty_timestamp"] == ["2"]
    assert dict_multi(renew_op(ins, replication=False).params)["replication"] == ["false"]
    assert dict_multi(cancel_op(ins, replication=True).params)["latest_timestamp"] == ["3"]
    s = dict_multi(
        set_op(
            InstancesSet(
                "a", "dev", "z", "r", (SetChange("h1", 2, None), SetChange("h2", 1, None)), 9, Source.CLIENT
            ),
            replication=True,
        ).params
    )
    assert s["hostname"] == ["h1", "h2"] and s["status"] == ["2", "1"] and "metadata" not in s
    assert (s["region"], s["set_timestamp"], s["replication"]) == (["r"], ["9"], ["true"])
    meta = dict_multi(
        set_op(
            InstancesSet("a", "dev", "z", "", (SetChange("h1", None, {"w": "3"}),), 9, Source.CLIENT),
            replication=False,
        ).params
    )
    assert meta["metadata"] == ['{"w":"3"}'] and "status" not in meta


def dict_multi(params: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in params:
        out.setdefault(k, []).append(v)
    return out


def test_pop_skips_lanes_in_flight_keeping_per_instance_order() -> None:
    from discoverd.core.replication import lane

    q = PeerQueue()
    q.push(op(REGISTER, "h1", "g1"))
    q.push(op(SET, "", "s1"))
    q.push(op(RENEW, "h2", "r2"))
    q.push(op(SET, "", "s2"))
    first = q.pop()
    assert first is not None and first.params[0][1] == "g1"
    busy = {lane(first)}
    q.push(op(CANCEL, "h1", "c1"))  # h1 is in flight: its cancel must wait
    second = q.pop(busy)
    assert second is not None and second.params[0][1] == "s1"
    busy.add(lane(second))
    third = q.pop(busy)
    assert third is not None and third.params[0][1] == "r2"  # not s2: the set lane is busy
    assert q.pop({*busy, lane(third)}) is None
    assert drain(q) == [(SET, "s2"), (CANCEL, "c1")]


def _ins(zone: str = "z") -> Instance:
    return Instance(zone=zone, env="dev", appid="a", hostname="h1", addrs=["http://10.0.0.1:80"])


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Registered(_ins("other"), Source.CLIENT, True), (True, True)),
        (Registered(_ins(), Source.ZONE, True), (True, False)),  # came from another zone: not sent back
        (Registered(_ins(), Source.PEER, True), (False, False)),  # a peer's copy is not sent on
        (Registered(_ins(), Source.NODE, True), (True, True)),
        (Registered(_ins(), Source.REPAIR, False), (False, False)),
        (Registered(_ins(), Source.SYNC, True), (False, False)),
        (Renewed(_ins("z"), Source.CLIENT, 0), (True, True)),  # own zone's instance: every zone hears
        (Renewed(_ins("other"), Source.ZONE, 0), (True, False)),
        (Renewed(_ins(), Source.PEER, -409), (False, False)),
        (Cancelled(_ins("other"), Source.CLIENT), (True, False)),
        (Cancelled(_ins("z"), Source.NODE), (True, True)),
        (InstancesSet("a", "dev", "z", "", (), 1, Source.CLIENT, "set: hostname x not found"), (True, True)),
        (InstancesSet("a", "dev", "z", "", (), 1, Source.ZONE), (True, False)),
    ],
)
def test_fan_out_follows_the_go_rules(event: Replicable, expected: tuple[bool, bool]) -> None:
    assert fan_out(event, "z") == expected


def test_peer_op_reads_the_event() -> None:
    ins = _ins()
    ins.dirty_timestamp, ins.latest_timestamp = 7, 8
    assert peer_op(Registered(ins, Source.CLIENT, True), replication=True).action == REGISTER
    renew = peer_op(Renewed(ins, Source.CLIENT, 0), replication=False)
    assert (renew.action, renew.key, dict(renew.params)["dirty_timestamp"]) == (RENEW, ins.key, "7")
    assert renew.replication is False and dict(renew.params)["replication"] == "false"
    cancel = peer_op(Cancelled(ins, Source.CLIENT), replication=True)
    assert (cancel.action, dict(cancel.params)["latest_timestamp"]) == (CANCEL, "8")
    assert cancel.replication is True and dict(cancel.params)["replication"] == "true"
    assert peer_op(InstancesSet("a", "dev", "z", "", (), 1, Source.CLIENT), replication=True).action == SET
