"""Unit tests of the registry events: sources, changed apps, the peer set (no event loop)."""

from __future__ import annotations

import dataclasses

import pytest

from discoverd.core.cluster import desired_peers, peers_changed
from discoverd.core.events import (
    CONTENT,
    SOURCE_BY_FLAGS,
    Cancelled,
    Evicted,
    GuardChanged,
    InstancesSet,
    Loaded,
    PeersChanged,
    PeerSet,
    Registered,
    Renewed,
    Source,
    changed_apps,
)
from discoverd.core.guard import Guard
from discoverd.model import INFRA_APPID, Instance


def ins(appid: str = "a", host: str = "h1", zone: str = "z1", addr: str = "") -> Instance:
    addrs = [f"http://{addr}"] if addr else []
    return Instance(zone=zone, env="dev", appid=appid, hostname=host, addrs=addrs)


@pytest.mark.parametrize(
    ("replication", "from_zone", "source"),
    [
        (False, False, Source.CLIENT),
        (False, True, Source.ZONE),
        (True, False, Source.PEER),
        (True, True, Source.PEER),
    ],
)
def test_source_of_a_request(replication: bool, from_zone: bool, source: Source) -> None:
    assert SOURCE_BY_FLAGS[replication][from_zone] is source


def test_changed_apps_names_what_moved() -> None:
    assert changed_apps(Registered(ins(), Source.CLIENT, True)) == (("a", "dev"),)
    assert changed_apps(Cancelled(ins("b"), Source.PEER)) == (("b", "dev"),)
    assert changed_apps(Renewed(ins(), Source.CLIENT, 0)) == ()  # a lease, not content
    assert changed_apps(InstancesSet("a", "dev", "z1", "", (), 1, Source.CLIENT)) == (("a", "dev"),)
    assert changed_apps(InstancesSet("a", "dev", "z1", "", (), 1, Source.CLIENT, "refused")) == ()
    assert changed_apps(Evicted((ins("a"), ins("b"), ins("a", "h2")))) == (("a", "dev"), ("b", "dev"))
    assert changed_apps(Loaded(frozenset({("b", "x"), ("a", "y")}), 2, Source.SYNC)) == (
        ("a", "y"),
        ("b", "x"),
    )
    assert changed_apps(GuardChanged(True, 0, 1, 2)) == ()
    assert Renewed not in CONTENT and Registered in CONTENT


def test_events_are_immutable() -> None:
    event = Registered(ins(), Source.CLIENT, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.new = False  # type: ignore[misc]


def test_guard_end_window_reports_only_transitions() -> None:
    g = Guard(expected=10)
    first = g.end_window()  # 0 renews < 8 needed: on
    assert first == GuardChanged(True, 0, 8, 10)
    assert g.end_window() is None  # still on: no event
    for _ in range(9):
        g.renewed()
    assert g.end_window() == GuardChanged(False, 9, 8, 10)


def test_desired_peers_unites_config_and_infra_without_me() -> None:
    infra = [
        ins(INFRA_APPID, "A", "z1", "10.0.0.1:7171"),
        ins(INFRA_APPID, "B", "z1", "10.0.0.2:7171"),
        ins(INFRA_APPID, "C", "z2", "10.0.1.1:7171"),
    ]
    peers = desired_peers(
        me="10.0.0.1:7171",
        zone="z1",
        nodes=("10.0.0.1:7171", "10.0.0.9:7171"),
        zones={"z3": ("10.0.3.1:7171",), "z4": ()},
        infra=infra,
    )
    assert peers.own == ("10.0.0.9:7171", "10.0.0.2:7171")
    assert peers.zones == (("z2", ("10.0.1.1:7171",)), ("z3", ("10.0.3.1:7171",)))
    assert peers.zone_map() == {"z2": ["10.0.1.1:7171"], "z3": ["10.0.3.1:7171"]}


def test_peers_changed_only_when_the_set_moved() -> None:
    one = PeerSet(("a:1",), ())
    assert peers_changed(None, one) == PeersChanged(one)
    assert peers_changed(one, PeerSet(("a:1",), ())) is None
    assert peers_changed(one, PeerSet(("a:1", "b:1"), ())) == PeersChanged(PeerSet(("a:1", "b:1"), ()))
