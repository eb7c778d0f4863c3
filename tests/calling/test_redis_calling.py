"""Calling through ``redis://`` against a real redis-server, with providers written by hand in the
apigo/ssgo protocol (``HSET`` + ``SETEX`` + ``PUBLISH``, as a Go provider does) and serving real HTTP on
loopback: weights, removal messages, the reaper's announcement, the CLI and the synchronous facade."""

from __future__ import annotations

import asyncio
import collections
import math
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from discoverd.backends.redis import RedisRegistry
from discoverd.backends.redis_client import RedisClient
from discoverd.client.open import open_registry
from discoverd.client.sync_registry import SyncRegistry
from tests.backends.redis_server import RedisServer, redis_server
from tests.calling.conftest import APP, providers, settle

CHANNEL = f"CH_{APP}".encode()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[Any]:
    """A plain client on db 15, the way a Go peer sees the registry."""
    client = aioredis.Redis(port=server.port, db=15)
    yield client
    await client.aclose()


@pytest.fixture
async def consumer(server: RedisServer) -> AsyncIterator[RedisRegistry]:
    registry = open_registry(server.url())
    assert isinstance(registry, RedisRegistry)
    async with registry:
        yield registry


async def go_register(raw: Any, addr: str, weight: int, *, key_ttl: int = 10) -> None:
    """What a Go provider writes to register (and every heartbeat, the ``SETEX``)."""
    await raw.hset(APP, addr, str(weight))
    await raw.execute_command("SETEX", f"{APP}_{addr}", key_ttl, "1")
    await raw.publish(f"CH_{APP}", f"{addr} {weight}")


async def subscribed(raw: Any) -> Any:
    """A pub/sub connection subscribed to the app's channel, confirmed."""
    pubsub = raw.pubsub()
    await pubsub.subscribe(f"CH_{APP}")
    async with asyncio.timeout(5):
        while (msg := await pubsub.get_message(timeout=1.0)) is None or msg["type"] != "subscribe":
            pass
    return pubsub


async def next_message(pubsub: Any, within: float = 5.0) -> tuple[bytes, bytes]:
    async with asyncio.timeout(within):
        while (msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)) is None:
            pass
    return msg["channel"], msg["data"]


async def test_calls_spread_by_redis_weight(raw: Any, consumer: RedisRegistry) -> None:
    async with providers(10, 10) as (light, heavy):
        await go_register(raw, light.addr, 100)
        await go_register(raw, heavy.addr, 300)
        caller = consumer.caller(balancer="random")
        await settle(caller, {light.port, heavy.port})
        calls = 4000
        sem = asyncio.Semaphore(16)
        names: collections.Counter[str] = collections.Counter()

        async def one() -> None:
            async with sem:
                names[(await caller.get(APP, "/who")).text()] += 1

        await asyncio.gather(*(one() for _ in range(calls)))
        p = 0.25  # weights 100 : 300; a binomial draw per call, so a 4.5-sigma band
        band = 4.5 * math.sqrt(calls * p * (1 - p))
        assert abs(names["p0"] - calls * p) <= band and names["p0"] + names["p1"] == calls, names


async def test_a_removal_message_stops_calls_within_a_second(raw: Any, consumer: RedisRegistry) -> None:
    async with providers(10, 10) as (leaving, staying):
        await go_register(raw, leaving.addr, 100)
        await go_register(raw, staying.addr, 100)
        caller = consumer.caller(balancer="round-robin")
        await settle(caller, {leaving.port, staying.port})
        await raw.hdel(APP, leaving.addr)  # a Go provider stopping: HDEL, DEL, PUBLISH "<addr> 0"
        await raw.delete(f"{APP}_{leaving.addr}")
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await raw.publish(f"CH_{APP}", f"{leaving.addr} 0")
        await settle(caller, {staying.port}, within=1.0)
        assert loop.time() - sent < 1.0
        before = leaving.hits["GET"]
        assert {(await caller.get(APP, "/who")).text() for _ in range(10)} == {"p1"}
        assert leaving.hits["GET"] == before


async def test_a_killed_provider_is_reaped_and_announced(raw: Any, consumer: RedisRegistry) -> None:
    pubsub = await subscribed(raw)
    async with providers(10, 10) as (killed, alive):
        await go_register(raw, killed.addr, 100, key_ttl=1)  # then killed: its key lapses, nobody publishes
        await go_register(raw, alive.addr, 100)
        assert [await next_message(pubsub) for _ in range(2)] == [
            (CHANNEL, f"{killed.addr} 100".encode()),
            (CHANNEL, f"{alive.addr} 100".encode()),
        ]
        caller = consumer.caller()
        await settle(caller, {killed.port, alive.port})
        # the consumer's reaper finds the key gone, deletes the field and tells every consumer
        assert await next_message(pubsub, within=5) == (CHANNEL, f"{killed.addr} 0".encode())
        assert await raw.hexists(APP, killed.addr) == 0
        await settle(caller, {alive.port}, within=1.0)
    await pubsub.aclose()


async def test_two_reapers_announce_a_dead_field_once(server: RedisServer, raw: Any) -> None:
    pubsub = await subscribed(raw)
    await raw.hset(APP, "10.0.0.9:80", "100")  # a field without its liveness key: dead
    first, second = (RedisClient({"port": server.port, "db": 15}, timeout=2) for _ in range(2))
    try:
        results = await asyncio.gather(
            first.reap([(APP, "10.0.0.9:80")]), second.reap([(APP, "10.0.0.9:80")])
        )
        assert sorted(len(r.announced) for r in results) == [0, 1]
        assert [r.gone for r in results] == [[(APP, "10.0.0.9:80")]] * 2
        await raw.publish(f"CH_{APP}", "marker 1")
        assert await next_message(pubsub) == (CHANNEL, b"10.0.0.9:80 0")
        assert await next_message(pubsub) == (CHANNEL, b"marker 1")  # no second announcement before it
        await go_register(raw, "10.0.0.8:80", 100)  # alive: the reaper leaves it alone
        assert (await first.reap([(APP, "10.0.0.8:80")])).gone == []
        assert await raw.hexists(APP, "10.0.0.8:80") == 1
    finally:
        await first.aclose()
        await second.aclose()
        await pubsub.aclose()


async def test_call_cli_through_a_redis_registry(server: RedisServer, raw: Any) -> None:
    async with providers(10) as (only,):
        await go_register(raw, only.addr, 100)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "discoverd", "call", APP, "/who", "--registry", server.url(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        assert out == b"p0"
        assert f"HTTP 200 from {only.addr}".encode() in err


async def test_sync_caller_through_a_redis_registry(server: RedisServer, raw: Any) -> None:
    async with providers(10) as (only,):
        await go_register(raw, only.addr, 100)

        def work() -> tuple[int, str, list[str]]:
            with SyncRegistry(server.url()) as registry:
                result = registry.caller().get(APP, "/who")
                return result.status, result.text(), [i.hostname for i in registry.get_service(APP)]

        assert await asyncio.to_thread(work) == (200, "p0", [only.addr])
