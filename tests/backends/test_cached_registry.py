"""CachedRegistry over a controllable registry: hits, expiry, single flight, stale-on-error, watcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.backends.cache import CachedRegistry
from discoverd.backends.memory import MemoryRegistry
from discoverd.backends.watch import Watch
from discoverd.core.cache import Backoff, Jitter
from discoverd.errors import Unavailable
from discoverd.model import Event, Instance
from tests.backends.conftest import FakeClock, inst, until


class Relay(AsyncIterator[Event]):
    """A watch of the fake: relays a Watch until the test breaks it with an error."""

    def __init__(self, inner: Watch) -> None:
        self.inner = inner
        self.broken: Exception | None = None

    async def __anext__(self) -> Event:
        try:
            return await anext(self.inner)
        except StopAsyncIteration:
            if self.broken is not None:
                raise self.broken from None
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class FakeRegistry(Registry):
    """A MemoryRegistry whose reads can be counted, gated, made to fail, and whose watches can break."""

    def __init__(self) -> None:
        self.mem = MemoryRegistry()
        self.get_calls = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.snapshot_before_gate = False
        self.entered = asyncio.Event()
        self.watch_calls = 0
        self.watch_open_errors: list[Exception] = []
        self.relays: list[Relay] = []

    async def get_service(self, appid: str) -> list[Instance]:
        self.get_calls += 1
        self.entered.set()
        snapshot = await self.mem.get_service(appid) if self.snapshot_before_gate else None
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return snapshot if snapshot is not None else await self.mem.get_service(appid)

    def watch(self, appid: str | None = None) -> Relay:
        self.watch_calls += 1
        if self.watch_open_errors:
            raise self.watch_open_errors.pop(0)
        relay = Relay(self.mem.watch(appid))
        self.relays.append(relay)
        return relay

    async def break_watches(self, error: Exception) -> None:
        for relay in self.relays:
            relay.broken = error
            await relay.inner.aclose()
        self.relays.clear()

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        await self.mem.register(instance, ttl)

    async def deregister(self, instance: Instance) -> None:
        await self.mem.deregister(instance)

    async def list_services(self) -> list[str]:
        return await self.mem.list_services()

    async def aclose(self) -> None:
        await self.mem.aclose()


class SleepRecorder:
    """An injected ``sleep``: records the delays (and the watcher error at that moment), waits not."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.errors: list[BaseException | None] = []
        self.cache: CachedRegistry | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.errors.append(None if self.cache is None else self.cache.watch_error)
        await asyncio.sleep(0)


FAST = Backoff(base=0.01, cap=0.04, jitter=Jitter.NONE)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRegistry]:
    f = FakeRegistry()
    yield f
    await f.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(fake: FakeRegistry, clock: FakeClock) -> AsyncIterator[CachedRegistry]:
    c = CachedRegistry(fake, ttl=10, min_refresh=1, backoff=FAST, clock=clock)
    yield c
    await c.aclose()


def names(instances: list[Instance]) -> list[str]:
    return sorted(i.hostname for i in instances)


async def test_fresh_hits_do_not_call_the_backend(fake: FakeRegistry, cache: CachedRegistry) -> None:
    await fake.register(inst("h1"))
    for _ in range(5):
        assert names(await cache.get_service("demo.svc")) == ["h1"]
    assert fake.get_calls == 1
    assert cache.status("demo.svc").cached and not cache.status("demo.svc").stale


async def test_expiry_refetches(fake: FakeRegistry, cache: CachedRegistry, clock: FakeClock) -> None:
    await fake.register(inst("h1"))
    await cache.get_service("demo.svc")
    cache.stop()  # only the ttl may refresh: no watch events
    await until(lambda: not cache.watching, what="watcher stopped")
    await fake.register(inst("h2"))
    clock.advance(9.9)
    assert names(await cache.get_service("demo.svc")) == ["h1"]
    clock.advance(0.1)
    assert names(await cache.get_service("demo.svc")) == ["h1", "h2"]
    assert fake.get_calls == 2


async def test_fifty_concurrent_misses_share_one_fetch(fake: FakeRegistry, cache: CachedRegistry) -> None:
    await fake.register(inst("h1"))
    fake.gate = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(cache.get_service("demo.svc")) for _ in range(50)]
        await asyncio.wait_for(fake.entered.wait(), 5)
        for _ in range(5):  # let every task run up to its first suspension point
            await asyncio.sleep(0)
        assert fake.get_calls == 1
        fake.gate.set()
    assert [names(t.result()) for t in tasks] == [["h1"]] * 50
    assert fake.get_calls == 1
    results = [t.result() for t in tasks]
    assert len({id(r[0]) for r in results}) == 50  # every caller got its own copies


