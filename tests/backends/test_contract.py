"""The registry contract (``discoverd.backends.base``), run against every backend in ``BACKENDS``.

"No event" is checked with a marker: after the action that must stay silent, a change that must be seen
is made, and the next event has to be that one.
"""

from __future__ import annotations

import asyncio

import pytest

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.model import Action, Event
from tests.backends.conftest import close_watch, content, inst, next_event


def summary(ev: Event) -> tuple[Action, str, str, str]:
    return (ev.action, ev.instance.appid, ev.instance.hostname, ev.instance.version)


async def test_register_get_list_deregister(registry: Registry) -> None:
    await registry.register(inst("h1"))
    await registry.register(inst("h2"))
    await registry.register(inst("h9", appid="other.svc"))
    got = await registry.get_service("demo.svc")
    assert sorted(i.hostname for i in got) == ["h1", "h2"]
    assert content(got[0]) == content(inst(got[0].hostname))
    assert await registry.list_services() == ["demo.svc", "other.svc"]
    await registry.deregister(inst("h1"))
    assert [i.hostname for i in await registry.get_service("demo.svc")] == ["h2"]
    await registry.deregister(inst("h9", appid="other.svc"))
    assert await registry.list_services() == ["demo.svc"]


async def test_unknown_app_is_empty_and_unknown_deregister_is_ignored(registry: Registry) -> None:
    assert await registry.get_service("nobody.svc") == []
    await registry.deregister(inst("ghost", appid="nobody.svc"))
    assert await registry.list_services() == []


async def test_reregister_replaces(registry: Registry) -> None:
    await registry.register(inst("h1", version="v1"))
    assert [i.version for i in await registry.get_service("demo.svc")] == ["v1"]
    await registry.register(inst("h1", version="v2", port=9000))
    got = await registry.get_service("demo.svc")
    assert [(i.version, i.addrs) for i in got] == [("v2", ["http://10.0.0.1:9000"])]


async def test_instances_handed_out_are_copies(registry: Registry) -> None:
    mine = inst("h1")
    await registry.register(mine)
    mine.addrs.append("http://evil:1")
    assert mine.metadata is not None
    mine.metadata["weight"] = "0"
    first = (await registry.get_service("demo.svc"))[0]
    first.addrs.clear()
    first.version = "mutated"
    second = (await registry.get_service("demo.svc"))[0]
    assert content(second) == content(inst("h1"))
    assert second is not first and second.addrs is not first.addrs


async def test_watch_app_sees_create_update_delete_in_order_only_for_that_app(registry: Registry) -> None:
    w = registry.watch("demo.svc")
    await registry.register(inst("h1", version="v1"))
    await registry.register(inst("x1", appid="other.svc"))
    await registry.register(inst("h1", version="v2"))
    await registry.deregister(inst("x1", appid="other.svc"))
    await registry.deregister(inst("h1"))
    got = [summary(await next_event(w)) for _ in range(3)]
    assert got == [
        (Action.CREATE, "demo.svc", "h1", "v1"),
        (Action.UPDATE, "demo.svc", "h1", "v2"),
        (Action.DELETE, "demo.svc", "h1", "v2"),
    ]
    await registry.register(inst("marker"))
    assert summary(await next_event(w)) == (Action.CREATE, "demo.svc", "marker", "v1")
    await close_watch(w)


async def test_identical_reregister_emits_nothing(registry: Registry) -> None:
    await registry.register(inst("h1"))
    w = registry.watch("demo.svc")
    await registry.register(inst("h1"))
    await registry.register(inst("marker"))
    assert summary(await next_event(w)) == (Action.CREATE, "demo.svc", "marker", "v1")
    await close_watch(w)


async def test_watch_all_sees_every_app(registry: Registry) -> None:
    w = registry.watch()
    await registry.register(inst("h1", appid="a.svc"))
    await registry.register(inst("h2", appid="b.svc"))
    await registry.deregister(inst("h1", appid="a.svc"))
    got = [summary(await next_event(w))[:3] for _ in range(3)]
    assert got == [
        (Action.CREATE, "a.svc", "h1"),
        (Action.CREATE, "b.svc", "h2"),
        (Action.DELETE, "a.svc", "h1"),
    ]
    await close_watch(w)


async def test_watch_sees_only_changes_after_it_was_created(registry: Registry) -> None:
    await registry.register(inst("before"))
    w = registry.watch("demo.svc")
    await registry.register(inst("after"))
    assert summary(await next_event(w)) == (Action.CREATE, "demo.svc", "after", "v1")
    await close_watch(w)


