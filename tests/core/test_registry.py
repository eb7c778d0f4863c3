"""Unit tests of the registry state machine: timestamps, versions, set, eviction (no event loop)."""

from __future__ import annotations

import random

import orjson
import pytest

from discoverd.core import wire
from discoverd.core.events import Evicted, Registered, Renewed, SetChange, Source
from discoverd.core.guard import Guard
from discoverd.core.registry_state import App, RegistryState
from discoverd.model import UP, WAITING, Instance

S = 1_000_000_000  # one second in ns
T0 = 1_700_000_000 * S


def inst(host: str = "h1", *, appid: str = "a", zone: str = "z1", dirty: int = 0, **kw: object) -> Instance:
    return Instance(
        zone=zone,
        env="dev",
        appid=appid,
        hostname=host,
        addrs=["http://10.0.0.1:80"],
        dirty_timestamp=dirty,
        **kw,  # type: ignore[arg-type]
    )


def register(r: RegistryState, ins: Instance, now: int) -> App:
    """Register ``ins`` and return its app (the event says what changed, the app holds the version)."""
    event = r.register(ins, now)
    assert isinstance(event, Registered) and event.instance is r.get(*ins.key)
    return r.apps[(ins.appid, ins.env)]


def renew(
    r: RegistryState, appid: str, env: str, zone: str, host: str, *, now: int, peer_dirty: int | None = None
) -> Renewed:
    event = r.renew(appid, env, zone, host, now, peer_dirty=peer_dirty)
    assert event is not None
    return event


def evicted(event: Evicted | None) -> list[Instance]:
    return [] if event is None else list(event.instances)


def changes(*items: tuple[str, int | None, dict[str, str] | None]) -> list[SetChange]:
    return [SetChange(*item) for item in items]


def test_register_new_instance_stamps_every_timestamp_with_now() -> None:
    r = RegistryState()
    app = register(r, inst(), T0)
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None
    assert (got.reg_timestamp, got.up_timestamp, got.renew_timestamp) == (T0, T0, T0)
    assert (got.dirty_timestamp, got.latest_timestamp) == (T0, T0)
    assert app.latest == T0
    assert r.size == 1
    assert r.guard.expected == 2


def test_register_with_dirty_param_keeps_it() -> None:
    r = RegistryState()
    r.register(inst(dirty=T0 - 5), T0)
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None and got.dirty_timestamp == T0 - 5


def test_latest_is_strictly_increasing_even_with_equal_clock() -> None:
    r = RegistryState()
    a1 = register(r, inst("h1"), T0).latest
    a2 = register(r, inst("h2"), T0).latest
    a3 = register(r, inst("h3"), T0 - S).latest
    assert a1 < a2 < a3
    assert (a2, a3) == (T0 + 1, T0 + 2)


def test_reregister_resets_reg_but_keeps_up_timestamp_and_bumps_latest() -> None:
    r = RegistryState()
    r.register(inst(), T0)
    app = register(r, inst(version="v2"), T0 + 10 * S)
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None
    assert got.reg_timestamp == T0 + 10 * S
    assert got.up_timestamp == T0
    assert got.version == "v2"
    assert app.latest == T0 + 10 * S
    assert r.size == 1
    assert r.guard.expected == 2  # overwrite does not count as a new instance


def test_register_with_older_dirty_keeps_stored_copy_but_still_bumps() -> None:
    r = RegistryState()
    r.register(inst(dirty=T0 + 100, version="new"), T0)
    before = r.apps[("a", "dev")].latest
    app = register(r, inst(dirty=T0 + 50, version="old"), T0 + 1)
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None and got.version == "new"
    assert app.latest > before


def test_equal_dirty_goes_to_the_incoming_copy() -> None:
    r = RegistryState()
    r.register(inst(dirty=T0, version="first"), T0)
    r.register(inst(dirty=T0, version="second"), T0 + 1)
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None and got.version == "second"


