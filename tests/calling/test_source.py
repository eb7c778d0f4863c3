"""``RegistrySource``: the adapter from a registry to a caller's watched view, on an in-process registry
that can be taken down (``Flaky``), so outages, broken watches and resyncs are driven by the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.backends.memory import MemoryRegistry
from discoverd.calling.source import RegistrySource
from discoverd.core.backoff import Backoff
from discoverd.errors import DiscoverdError, Unavailable
from discoverd.model import WAITING, Event, Instance
from tests.helpers import eventually

FAST = Backoff(base=0.01, cap=0.05)


def ins(host: str, appid: str = "pay.svc", *, status: int = 1) -> Instance:
    return Instance(
        zone="sh001", env="dev", appid=appid, hostname=host, addrs=[f"http://{host}:80"], status=status
    )


def hosts(items: list[Instance]) -> list[str]:
    return sorted(i.hostname for i in items)


class Flaky(Registry):
    """A :class:`MemoryRegistry` that can be taken down: then reads and new watches raise
    :class:`Unavailable`, and the open watches break. ``reads`` counts ``get_service`` calls,
    ``watches`` the calls of ``watch``."""

    def __init__(self, watch_queue: int = 1024) -> None:
        super().__init__()
        self.inner = MemoryRegistry(watch_queue=watch_queue)
        self.down = False
        self.reads = 0
        self.watches = 0
        self.gate: asyncio.Event | None = None  # when set by a test, reads wait for it
        self._open: list[AsyncIterator[Event]] = []

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        await self.inner.register(instance, ttl)

    async def deregister(self, instance: Instance) -> None:
        await self.inner.deregister(instance)

    async def get_service(self, appid: str) -> list[Instance]:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise Unavailable("the registry is down")
        return await self.inner.get_service(appid)

    async def list_services(self) -> list[str]:
        return await self.inner.list_services()

    def watch(self, appid: str | None = None) -> AsyncGenerator[Event, None]:
        self.watches += 1
        if self.down:
            raise Unavailable("the registry is down")
        inner = self.inner.watch(appid)
        self._open.append(inner)
        return self._relay(inner)

    async def _relay(self, inner: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
        try:
            async for event in inner:
                yield event
        finally:
            await inner.aclose()  # type: ignore[attr-defined]
        raise Unavailable("the watch broke")

    async def go_down(self) -> None:
        self.down = True
        for w in self._open:
            await w.aclose()  # type: ignore[attr-defined]
        self._open.clear()

    async def aclose(self) -> None:
        await self.close_callers()
        await self.inner.aclose()


@pytest.fixture
async def flaky() -> AsyncIterator[Flaky]:
    reg = Flaky()
    yield reg
    await reg.aclose()


@pytest.fixture
async def source(flaky: Flaky) -> AsyncIterator[RegistrySource]:
    src = RegistrySource(flaky, zone="sh001", backoff=FAST)
    yield src
    await src.aclose()


async def served(
    source: RegistrySource, expected: list[str], appid: str = "pay.svc", within: float = 5.0
) -> None:
    """Poll until ``source`` serves exactly the hosts ``expected`` for ``appid``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (got := hosts(await source.instances(appid))) != expected:
        assert loop.time() < deadline, f"served {got}, expected {expected}"
        await asyncio.sleep(0.01)


async def test_first_call_reads_once_then_follows_the_watch(flaky: Flaky, source: RegistrySource) -> None:
    await flaky.register(ins("a"))
    assert hosts(await source.instances("pay.svc")) == ["a"]
    await flaky.register(ins("b"))
    await flaky.register(ins("c", appid="other.svc"))
    await flaky.deregister(ins("a"))
    await served(source, ["b"])
    for _ in range(20):
        assert hosts(await source.instances("pay.svc")) == ["b"]
    assert flaky.reads == 1  # no round trip per call
    assert source.zone == "sh001" and source.zone_weights("pay.svc") is None