async def test_two_watchers_both_see_every_event(registry: Registry) -> None:
    w1, w2 = registry.watch("demo.svc"), registry.watch()
    await registry.register(inst("h1"))
    await registry.deregister(inst("h1"))
    for w in (w1, w2):
        assert [(await next_event(w)).action for _ in range(2)] == [Action.CREATE, Action.DELETE]
        await close_watch(w)


async def test_event_instances_are_copies(registry: Registry) -> None:
    w = registry.watch()
    await registry.register(inst("h1"))
    ev = await next_event(w)
    ev.instance.addrs.clear()
    assert (await registry.get_service("demo.svc"))[0].addrs == ["http://10.0.0.1:8000"]
    await close_watch(w)


async def test_closed_watch_iterator_ends(registry: Registry) -> None:
    w = registry.watch()
    await close_watch(w)
    await registry.register(inst("h1"))
    with pytest.raises(StopAsyncIteration):
        await next_event(w)


async def test_aclose_ends_open_watchers_and_later_calls_raise(registry: Registry) -> None:
    w = registry.watch()
    waiting = asyncio.ensure_future(next_event(w))
    await registry.register(inst("h1"))
    assert (await waiting).action is Action.CREATE
    blocked = asyncio.ensure_future(next_event(w))
    await asyncio.sleep(0)  # let it block in the watch
    await registry.aclose()
    with pytest.raises(StopAsyncIteration):
        await blocked
    with pytest.raises(RegistryClosed):
        await registry.register(inst("h2"))
    with pytest.raises(RegistryClosed):
        await registry.deregister(inst("h1"))
    with pytest.raises(RegistryClosed):
        await registry.get_service("demo.svc")
    with pytest.raises(RegistryClosed):
        await registry.list_services()
    with pytest.raises(RegistryClosed):
        registry.watch()


async def test_aclose_is_idempotent(registry: Registry) -> None:
    await registry.register(inst("h1"))
    await registry.aclose()
    await registry.aclose()
    with pytest.raises(RegistryClosed):
        await registry.get_service("demo.svc")


async def test_registration_lapses_after_ttl(ttl_registry: Registry) -> None:
    """Only for backends without their own heartbeat (:data:`SHORT_TTL`); discoverd's instances live
    until deregistered or evicted by the server (tested in tests/server)."""
    registry = ttl_registry
    w = registry.watch("demo.svc")
    await registry.register(inst("short"), ttl=0.3)
    await registry.register(inst("forever"))
    assert (await next_event(w)).instance.hostname == "short"
    assert (await next_event(w)).instance.hostname == "forever"
    lapsed = await next_event(w, within=5.0)  # no reads in between: the backend expires it by itself
    assert summary(lapsed) == (Action.DELETE, "demo.svc", "short", "v1")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0  # a cache may apply the delete a moment after this watcher saw it
    while (got := sorted(i.hostname for i in await registry.get_service("demo.svc"))) != ["forever"]:
        assert loop.time() < deadline, f"still registered: {got}"
        await asyncio.sleep(0.01)
    await close_watch(w)


async def test_open_registry_by_url() -> None:
    from discoverd import CachedRegistry, ConfigError, open_registry
    from discoverd.backends.memory import MemoryRegistry
    from discoverd.client.registry import DiscoverdRegistry

    assert isinstance(open_registry("memory://"), MemoryRegistry)
    cached = open_registry("memory://?cache=5")
    assert isinstance(cached, CachedRegistry)
    await cached.aclose()
    remote = open_registry("discoverd://127.0.0.1:7171,127.0.0.1:7172?env=prod&zone=sh001")
    assert isinstance(remote, DiscoverdRegistry)
    assert remote.client.env == "prod" and remote.client.nodes.seeds == ["127.0.0.1:7171", "127.0.0.1:7172"]
    await remote.aclose()  # never started: nothing to stop
    for bad in (
        "nope://x",
        "redis://127.0.0.1:6379?colour=red",
        "redis://127.0.0.1:notaport",
        "gossip://127.0.0.1:7946?colour=red",
        "gossip://127.0.0.1:7946?secret=too-short",
        "gossip://127.0.0.1:7946?preset=moon",
        "discoverd://",
        "discoverd://h:1?colour=red",
        "memory://?x=1",
    ):
        with pytest.raises(ConfigError):
            open_registry(bad)