async def test_cancelled_fetcher_hands_the_flight_to_a_waiting_caller(
    fake: FakeRegistry, cache: CachedRegistry
) -> None:
    await fake.register(inst("h1"))
    fake.gate = asyncio.Event()
    first = asyncio.ensure_future(cache.get_service("demo.svc"))
    await asyncio.wait_for(fake.entered.wait(), 5)
    second = asyncio.ensure_future(cache.get_service("demo.svc"))
    await asyncio.sleep(0)  # second joins the flight
    first.cancel()
    await until(lambda: fake.get_calls == 2, what="the joiner to fetch again")
    fake.gate.set()
    assert names(await second) == ["h1"]
    assert first.cancelled()


async def test_backend_failure_serves_the_stale_list_with_status(
    fake: FakeRegistry, cache: CachedRegistry, clock: FakeClock
) -> None:
    await fake.register(inst("h1"))
    await fake.register(inst("h2"))
    assert names(await cache.get_service("demo.svc")) == ["h1", "h2"]
    clock.advance(10)
    err = Unavailable("registry down")
    fake.fail = err
    assert names(await cache.get_service("demo.svc")) == ["h1", "h2"]
    status = cache.status("demo.svc")
    assert (status.cached, status.stale, status.error) == (True, True, err)
    for _ in range(3):  # failing again and again never empties it
        clock.advance(1)
        assert names(await cache.get_service("demo.svc")) == ["h1", "h2"]
    assert fake.get_calls == 5
    fake.fail = None
    clock.advance(1)
    assert names(await cache.get_service("demo.svc")) == ["h1", "h2"]
    status = cache.status("demo.svc")
    assert (status.stale, status.error) == (False, None)


async def test_min_refresh_interval_keeps_a_failing_backend_from_being_hammered(
    fake: FakeRegistry, cache: CachedRegistry, clock: FakeClock
) -> None:
    await fake.register(inst("h1"))
    await cache.get_service("demo.svc")
    clock.advance(10)
    fake.fail = Unavailable("down")
    failed_at = clock.now
    for k in range(20):  # 20 reads within 0.95 s of the failure
        clock.now = failed_at + k * 0.05
        await cache.get_service("demo.svc")
    assert fake.get_calls == 2
    clock.now = failed_at + 1.0
    await cache.get_service("demo.svc")
    assert fake.get_calls == 3


async def test_nothing_cached_and_backend_down_raises_the_backend_error(
    fake: FakeRegistry, cache: CachedRegistry, clock: FakeClock
) -> None:
    fake.fail = Unavailable("down")
    with pytest.raises(Unavailable, match="down"):
        await cache.get_service("demo.svc")
    for _ in range(10):  # within min_refresh: the same error, no new call
        with pytest.raises(Unavailable, match="down") as info:
            await cache.get_service("demo.svc")
    tb_len = len(list(_walk(info.value.__traceback__)))
    with pytest.raises(Unavailable) as again:
        await cache.get_service("demo.svc")
    assert len(list(_walk(again.value.__traceback__))) == tb_len  # re-raising does not grow it
    assert fake.get_calls == 1
    status = cache.status("demo.svc")
    assert (status.cached, status.stale, status.error) == (False, False, fake.fail)
    fake.fail = None
    clock.advance(1)
    assert await cache.get_service("demo.svc") == []
    assert fake.get_calls == 2


def _walk(tb: object) -> list[object]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = getattr(tb, "tb_next", None)
    return out


async def test_watch_events_update_the_cache_without_a_fetch(
    fake: FakeRegistry, cache: CachedRegistry
) -> None:
    await fake.register(inst("h1"))
    await cache.get_service("demo.svc")
    await fake.register(inst("h2"))
    await fake.deregister(inst("h1"))
    await fake.register(inst("h2", version="v2"))

    got: list[Instance] = []

    async def settled() -> bool:
        got[:] = await cache.get_service("demo.svc")
        return [(i.hostname, i.version) for i in got] == [("h2", "v2")]

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not await settled():
        assert loop.time() < deadline, got
        await asyncio.sleep(0.005)
    assert fake.get_calls == 1


async def test_events_during_a_fetch_are_not_undone_by_its_older_snapshot(
    fake: FakeRegistry, cache: CachedRegistry, clock: FakeClock
) -> None:
    await fake.register(inst("h1"))
    await cache.get_service("demo.svc")
    clock.advance(10)
    fake.gate, fake.snapshot_before_gate = asyncio.Event(), True
    fake.entered.clear()
    reader = asyncio.ensure_future(cache.get_service("demo.svc"))
    await asyncio.wait_for(fake.entered.wait(), 5)  # the snapshot (with h1) is taken
    await fake.deregister(inst("h1"))
    entry = cache._state.entry("demo.svc")  # white box: wait until the watcher buffered the delete
    await until(lambda: len(entry.buffered) == 1, what="the delete to reach the cache")
    fake.gate.set()
    assert await reader == []


