"""Unit tests of the client's node list, backoff and watch state (no event loop)."""

from __future__ import annotations

import random

import pytest

from discoverd.core.backoff import Backoff
from discoverd.core.nodes import NodeList
from discoverd.core.watched_apps import WatchState, decode_info
from discoverd.errors import BadRequest
from discoverd.model import Instance


def infra(host: str, zone: str, addr: str) -> Instance:
    return Instance(zone=zone, env="dev", appid="infra.discovery", hostname=host, addrs=[f"http://{addr}"])


def test_learn_puts_own_zone_first_and_replaces_the_list() -> None:
    nodes = NodeList(["seed:1"], "z1", random.Random(1))
    assert nodes.learn([infra("a", "z2", "a:1"), infra("b", "z1", "b:1"), infra("c", "z1", "c:1")])
    assert sorted(nodes.nodes[:2]) == ["b:1", "c:1"] and nodes.nodes[2:] == ["a:1", "seed:1"]
    assert nodes.learn([infra("b", "z1", "b:1")])  # shrinking lists are applied (unlike Go)
    assert nodes.nodes == ["b:1", "seed:1"]  # seeds stay as the last resort
    assert not nodes.learn([infra("b", "z1", "b:1")])
    assert not nodes.learn([])  # an empty list keeps what we have


def test_current_node_stays_when_still_listed() -> None:
    nodes = NodeList(["a:1", "b:1"], "z1", random.Random(3))
    current = nodes.current
    nodes.learn([infra("x", "z1", "x:1"), infra("cur", "z1", current)])
    assert nodes.current == current


def test_switch_cycles() -> None:
    nodes = NodeList(["a:1", "b:1", "c:1"], "z", random.Random(0))
    seen = {nodes.current, nodes.switch(), nodes.switch()}
    assert seen == {"a:1", "b:1", "c:1"}
    with pytest.raises(ValueError, match="at least one"):
        NodeList([], "z")


def test_backoff_is_capped_and_jittered() -> None:
    policy = Backoff(base=0.1, cap=2.0, rng=random.Random(5).random)
    delays = [policy.delay(n) for n in range(40)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert max(delays[:3]) <= 0.4
    assert len(set(delays)) > 30


def info(*hosts: str, latest: int = 5, zone: str = "z1", status: int = 1) -> dict[str, object]:
    return {
        "instances": {
            zone: [
                Instance(zone=zone, env="e", appid="a", hostname=h, status=status).to_wire() for h in hosts
            ]
        },
        "latest_timestamp": latest,
    }


def test_apply_updates_latest_even_for_empty_apps() -> None:
    w = WatchState()
    w.add("a")
    assert w.apply({"a": info("h1", latest=5)}) == ["a"]
    assert w.apps["a"].latest == 5
    assert w.apply({"a": {"instances": {"z1": []}, "latest_timestamp": 9}}) == ["a"]
    assert w.apps["a"].latest == 9  # kratos #494: the next poll waits instead of spinning
    assert w.apps["a"].instances == []


def test_apply_ignores_unwatched_and_unchanged() -> None:
    w = WatchState()
    w.add("a")
    w.apply({"a": info("h1", latest=5)})
    version = w.apps["a"].version
    assert w.apply({"a": info("h1", latest=6), "other": info("x")}) == []
    assert w.apps["a"].version == version and w.apps["a"].latest == 6
    assert "other" not in w.apps


def test_reset_latest_keeps_the_cache() -> None:
    w = WatchState()
    w.add("a")
    w.apply({"a": info("h1", latest=5)})
    w.reset_latest()
    assert w.query() == [("a", 0)]
    assert [i.hostname for i in w.apps["a"].instances] == ["h1"]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"a": {"instances": {}, "latest_timestamp": 0}},
        {"a": {"instances": [], "latest_timestamp": 3}},
        {"a": {"instances": {"z": {}}, "latest_timestamp": 3}},
        {"a": {"instances": {"z": [{"addrs": "x"}]}, "latest_timestamp": 3}},
        {"a": "nope"},
    ],
)
def test_malformed_answers_raise_and_leave_the_cache(bad: object) -> None:
    w = WatchState()
    w.add("a")
    w.apply({"a": info("h1", latest=5)})
    with pytest.raises(BadRequest):
        w.apply(bad)
    assert [i.hostname for i in w.apps["a"].instances] == ["h1"]
    assert w.apps["a"].latest == 5


def test_decode_info_flattens_zones() -> None:
    instances, latest = decode_info(
        {"instances": {"z1": [info("a")["instances"]["z1"][0]], "z2": []}, "latest_timestamp": 7}  # type: ignore[index]
    )
    assert [i.hostname for i in instances] == ["a"] and latest == 7


def test_scheduler_is_decoded_leniently_and_kept_per_app() -> None:
    from discoverd.core.watched_apps import decode_scheduler

    good = {
        "instances": {},
        "latest_timestamp": 5,
        "scheduler": {
            "clients": {"sh001": {"zones": {"sh001": {"weight": 1}, "sh002": {"weight": 3}}}},
            "remark": "",
        },
    }
    assert decode_scheduler(good) == {"sh001": {"sh001": 1, "sh002": 3}}
    old_shape = {"scheduler": [{"src": "sh001", "dst": {"sh001": 3}}]}
    for bad in (old_shape, {"scheduler": {"clients": {"z": {"zones": {"a": {"weight": "1"}}}}}}, {}, None):
        assert decode_scheduler(bad) is None
    w = WatchState()
    w.add("a")
    w.apply({"a": {**info("h1"), "scheduler": good["scheduler"]}})
    assert w.apps["a"].scheduler == {"sh001": {"sh001": 1, "sh002": 3}}


def test_zone_affinity_follows_a_replaced_scheduler() -> None:
    import collections

    from discoverd.core.balancing import WeightedRandom, ZoneAffinity

    items = [
        Instance(zone=z, env="e", appid="a", hostname=f"{z}-{i}")
        for z in ("sh001", "sh002")
        for i in range(2)
    ]
    bal = ZoneAffinity(WeightedRandom(rng=random.Random(3)), "sh001", rng=random.Random(4))
    assert {bal.pick(items).zone for _ in range(50)} == {"sh001"}
    bal.set_scheduler({"sh001": 1, "sh002": 3})
    zones = collections.Counter(bal.pick(items).zone for _ in range(4000))
    assert abs(zones["sh002"] / 4000 - 0.75) < 0.03