async def test_only_up_instances_are_served(flaky: Flaky, source: RegistrySource) -> None:
    await flaky.register(ins("a"))
    await flaky.register(ins("b", status=WAITING))
    assert hosts(await source.instances("pay.svc")) == ["a"]
    await flaky.register(ins("b"))
    await served(source, ["a", "b"])


async def test_concurrent_first_calls_share_one_read_and_its_error(
    flaky: Flaky, source: RegistrySource
) -> None:
    await flaky.register(ins("a"))
    flaky.gate = asyncio.Event()
    calls = [asyncio.ensure_future(source.instances("pay.svc")) for _ in range(5)]
    await eventually(lambda: flaky.reads == 1, what="the first read to start")
    flaky.gate.set()
    assert [hosts(list(r)) for r in await asyncio.gather(*calls)] == [["a"]] * 5
    assert flaky.reads == 1

    flaky.gate = asyncio.Event()
    failing = [asyncio.ensure_future(source.instances("other.svc")) for _ in range(5)]
    await eventually(lambda: flaky.reads == 2, what="the second app's read to start")
    flaky.down = True  # the read under way fails
    flaky.gate.set()
    errors = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(e, Unavailable) for e in errors), errors
    assert flaky.reads == 2  # one read for the five callers, whose error they all got


async def test_outage_keeps_the_last_view_then_resyncs(flaky: Flaky, source: RegistrySource) -> None:
    await flaky.register(ins("a"))
    await flaky.register(ins("b"))
    assert hosts(await source.instances("pay.svc")) == ["a", "b"]
    await flaky.go_down()  # the watch breaks; reads and new watches fail
    await eventually(lambda: flaky.watches >= 4, what="a few attempts to watch again")
    assert hosts(await source.instances("pay.svc")) == ["a", "b"]  # never emptied by an error
    await flaky.deregister(ins("a"))  # missed by the broken watch: only a new read can tell
    await flaky.register(ins("c"))
    flaky.down = False
    await served(source, ["b", "c"])
    await flaky.register(ins("d"))  # and the new watch follows again
    await served(source, ["b", "c", "d"])


async def test_overflowed_watch_is_replaced_by_a_new_read() -> None:
    reg = Flaky(watch_queue=1)
    source = RegistrySource(reg, backoff=FAST)
    try:
        await reg.register(ins("h0"))
        assert hosts(await source.instances("pay.svc")) == ["h0"]
        for n in range(1, 20):  # no await in between: the watch falls behind and overflows
            await reg.inner.register(ins(f"h{n}"))
        await served(source, sorted(f"h{n}" for n in range(20)))
        assert reg.reads >= 2
    finally:
        await source.aclose()
        await reg.aclose()


async def test_subscribe_yields_changes_and_ends_at_close(flaky: Flaky) -> None:
    source = RegistrySource(flaky, backoff=FAST)
    seen: list[list[str]] = []

    async def consume() -> None:
        async for items in source.subscribe("pay.svc"):
            seen.append(hosts(list(items)))

    consumer = asyncio.ensure_future(consume())
    await eventually(lambda: seen == [[]], what="the first (empty) list")
    await flaky.register(ins("a"))
    await eventually(lambda: seen[-1] == ["a"], what="the change")
    await source.aclose()
    await asyncio.wait_for(consumer, 5)  # the subscription ended with the source
    with pytest.raises(DiscoverdError):
        await source.instances("pay.svc")


async def test_callers_are_closed_with_their_registry() -> None:
    reg = MemoryRegistry()
    caller = reg.caller()
    other = reg.caller(zone="sh001")
    assert caller.source is not other.source and reg.caller().source is caller.source  # shared per zone
    await reg.register(ins("a"))
    assert hosts(list(await caller.source.instances("pay.svc"))) == ["a"]
    await reg.aclose()
    with pytest.raises(DiscoverdError, match="closed"):
        await caller.get("pay.svc", "/")
    with pytest.raises(RegistryClosed):
        reg.caller()