async def test_watcher_restarts_with_backoff_and_resyncs(fake: FakeRegistry, clock: FakeClock) -> None:
    sleep = SleepRecorder()
    cache = CachedRegistry(fake, ttl=10, min_refresh=0, backoff=FAST, clock=clock, sleep=sleep)
    sleep.cache = cache
    try:
        await fake.register(inst("h1"))
        await cache.get_service("demo.svc")
        assert fake.watch_calls == 1 and cache.watching
        fake.watch_open_errors = [Unavailable("open 1"), Unavailable("open 2")]
        broken = Unavailable("stream broke")
        await fake.break_watches(broken)
        await until(lambda: fake.watch_calls == 4 and cache.watching, what="the watch to reopen")
        assert sleep.delays == pytest.approx([0.01, 0.02, 0.04])
        assert [str(e) for e in sleep.errors] == ["stream broke", "open 1", "open 2"]
        assert cache.watch_error is None
        # events of the gap may be lost: the next read refetches, later changes come by watch
        await fake.register(inst("h2"))
        assert names(await cache.get_service("demo.svc")) == ["h1", "h2"]
        assert fake.get_calls == 2
        await fake.register(inst("h3"))
        await until(lambda: "h3" in cache._state.entry("demo.svc").instances, what="h3 via watch")
        assert names(await cache.get_service("demo.svc")) == ["h1", "h2", "h3"]
        assert fake.get_calls == 2
        # an event proved the watch healthy: the next failure starts the backoff over
        await fake.break_watches(Unavailable("again"))
        await until(lambda: fake.watch_calls == 5 and cache.watching, what="the second reopen")
        assert sleep.delays[3:] == pytest.approx([0.01])
    finally:
        await cache.aclose()


async def test_watch_that_ends_is_restarted(fake: FakeRegistry, cache: CachedRegistry) -> None:
    await cache.get_service("demo.svc")
    for relay in fake.relays:
        await relay.inner.aclose()  # ends without an error
    await until(lambda: fake.watch_calls == 2 and cache.watching, what="the watch to reopen")


async def test_watcher_stops_when_the_wrapped_registry_closes(
    fake: FakeRegistry, cache: CachedRegistry
) -> None:
    await cache.get_service("demo.svc")
    await fake.aclose()
    await until(lambda: isinstance(cache.watch_error, RegistryClosed), what="the watcher to give up")
    assert not cache.watching
    assert cache._runner is not None
    await until(cache._runner.done, what="the watcher task to end")


async def test_write_through_the_cache_is_read_back_at_once(
    fake: FakeRegistry, cache: CachedRegistry
) -> None:
    await cache.get_service("demo.svc")
    cache.stop()
    await until(lambda: fake.mem.watchers == 0, what="the watch to close")
    await cache.register(inst("h1"))
    assert names(await cache.get_service("demo.svc")) == ["h1"]
    await cache.deregister(inst("h1"))
    assert await cache.get_service("demo.svc") == []
    assert fake.get_calls == 3


async def test_stop_ends_the_watcher_and_the_cache_keeps_serving_by_ttl(
    fake: FakeRegistry, cache: CachedRegistry, clock: FakeClock
) -> None:
    await fake.register(inst("h1"))
    await cache.get_service("demo.svc")
    assert fake.mem.watchers == 1
    cache.stop()
    cache.stop()
    await until(lambda: fake.mem.watchers == 0 and not cache.watching, what="the watch to close")
    await fake.register(inst("h2"))
    assert names(await cache.get_service("demo.svc")) == ["h1"]  # nobody applies events any more
    clock.advance(10)
    assert names(await cache.get_service("demo.svc")) == ["h1", "h2"]
    assert fake.watch_calls == 1  # never restarted
    assert "stopped" in repr(cache)


async def test_aclose_leaves_the_wrapped_registry_open_unless_owned(fake: FakeRegistry) -> None:
    cache = CachedRegistry(fake)
    await cache.get_service("demo.svc")
    await cache.aclose()
    await cache.aclose()
    assert fake.mem.watchers == 0
    await fake.register(inst("h1"))  # still open
    for call in (cache.get_service("demo.svc"), cache.list_services(), cache.register(inst("h2"))):
        with pytest.raises(RegistryClosed):
            await call
    with pytest.raises(RegistryClosed):
        cache.watch()
    owning = CachedRegistry(fake, own=True)
    async with owning:
        assert owning.watching
    with pytest.raises(RegistryClosed):
        await fake.mem.get_service("demo.svc")


async def test_passthrough_list_and_watch(fake: FakeRegistry, cache: CachedRegistry) -> None:
    w = cache.watch("demo.svc")
    await cache.register(inst("h1"))
    assert (await asyncio.wait_for(anext(w), 5)).instance.hostname == "h1"
    assert await cache.list_services() == ["demo.svc"]
    assert isinstance(w, Relay)
    await w.aclose()