def test_renew_touches_only_renew_timestamp_and_counts_for_guard() -> None:
    r = RegistryState()
    app = register(r, inst(), T0)
    latest = app.latest
    res = renew(r, "a", "dev", "z1", "h1", now=T0 + 30 * S)
    assert res.code == 0 and res.source is Source.CLIENT
    assert res.instance.renew_timestamp == T0 + 30 * S
    assert res.instance.dirty_timestamp == T0
    assert app.latest == latest
    assert r.guard.this_window == 1


def test_renew_answer_bytes_follow_renews_sets_and_reregisters() -> None:
    r = RegistryState()
    app = register(r, inst(), T0)
    for now in (T0 + S, T0 + 2 * S):
        res = renew(r, "a", "dev", "z1", "h1", now=now)
        doc = orjson.loads(wire.renewed(app, res.instance))
        assert doc == wire.instance_obj(res.instance)
        assert doc["renew_timestamp"] == now
    r.apply_set("a", "dev", "z1", changes(("h1", WAITING, {"k": "v"})), T0 + 3 * S)
    res = renew(r, "a", "dev", "z1", "h1", now=T0 + 4 * S)
    doc = orjson.loads(wire.renewed(app, res.instance))
    assert (doc["status"], doc["metadata"]) == (WAITING, {"k": "v"})
    r.register(inst(version="v9"), T0 + 5 * S)
    res = renew(r, "a", "dev", "z1", "h1", now=T0 + 6 * S)
    assert orjson.loads(wire.renewed(app, res.instance))["version"] == "v9"
    r.cancel("a", "dev", "z1", "h1", T0 + 7 * S)
    assert app.parts == {}


@pytest.mark.parametrize(("peer_dirty", "code"), [(T0 + 1, -404), (T0 - 1, -409), (T0, 0), (None, 0)])
def test_replicated_renew_compares_dirty(peer_dirty: int | None, code: int) -> None:
    r = RegistryState()
    r.register(inst(), T0)
    res = renew(r, "a", "dev", "z1", "h1", now=T0 + S, peer_dirty=peer_dirty)
    assert res.code == code
    assert res.instance.renew_timestamp == T0 + S


def test_renew_unknown_is_404() -> None:
    r = RegistryState()
    assert r.renew("a", "dev", "z1", "h1", T0) is None  # the protocol answers -404
    assert r.guard.this_window == 0


def test_cancel_removes_empty_zone_and_app_and_decrements_guard() -> None:
    r = RegistryState()
    r.register(inst("h1"), T0)
    r.register(inst("h2", zone="z2"), T0)
    assert r.cancel("a", "dev", "z1", "h1", T0 + S) is not None
    app = r.app("a", "dev")
    assert app is not None and list(app.zones) == ["z2"]
    assert r.guard.expected == 2
    assert r.cancel("a", "dev", "z2", "h2", T0 + S) is not None
    assert r.app("a", "dev") is None
    assert r.size == 0
    assert r.cancel("a", "dev", "z2", "h2", T0) is None


def test_cancel_latest_param_feeds_version() -> None:
    r = RegistryState()
    r.register(inst("h1"), T0)
    r.register(inst("h2"), T0)
    r.cancel("a", "dev", "z1", "h1", T0, latest=T0 + 500)
    app = r.app("a", "dev")
    assert app is not None and app.latest == T0 + 500


def test_set_changes_status_metadata_and_bumps_version() -> None:
    r = RegistryState()
    r.register(inst("h1", metadata={"a": "1", "b": "2"}), T0)
    before = r.apps[("a", "dev")].latest
    event = r.apply_set("a", "dev", "z1", changes(("h1", WAITING, {"b": "3", "c": "4"})), T0 + 7)
    assert event.applied and event.app == ("a", "dev")
    app = r.apps[("a", "dev")]
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None
    assert got.status == WAITING
    assert got.metadata == {"a": "1", "b": "3", "c": "4"}
    assert got.dirty_timestamp == got.latest_timestamp == T0 + 7
    assert got.up_timestamp == T0
    assert app.latest > before
    r.apply_set("a", "dev", "z1", changes(("h1", UP, None)), T0 + 9)
    assert got.up_timestamp == T0 + 9


