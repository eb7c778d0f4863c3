"""The incremental decoding of poll answers: reused objects only where nothing changed.

Every answer goes through ``Poller.handle`` (the poll loop's handling of one answer); the lists
must equal a full decode of the same answer, and watchers are told once per changed app only.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from discoverd.client.poller import Poller
from discoverd.client.transport import Answer, NodeTransport
from discoverd.core.backoff import Backoff
from discoverd.core.nodes import NodeList
from discoverd.core.watched_apps import WatchState, decode_info
from discoverd.errors import DiscoverdError
from discoverd.model import Instance


def obj(host: str, *, ts: int = 1, status: int = 1, meta: dict[str, str] | None = None) -> dict[str, Any]:
    ins = Instance(zone="z1", env="e", appid="a", hostname=host, addrs=[f"http://{host}:1"], status=status)
    ins.metadata = {"w": "10"} if meta is None else meta
    ins.dirty_timestamp = ins.latest_timestamp = ins.renew_timestamp = ts
    return ins.to_wire()


def info(latest: int, *objs: dict[str, Any]) -> dict[str, Any]:
    return {"instances": {"z1": list(objs)}, "latest_timestamp": latest}


class Rig:
    """A poller over a fresh state watching ``a`` and ``b``, recording ``on_change``."""

    def __init__(self) -> None:
        self.state = WatchState()
        self.state.add("a")
        self.state.add("b")
        self.changes: list[str] = []
        self.poller = Poller(
            env="e",
            hostname="me",
            nodes=NodeList(["127.0.0.1:1"], "z1", random.Random(1)),
            transport=NodeTransport(request_timeout=1.0),
            state=self.state,
            backoff=Backoff(),
            poll_hold=30.0,
            spawn=asyncio.ensure_future,
            on_change=self.changes.append,
        )

    def feed(self, data: dict[str, Any]) -> list[Instance]:
        """Handle a success answer carrying ``data``; returns ``a``'s list, checked against a full decode."""
        self.poller.handle(Answer({"code": 0, "data": data}))
        view = self.state.apps["a"]
        if "a" in data and data["a"]["latest_timestamp"] != view.fresh:
            raise AssertionError("the view did not take the answer's list")
        return view.instances


def test_unchanged_instances_are_the_same_objects_and_changed_ones_rebuilt() -> None:
    rig = Rig()
    first = rig.feed({"a": info(5, obj("h1"), obj("h2"), obj("h3"))})
    changed = [obj("h1"), obj("h2", ts=2, status=2), obj("h3", meta={"w": "20"})]
    second = rig.feed({"a": info(6, *changed)})
    assert second == decode_info(info(6, *changed))[0]
    assert second[0] is first[0]
    assert second[1] is not first[1] and second[1].status == 2 and second[1].dirty_timestamp == 2
    assert second[2] is not first[2] and second[2].metadata == {"w": "20"}
    assert rig.changes == ["a", "a"]


def test_order_and_membership_follow_the_answer() -> None:
    rig = Rig()
    first = rig.feed({"a": info(5, obj("h1"), obj("h2"))})
    second = rig.feed({"a": info(6, obj("h3"), obj("h2"))})
    assert [i.hostname for i in second] == ["h3", "h2"]
    assert second[1] is first[1]
    assert rig.feed({"a": info(7)}) == []
    assert rig.changes == ["a", "a", "a"]


def test_an_app_with_an_unchanged_latest_timestamp_notifies_no_watcher() -> None:
    rig = Rig()
    first = rig.feed({"a": info(5, obj("h1")), "b": info(3, obj("x"))})
    version = rig.state.apps["a"].version
    assert rig.poller.handle(Answer({"code": 0, "data": {"a": info(5, obj("h1")), "b": info(4)}})) == ["b"]
    assert rig.state.apps["a"].instances is first and rig.state.apps["a"].version == version
    assert rig.changes == ["a", "b", "b"]


def test_an_equal_list_under_a_new_latest_timestamp_notifies_no_watcher() -> None:
    rig = Rig()
    first = rig.feed({"a": info(5, obj("h1"))})
    assert rig.feed({"a": info(6, obj("h1"))}) is first
    assert rig.changes == ["a"]


def test_a_node_switch_or_a_fetch_makes_the_same_latest_timestamp_decode_again() -> None:
    rig = Rig()
    rig.feed({"a": info(5, obj("h1"))})
    rig.state.reset_latest()  # another node: its 5 may hold another list
    assert [i.hostname for i in rig.feed({"a": info(5, obj("h2"))})] == ["h2"]
    fetched, _ = decode_info(info(9, obj("h3")))
    assert rig.state.store("a", fetched, 0)
    assert [i.hostname for i in rig.feed({"a": info(5, obj("h2"))})] == ["h2"]


def test_a_malformed_answer_leaves_the_state_untouched() -> None:
    rig = Rig()
    first = rig.feed({"a": info(5, obj("h1")), "b": info(3, obj("x"))})
    bad = {"a": info(6, obj("h2")), "b": info(4, {"hostname": "y", "status": "up"})}
    with pytest.raises(DiscoverdError):
        rig.poller.handle(Answer({"code": 0, "data": bad}))
    assert rig.state.apps["a"].instances is first and rig.state.apps["a"].latest == 5
    assert rig.changes == ["a", "b"]


def test_not_modified_changes_nothing_and_an_error_code_raises() -> None:
    rig = Rig()
    assert rig.poller.handle(Answer({"code": -304})) == []
    with pytest.raises(DiscoverdError):
        rig.poller.handle(Answer({"code": -500, "message": "boom"}))
    assert rig.changes == [] and not rig.state.apps["a"].known
