"""The backend fixture of the contract suite, and small helpers shared by the backend tests.

To run the contract suite against another backend, add its name to :data:`BACKENDS` and a branch to
:func:`open_backend` (the single place that knows how to open one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from discoverd.backends.base import Registry
from discoverd.backends.cache import CachedRegistry
from discoverd.backends.gossip.registry import GossipRegistry
from discoverd.backends.memory import MemoryRegistry
from discoverd.backends.redis import RedisConfig, RedisRegistry
from discoverd.client.config import ClientConfig
from discoverd.client.registry import DiscoverdRegistry
from discoverd.core.backoff import Backoff
from discoverd.model import Event, Instance
from discoverd.testing import fast_config, running_node
from tests.backends.redis_server import redis_server

CLIENT = ClientConfig(
    renew_interval=1.0, request_timeout=2.0, start_timeout=3.0, backoff_base=0.05, backoff_cap=0.2
)

#: Fast reconnection for the Redis tests (the default backoff caps at 5 s).
REDIS = RedisConfig(heartbeat=1.0, timeout=2.0, backoff=Backoff(base=0.05, cap=0.3))

#: Every backend the contract suite runs against ("cached" = CachedRegistry over a MemoryRegistry;
#: "discoverd" = DiscoverdRegistry on a real node on loopback; "redis" = RedisRegistry on a real
#: redis-server started for the test on a free loopback port; "gossip" = GossipRegistry, a memberlist
#: node on a free loopback port).
BACKENDS = ["memory", "cached", "discoverd", "redis", "gossip"]

#: Backends whose ``register(ttl=...)`` lapses after a short ttl (those with their own heartbeat don't:
#: discoverd, and redis, whose provider keeps its 10 s liveness key fresh until deregister/orphan; its
#: lapse is tested in tests/backends/test_redis.py with the protocol's real 10 s key).
SHORT_TTL = {"memory", "cached", "gossip"}


@contextlib.asynccontextmanager
async def open_backend(name: str) -> AsyncIterator[Registry]:
    """An open registry of backend ``name`` (with whatever it needs running), closed on exit."""
    if name == "discoverd":
        async with running_node(fast_config()) as node:
            url = f"discoverd://{node.address}?env=dev&zone=sh001&region=sh&hostname=contract"
            reg: Registry = DiscoverdRegistry(url, config=CLIENT)
            try:
                yield reg
            finally:
                await reg.aclose()
        return
    if name == "redis":
        with redis_server() as server:
            reg = RedisRegistry(server.url(), config=REDIS)
            try:
                yield reg
            finally:
                await reg.aclose()
        return
    if name == "memory":
        reg = MemoryRegistry()
    elif name == "cached":
        reg = CachedRegistry(MemoryRegistry(), own=True)
    elif name == "gossip":
        reg = GossipRegistry("gossip://127.0.0.1:0?name=contract")
    else:
        raise ValueError(f"unknown backend {name!r}")
    try:
        yield reg
    finally:
        await reg.aclose()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def registry(backend_name: str) -> AsyncIterator[Registry]:
    """An open registry of each backend in :data:`BACKENDS`, closed after the test."""
    async with open_backend(backend_name) as reg:
        yield reg


@pytest.fixture(params=sorted(SHORT_TTL))
async def ttl_registry(request: pytest.FixtureRequest) -> AsyncIterator[Registry]:
    """An open registry of each backend whose registrations lapse after a short ``ttl``."""
    async with open_backend(request.param) as reg:
        yield reg


def inst(host: str = "h1", appid: str = "demo.svc", *, version: str = "v1", port: int = 8000) -> Instance:
    """An instance of ``appid`` on ``host``."""
    return Instance(
        region="sh",
        zone="sh001",
        env="dev",
        appid=appid,
        hostname=host,
        addrs=[f"http://10.0.0.1:{port}"],
        version=version,
        metadata={"weight": "10"},
    )


def content(i: Instance) -> tuple[object, ...]:
    """What a backend must keep of an instance (servers add their own timestamps)."""
    return (i.region, i.zone, i.env, i.appid, i.hostname, i.addrs, i.version, i.metadata or {}, i.status)


async def next_event(it: AsyncIterator[Event], within: float = 5.0) -> Event:
    """The next event of ``it``; fails the test when none comes ``within`` seconds."""
    return await asyncio.wait_for(anext(it), within)


async def close_watch(it: AsyncIterator[Event]) -> None:
    """Close a watch iterator (the contract requires it to have ``aclose()``)."""
    aclose = getattr(it, "aclose", None)
    assert aclose is not None, f"{it!r} has no aclose()"
    await aclose()


async def until(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fails the test after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.005)


class FakeClock:
    """A clock for tests: returns :attr:`now`, which only moves when the test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
