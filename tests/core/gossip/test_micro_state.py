"""go-micro Merge/Remove (intended semantics) and the per-node registry state MicroState."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip.micro import (
    ACTION_CREATE,
    ACTION_DELETE,
    ACTION_SYNC,
    ACTION_UPDATE,
    Endpoint,
    MicroNode,
    Service,
    Update,
    service_to_json,
)
from discoverd.core.gossip.micro_state import (
    DEFAULT_LEARNED_TTL_NS,
    DEFAULT_MAX_TTL_NS,
    MicroState,
    merge,
    remove,
)
from discoverd.model import Action, Event, Instance

S = 1_000_000_000
NOW = 1_700_000_000 * S


def svc(version: str, *nodes: str, name: str = "app", meta: dict[str, str] | None = None) -> Service:
    """Service ``name``/``version`` with nodes ``id`` or ``id=metavalue`` (node metadata {"m": value})."""
    built = []
    for spec in nodes:
        node_id, _, value = spec.partition("=")
        built.append(MicroNode(node_id, f"{node_id}:80", {"m": value} if value else {}))
    return Service(name, version, meta or {}, [], built)


def create(s: Service, expires: int = 0) -> Update:
    return Update(expires=expires, action=ACTION_CREATE, data=service_to_json(s))


def delete(s: Service) -> Update:
    return Update(action=ACTION_DELETE, data=service_to_json(s))


def summary(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.action.value, e.instance.hostname, e.instance.version) for e in events]


def hosts(state: MicroState, name: str = "app") -> list[tuple[str, str]]:
    return [(i.version, i.hostname) for i in state.instances(name)]


# --- merge / remove -----------------------------------------------------------------------------------------


def test_merge_into_nothing_appends() -> None:
    assert merge([], svc("v1", "a")) == [svc("v1", "a")]


def test_merge_v1_into_v1_v2_keeps_v2() -> None:
    old = [svc("v1", "a", "b", meta={"old": "1"}), svc("v2", "c")]
    merged = merge(old, svc("v1", "b=new", "d", meta={"new": "1"}))
    assert merged == [svc("v1", "b=new", "d", "a", meta={"new": "1"}), svc("v2", "c")]


def test_merge_new_version_is_appended_and_others_kept() -> None:
    old = [svc("v1", "a"), svc("v2", "b")]
    assert merge(old, svc("v3", "c")) == [svc("v1", "a"), svc("v2", "b"), svc("v3", "c")]


def test_merge_takes_endpoints_from_new_and_deduplicates_new_nodes() -> None:
    new = Service(
        "app", "v1", {}, [Endpoint("E")], [MicroNode("a", "1"), MicroNode("b"), MicroNode("a", "2")]
    )
    [got] = merge([Service("app", "v1", {}, [Endpoint("Old")], [MicroNode("c")])], new)
    assert got.endpoints == [Endpoint("E")]
    assert got.nodes == [MicroNode("a", "2"), MicroNode("b"), MicroNode("c")]


def test_merge_and_remove_never_mutate_their_arguments() -> None:
    old = [svc("v1", "a", "b"), svc("v2", "c")]
    new = svc("v1", "a=x", "d")
    before = copy.deepcopy((old, new))
    merge(old, new)
    remove(old, svc("v1", "a", "b"))
    remove(old, svc("v2", "c"))
    assert (old, new) == before


def test_remove_drops_nodes_of_the_same_version_only() -> None:
    old = [svc("v1", "a", "b"), svc("v2", "a")]
    assert remove(old, svc("v1", "a")) == [svc("v1", "b"), svc("v2", "a")]
    assert remove(old, svc("v3", "a")) == old


def test_remove_drops_a_version_left_without_nodes() -> None:
    old = [svc("v1", "a"), svc("v2", "b")]
    assert remove(old, svc("v1", "a", "ghost")) == [svc("v2", "b")]
    assert remove([svc("v1")], svc("v1")) == []


# --- MicroState: create / delete / events -------------------------------------------------------------------


def test_create_and_delete_emit_events_and_update_reads() -> None:
    st_ = MicroState()
    assert summary(st_.apply(create(svc("v1", "a", "b")), NOW)) == [
        ("create", "a", "v1"),
        ("create", "b", "v1"),
    ]
    assert st_.names() == ["app"]
    assert st_.services("app") == [svc("v1", "a", "b")]
    [ins, _] = st_.instances("app")
    assert (ins.appid, ins.addrs, ins.metadata) == ("app", ["a:80"], {})
    assert summary(st_.apply(delete(svc("v1", "a")), NOW)) == [("delete", "a", "v1")]
    assert summary(st_.apply(delete(svc("v1", "b")), NOW)) == [("delete", "b", "v1")]
    assert (st_.names(), st_.services("app"), st_.instances("app")) == ([], [], [])
    assert st_.apply(delete(svc("v1", "b")), NOW) == []
    assert st_.rejected == 0


def test_identical_create_is_silent_and_changed_node_is_an_update() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a", "b")), NOW)
    assert st_.apply(create(svc("v1", "a")), NOW + S) == []
    [event] = st_.apply(create(svc("v1", "a=changed")), NOW + 2 * S)
    assert (event.action, event.instance.metadata) == (Action.UPDATE, {"m": "changed"})


def test_service_metadata_change_updates_every_node_of_that_version() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a", "b")), NOW)
    events = st_.apply(create(svc("v1", "a", meta={"k": "v"})), NOW)
    assert summary(events) == [("update", "a", "v1"), ("update", "b", "v1")]


def test_other_versions_survive_a_re_registration() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a")), NOW)
    st_.apply(create(svc("v2", "b")), NOW)
    assert st_.apply(create(svc("v1", "a")), NOW) == []
    assert hosts(st_) == [("v1", "a"), ("v2", "b")]


def test_a_node_moving_to_another_version_is_an_update() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a", "b"), NOW + 30 * S), NOW)
    assert summary(st_.apply(create(svc("v2", "a")), NOW)) == [("update", "a", "v2")]
    assert hosts(st_) == [("v1", "b"), ("v2", "a")]
    assert st_.next_expiry() == NOW + 30 * S  # b's record; a's old record went with the move
    assert summary(st_.apply(delete(svc("v1", "a")), NOW)) == []  # a stale delete of the old version
    assert summary(st_.expire(NOW + 30 * S)) == [("delete", "b", "v1")]
    assert hosts(st_) == [("v2", "a")]


def _bad_updates() -> list[Update]:
    good = service_to_json(svc("v1", "a"))
    return [
        Update(type=0, data=good),
        Update(type=2, data=good),
        Update(metadata={"Content-Type": "application/protobuf"}, data=good),
        Update(metadata={}, data=good),
        Update(data=b"{not json"),
        Update(data=b""),
        Update(data=b'{"name":"app","nodes":{}}'),
        Update(data=b'{"version":"v1","nodes":[{"id":"a"}]}'),
        Update(action=0, data=good),
        Update(action=ACTION_UPDATE, data=good),
        Update(action=ACTION_SYNC, data=good),
    ]


@pytest.mark.parametrize("update", _bad_updates())
def test_unusable_updates_are_ignored_and_counted(update: Update) -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "b")), NOW)
    assert st_.apply(update, NOW) == []
    assert st_.rejected == 1
    assert hosts(st_) == [("v1", "b")]


# --- MicroState: expiry -------------------------------------------------------------------------------------


def test_expiry_deletes_the_node_at_its_expires_time() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a"), NOW + 60 * S), NOW)
    st_.apply(create(svc("v1", "b"), NOW + 90 * S), NOW)
    assert st_.next_expiry() == NOW + 60 * S
    assert st_.expire(NOW + 60 * S - 1) == []
    assert summary(st_.expire(NOW + 60 * S)) == [("delete", "a", "v1")]
    assert st_.next_expiry() == NOW + 90 * S
    assert summary(st_.expire(NOW + 200 * S)) == [("delete", "b", "v1")]
    assert (st_.names(), st_.next_expiry()) == ([], None)


def test_re_registration_refreshes_the_expiry() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a"), NOW + 60 * S), NOW)
    st_.apply(create(svc("v1", "a"), NOW + 120 * S), NOW + 30 * S)
    assert st_.expire(NOW + 100 * S) == []
    assert st_.next_expiry() == NOW + 120 * S


def test_metadata_change_replaces_the_expiry_record() -> None:
    """go-micro keys expiry by a hash of the whole service: the old record would delete the node at t+60."""
    st_ = MicroState()
    st_.apply(create(svc("v1", "a=one"), NOW + 60 * S), NOW)
    st_.apply(create(svc("v1", "a=two"), NOW + 90 * S), NOW + 30 * S)
    assert st_.expire(NOW + 60 * S) == []
    assert [i.metadata for i in st_.instances("app")] == [{"m": "two"}]
    assert summary(st_.expire(NOW + 90 * S)) == [("delete", "a", "v1")]


def test_expires_far_in_the_future_is_clamped() -> None:
    st_ = MicroState(max_ttl_ns=60 * S)
    st_.apply(create(svc("v1", "a"), NOW + 10**6 * S), NOW)
    assert st_.next_expiry() == NOW + 60 * S
    assert summary(st_.expire(NOW + 60 * S)) == [("delete", "a", "v1")]
    assert MicroState().apply(create(svc("v1", "a"), 2**64 - 1), NOW) != []
    default = MicroState()
    default.apply(create(svc("v1", "a"), 2**64 - 1), NOW)
    assert default.next_expiry() == NOW + DEFAULT_MAX_TTL_NS


def test_expires_in_the_past_expires_at_the_next_tick() -> None:
    st_ = MicroState()
    assert summary(st_.apply(create(svc("v1", "a"), NOW - S), NOW)) == [("create", "a", "v1")]
    assert summary(st_.expire(NOW)) == [("delete", "a", "v1")]


def test_create_without_expires_lives_until_deleted_and_clears_an_old_record() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a"), NOW + 60 * S), NOW)
    st_.apply(create(svc("v1", "a")), NOW)
    assert st_.next_expiry() is None
    assert st_.expire(NOW + 10**6 * S) == []
    assert summary(st_.apply(delete(svc("v1", "a")), NOW)) == [("delete", "a", "v1")]


def test_delete_forgets_the_expiry_record() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a", "b"), NOW + 60 * S), NOW)
    st_.apply(delete(svc("v1", "a", "b")), NOW)
    assert st_.next_expiry() is None
    st_.apply(create(svc("v1", "a")), NOW)  # re-created without expiry: the old record must not delete it
    assert st_.expire(NOW + 60 * S) == []


def test_expire_across_names_and_versions() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a", "b"), NOW + S), NOW)
    st_.apply(create(svc("v2", "c"), NOW + S), NOW)
    st_.apply(create(svc("v1", "x", name="other"), NOW + S), NOW)
    st_.apply(create(svc("v1", "keep", name="other"), NOW + 5 * S), NOW)
    events = st_.expire(NOW + S)
    assert sorted((e.instance.appid, e.instance.hostname) for e in events) == [
        ("app", "a"),
        ("app", "b"),
        ("app", "c"),
        ("other", "x"),
    ]
    assert all(e.action is Action.DELETE for e in events)
    assert st_.names() == ["other"]


# --- MicroState: push/pull state ----------------------------------------------------------------------------

GO_STATE = (
    b'{"go.a":[{"name":"go.a","version":"1.0.0","metadata":{"k":"v"},"endpoints":null,"nodes":[{"id":"go.a-node1",'
    b'"address":"10.0.0.1:8080","metadata":{"proto":"grpc"}}]}],"go.b":[{"name":"go.b","version":"2",'
    b'"metadata":null,"endpoints":null,"nodes":[{"id":"go.b-1","address":"10.0.0.2:9090","metadata":null}]}]}'
)


def test_learned_state_creates_nodes_that_expire_unless_re_announced() -> None:
    st_ = MicroState()
    events = st_.merge_remote_state(GO_STATE, NOW)
    assert [(e.action, e.instance.appid, e.instance.hostname) for e in events] == [
        (Action.CREATE, "go.a", "go.a-node1"),
        (Action.CREATE, "go.b", "go.b-1"),
    ]
    assert st_.instances("go.a")[0].metadata == {"k": "v", "proto": "grpc"}
    assert st_.next_expiry() == NOW + DEFAULT_LEARNED_TTL_NS
    go_b = st_.services("go.b")[0]
    st_.apply(create(go_b, NOW + 200 * S), NOW + 10 * S)  # go.b re-announced by a broadcast
    assert summary(st_.expire(NOW + DEFAULT_LEARNED_TTL_NS)) == [("delete", "go.a-node1", "1.0.0")]
    assert st_.names() == ["go.b"]


def test_learned_copy_never_changes_a_known_node() -> None:
    st_ = MicroState(learned_ttl_ns=10 * S)
    st_.apply(create(svc("v1", "a=first"), NOW + 5 * S), NOW)
    st_.apply(create(svc("v1", "forever")), NOW)
    assert st_.apply(create(svc("v1", "a=stale", "forever=stale")), NOW, learned=True) == []
    assert st_.apply(create(svc("v9", "a")), NOW, learned=True) == []  # known under another version
    assert st_.next_expiry() == NOW + 5 * S
    assert sorted((i.hostname, i.version, i.metadata or {}) for i in st_.instances("app")) == [
        ("a", "v1", {"m": "first"}),
        ("forever", "v1", {}),
    ]
    assert summary(st_.expire(NOW + 100 * S)) == [("delete", "a", "v1")]


def test_learned_node_joins_an_existing_version_keeping_its_service_metadata() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a", meta={"k": "mine"})), NOW)
    events = st_.apply(create(svc("v1", "a", "b", meta={"k": "theirs"})), NOW, learned=True)
    assert summary(events) == [("create", "b", "v1")]
    assert [i.metadata for i in st_.instances("app")] == [{"k": "mine"}, {"k": "mine"}]
    assert st_.next_expiry() == NOW + DEFAULT_LEARNED_TTL_NS


def test_local_state_round_trips_and_can_leave_out_learned_nodes() -> None:
    st_ = MicroState()
    st_.apply(create(svc("v1", "a", "b=x"), NOW + 60 * S), NOW)
    st_.apply(create(svc("v2", "c")), NOW)
    st_.merge_remote_state(GO_STATE, NOW)
    state = orjson.loads(st_.local_state())
    assert list(state) == ["app", "go.a", "go.b"]
    assert [s["version"] for s in state["app"]] == ["v1", "v2"]
    peer = MicroState()
    peer.merge_remote_state(st_.local_state(), NOW)
    for name in st_.names():
        assert peer.instances(name) == st_.instances(name)
    assert list(orjson.loads(st_.local_state(include_learned=False))) == ["app"]
    st_.apply(create(st_.services("go.b")[0], NOW + 60 * S), NOW)  # re-announced: first-hand now
    assert list(orjson.loads(st_.local_state(include_learned=False))) == ["app", "go.b"]
    assert MicroState().local_state() == b"{}"


@pytest.mark.parametrize(
    "buf",
    [
        b"{",
        b"[]",
        b'"x"',
        b"null",
        b"\xff\xfe",
        b'{"app": 1}',
        b'{"app": [1, {"name": 2}, {"nodes": [{"id": "a"}]}]}',
    ],
)
def test_malformed_remote_state_is_ignored_and_counted(buf: bytes) -> None:
    st_ = MicroState()
    assert st_.merge_remote_state(buf, NOW) == []
    assert st_.rejected >= 1
    assert st_.names() == []


def test_remote_state_keeps_the_good_services_of_a_partly_bad_state() -> None:
    st_ = MicroState()
    buf = b'{"x": null, "bad": [null, 5], "go.a": ' + orjson.dumps(
        [orjson.loads(service_to_json(svc("v1", "a")))]
    )
    buf += b', "y": {}}'
    assert summary(st_.merge_remote_state(buf, NOW)) == [("create", "a", "v1")]
    assert st_.rejected == 2
    assert st_.merge_remote_state(b"", NOW) == []
    assert st_.rejected == 2


# --- first_seen ---------------------------------------------------------------------------------------------


def test_first_seen_within_the_window() -> None:
    st_ = MicroState(seen_window_ns=120 * S)
    assert st_.first_seen(b"u1", NOW)
    assert not st_.first_seen(b"u1", NOW + 119 * S)
    assert st_.first_seen(b"u2", NOW + 119 * S)
    assert st_.first_seen(b"u1", NOW + 120 * S)
    assert not st_.first_seen(b"u1", NOW + 121 * S)


def test_first_seen_is_bounded() -> None:
    st_ = MicroState(seen_max=3)
    for i in range(4):
        assert st_.first_seen(bytes([i]), NOW)
    assert not st_.first_seen(bytes([3]), NOW)
    assert st_.first_seen(bytes([0]), NOW)  # evicted as the oldest


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MicroState(learned_ttl_ns=0)
    with pytest.raises(ValueError):
        MicroState(seen_max=0)


# --- property: events describe exactly the change -----------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["create", "delete", "learn", "expire"]),
        st.sampled_from(["v1", "v2"]),
        st.lists(st.sampled_from(["a", "b", "c", "a=x", "b=y"]), max_size=3),
        st.integers(0, 4),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_events_replay_to_the_state(steps: list[tuple[str, str, list[str], int]]) -> None:
    st_ = MicroState(learned_ttl_ns=3 * S)
    mirror: dict[str, Instance] = {}
    for now, (op, version, nodes, ttl) in enumerate(steps):
        t = NOW + now * S
        s = svc(version, *nodes)
        if op == "create":
            events = st_.apply(create(s, t + ttl * S if ttl else 0), t)
        elif op == "delete":
            events = st_.apply(delete(s), t)
        elif op == "learn":
            events = st_.apply(create(s), t, learned=True)
        else:
            events = st_.expire(t)
        for e in events:
            if e.action is Action.DELETE:
                assert mirror.pop(e.instance.hostname).to_wire() == e.instance.to_wire()
            else:
                assert (e.instance.hostname in mirror) == (e.action is Action.UPDATE)
                mirror[e.instance.hostname] = e.instance
        assert {h: i.to_wire() for h, i in mirror.items()} == {
            i.hostname: i.to_wire() for i in st_.instances("app")
        }
        assert all(s.nodes for s in st_.services("app"))
        assert len({i.hostname for i in st_.instances("app")}) == len(st_.instances("app"))
    far = NOW + 10**4 * S
    st_.expire(far)
    assert st_.next_expiry() is None
    for version, host in hosts(st_):
        assert summary(st_.apply(delete(svc(version, host)), far)) == [("delete", host, version)]
    assert st_.names() == []
