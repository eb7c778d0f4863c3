"""MemoryRegistry specifics: TTL expiry driven by a fake clock, the expiry timer, watcher overflow."""

from __future__ import annotations

import gc
import math

import pytest

from discoverd.backends.base import RegistryClosed, WatchOverflow
from discoverd.backends.memory import MemoryRegistry
from discoverd.errors import BadRequest
from discoverd.model import Action, Instance
from tests.backends.conftest import FakeClock, inst, next_event


async def hosts(reg: MemoryRegistry, appid: str = "demo.svc") -> list[str]:
    return [i.hostname for i in await reg.get_service(appid)]


async def test_ttl_lapses_exactly_at_the_deadline_of_the_fake_clock() -> None:
    clock = FakeClock()
    async with MemoryRegistry(clock=clock) as reg:
        w = reg.watch()
        await reg.register(inst("h1"), ttl=10)
        clock.advance(9.999)
        assert await hosts(reg) == ["h1"]
        clock.advance(0.001)
        assert await hosts(reg) == []
        assert await reg.list_services() == []
        assert [(await next_event(w)).action for _ in range(2)] == [Action.CREATE, Action.DELETE]


async def test_reregister_moves_the_deadline() -> None:
    clock = FakeClock()
    async with MemoryRegistry(clock=clock) as reg:
        await reg.register(inst("h1"), ttl=10)
        clock.advance(8)
        await reg.register(inst("h1"), ttl=10)
        clock.advance(4)  # 12 s after the first registration, 4 s after the second
        assert await hosts(reg) == ["h1"]
        clock.advance(6)
        assert await hosts(reg) == []


async def test_reregister_without_ttl_never_lapses() -> None:
    clock = FakeClock()
    async with MemoryRegistry(clock=clock) as reg:
        await reg.register(inst("h1"), ttl=1)
        await reg.register(inst("h1"))
        clock.advance(1000)
        assert await hosts(reg) == ["h1"]


async def test_expire_removes_lapsed_registrations_without_a_read() -> None:
    clock = FakeClock()
    async with MemoryRegistry(clock=clock) as reg:
        w = reg.watch("demo.svc")
        await reg.register(inst("h1"), ttl=5)
        await reg.register(inst("h2"), ttl=5)
        await reg.register(inst("h3"), ttl=50)
        clock.advance(5)
        assert reg.expire() == 2
        assert reg.expire() == 0
        events = [await next_event(w) for _ in range(5)]
        assert [(e.action, e.instance.hostname) for e in events[3:]] == [
            (Action.DELETE, "h1"),
            (Action.DELETE, "h2"),
        ]
        assert await hosts(reg) == ["h3"]


async def test_timer_expires_registrations_nobody_reads() -> None:
    async with MemoryRegistry() as reg:
        w = reg.watch()
        await reg.register(inst("h1"), ttl=0.05)
        await reg.register(inst("h2"), ttl=0.1)
        got = [(e.action, e.instance.hostname) for e in [await next_event(w) for _ in range(4)]]
        assert got == [
            (Action.CREATE, "h1"),
            (Action.CREATE, "h2"),
            (Action.DELETE, "h1"),
            (Action.DELETE, "h2"),
        ]


async def test_timer_does_not_expire_a_renewed_registration_early() -> None:
    clock = FakeClock()
    async with MemoryRegistry(clock=clock) as reg:
        w = reg.watch()
        await reg.register(inst("renewed"), ttl=0.02)
        clock.advance(0.01)
        await reg.register(inst("renewed"), ttl=30)  # its old heap entry is now stale
        await reg.register(inst("marker"), ttl=0.03)
        clock.advance(0.03)  # the timer (real time) fires; the fake clock says only "marker" lapsed
        assert [(await next_event(w)).instance.hostname for _ in range(2)] == ["renewed", "marker"]
        deleted = await next_event(w)
        assert (deleted.action, deleted.instance.hostname) == (Action.DELETE, "marker")
        assert await hosts(reg) == ["renewed"]


async def test_slow_watcher_overflows_after_delivering_the_queued_prefix() -> None:
    async with MemoryRegistry(watch_queue=3) as reg:
        slow, fast = reg.watch(), reg.watch()
        for n in range(5):
            await reg.register(inst(f"h{n}"))  # never blocks on the slow watcher
            assert (await next_event(fast)).instance.hostname == f"h{n}"
        assert reg.watchers == 1  # the slow one was detached at the overflow
        assert [(await next_event(slow)).instance.hostname for _ in range(3)] == ["h0", "h1", "h2"]
        with pytest.raises(WatchOverflow):
            await next_event(slow)
        with pytest.raises(StopAsyncIteration):
            await next_event(slow)
        assert await hosts(reg) == [f"h{n}" for n in range(5)]


async def test_watcher_queue_bound_counts_only_unconsumed_events() -> None:
    async with MemoryRegistry(watch_queue=1) as reg:
        w = reg.watch()
        for n in range(10):
            await reg.register(inst(f"h{n}"))
            assert (await next_event(w)).instance.hostname == f"h{n}"


async def test_dropped_watcher_is_forgotten() -> None:
    async with MemoryRegistry() as reg:
        w = reg.watch()
        assert reg.watchers == 1
        del w
        gc.collect()
        assert reg.watchers == 0
        await reg.register(inst("h1"))


async def test_each_watcher_gets_its_own_copy_of_an_event() -> None:
    async with MemoryRegistry() as reg:
        w1, w2 = reg.watch(), reg.watch()
        await reg.register(inst("h1"))
        e1, e2 = await next_event(w1), await next_event(w2)
        assert e1.instance is not e2.instance
        e1.instance.addrs.clear()
        assert e2.instance.addrs == ["http://10.0.0.1:8000"]


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan])
async def test_bad_ttl_is_rejected(ttl: float) -> None:
    async with MemoryRegistry() as reg:
        with pytest.raises(BadRequest, match="ttl"):
            await reg.register(inst("h1"), ttl=ttl)
        assert await reg.list_services() == []


@pytest.mark.parametrize("field", ["appid", "hostname"])
async def test_empty_key_is_rejected(field: str) -> None:
    bad = Instance(zone="z", env="dev", appid="a", hostname="h")
    setattr(bad, field, "")
    async with MemoryRegistry() as reg:
        with pytest.raises(BadRequest):
            await reg.register(bad)


async def test_close_cancels_the_timer_and_expire_raises_after_close() -> None:
    reg = MemoryRegistry()
    await reg.register(inst("h1"), ttl=30)
    assert reg._timer is not None
    timer = reg._timer
    await reg.aclose()
    assert timer.cancelled()
    assert "closed" in repr(reg)
    with pytest.raises(RegistryClosed):
        reg.expire()


def test_watch_queue_must_be_positive() -> None:
    with pytest.raises(ValueError, match="watch_queue"):
        MemoryRegistry(watch_queue=0)