def test_set_is_atomic_on_unknown_hostname() -> None:
    r = RegistryState()
    r.register(inst("h1"), T0)
    before = r.apps[("a", "dev")].latest
    event = r.apply_set("a", "dev", "z1", changes(("h1", WAITING, None), ("nope", WAITING, None)), T0 + 1)
    assert not event.applied and event.refused == "set: hostname nope not found"
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None and got.status == UP
    assert r.apps[("a", "dev")].latest == before
    event = r.apply_set("a", "dev", "zX", changes(("h1", WAITING, None)), T0 + 1)
    assert event.refused == "set: no instance of a in env dev zone zX"


def test_fetch_cache_is_dropped_on_every_change() -> None:
    r = RegistryState()
    app = register(r, inst("h1"), T0)
    app.cache["x"] = b"cached"
    r.renew("a", "dev", "z1", "h1", T0 + 1)
    assert app.cache == {}
    app.cache["x"] = b"cached"
    r.register(inst("h2"), T0 + 2)
    assert app.cache == {}


def test_load_keeps_timestamps_exactly() -> None:
    r = RegistryState()
    src = inst("h1", reg_timestamp=5, up_timestamp=6, renew_timestamp=7, latest_timestamp=T0)
    src.dirty_timestamp = 8
    r.load([src], T0 + 99 * S)
    got = r.get("a", "dev", "z1", "h1")
    assert got is not None
    assert (got.reg_timestamp, got.up_timestamp, got.renew_timestamp, got.dirty_timestamp) == (5, 6, 7, 8)
    app = r.app("a", "dev")
    assert app is not None and app.latest == T0


# -- eviction --------------------------------------------------------------------------------


def populated(n: int, *, renew_at: int) -> RegistryState:
    r = RegistryState(Guard(), rng=random.Random(7))
    for i in range(n):
        r.register(inst(f"h{i}", appid=f"app{i % 5}"), renew_at)
    return r


def test_evict_removes_only_expired_instances() -> None:
    r = populated(10, renew_at=T0)
    r.renew("app0", "dev", "z1", "h0", T0 + 80 * S)
    r.renew("app1", "dev", "z1", "h1", T0 + 80 * S)
    removed = evicted(r.evict(T0 + 91 * S, 90 * S, 3600 * S, share=0.0))
    assert sorted(i.hostname for i in removed) == [f"h{i}" for i in range(2, 10)]
    assert r.size == 2


def test_evict_caps_at_fifteen_percent_chosen_at_random() -> None:
    r = populated(100, renew_at=T0)
    removed = evicted(r.evict(T0 + 91 * S, 90 * S, 3600 * S, share=0.85))
    assert len(removed) == 15
    assert r.size == 85
    apps = {i.appid for i in removed}
    assert len(apps) > 1  # random across apps, not one app wiped first


def test_evict_caps_at_one_for_a_single_instance() -> None:
    r = populated(1, renew_at=T0)
    assert len(evicted(r.evict(T0 + 91 * S, 90 * S, 3600 * S, share=0.85))) == 1


def test_evictions_do_not_decrement_guard_until_recount() -> None:
    r = populated(10, renew_at=T0)
    r.evict(T0 + 91 * S, 90 * S, 3600 * S, share=0.0)
    assert r.guard.expected == 20
    r.guard.recount(r.size)
    assert r.guard.expected == 0


def test_protected_evicts_only_past_the_ceiling() -> None:
    r = populated(10, renew_at=T0)
    r.guard.protecting = True
    assert r.evict(T0 + 1000 * S, 90 * S, 3600 * S, share=0.0) is None
    assert len(evicted(r.evict(T0 + 3601 * S, 90 * S, 3600 * S, share=0.0))) == 10


def test_evicted_app_version_uses_now() -> None:
    r = populated(10, renew_at=T0)  # app0 holds h0 and h5
    r.renew("app0", "dev", "z1", "h0", T0 + 80 * S)
    r.evict(T0 + 91 * S, 90 * S, 3600 * S, share=0.0)
    app = r.app("app0", "dev")
    assert app is not None and app.latest == T0 + 91 * S
    assert [i.hostname for i in app.instances()] == ["h0"]
    assert r.app("app1", "dev") is None
