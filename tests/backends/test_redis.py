"""The Redis backend against a real redis-server: wire layout byte for byte, Go-style peers, the reaper,
two processes, Redis killed and restarted, many apps, static mode, URLs. (The interface contract runs in
test_contract.py.) Raw Redis access goes through redis.asyncio, as a Go peer would write and read."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from discoverd import ConfigError, Unavailable, open_registry
from discoverd.backends.redis import RedisConfig, RedisRegistry, RedisState, parse_redis_url
from discoverd.backends.redis_state import node_addr, node_weight, parse_message
from discoverd.errors import BadRequest
from discoverd.model import Action, Event, Instance
from tests.backends.conftest import REDIS, close_watch, inst, next_event, until
from tests.backends.redis_server import RedisServer, redis_server

ADDR = "10.0.0.1:8000"


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


def node(app: str, addr: str, weight: int) -> Instance:
    """What a node written by a Go peer reads back as."""
    return Instance(
        zone="", env="", appid=app, hostname=addr, addrs=[f"http://{addr}"], metadata={"weight": str(weight)}
    )


async def messages(pubsub: Any, n: int, within: float = 5.0) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg:
                out.append((msg["channel"], msg["data"]))
    return out


async def go_register(raw: Any, app: str, addr: str, weight: int) -> None:
    await raw.hset(app, addr, str(weight))
    await raw.execute_command("SETEX", f"{app}_{addr}", 10, "1")
    await raw.publish(f"CH_{app}", f"{addr} {weight}")


async def test_key_layout_and_messages_byte_for_byte(server: RedisServer, raw: Any) -> None:
    pubsub = raw.pubsub()
    await pubsub.subscribe("CH_demo.svc")
    await messages_confirmed(pubsub)
    reg = RedisRegistry(server.url(), config=REDIS)  # no db in the URL: 15
    await reg.register(inst("h1"))  # weight "10" in metadata
    await reg.register(
        Instance(zone="z", env="e", appid="demo.svc", hostname="h2", addrs=["grpc://10.0.0.2:9000"])
    )
    assert await raw.hgetall("demo.svc") == {b"10.0.0.1:8000": b"10", b"10.0.0.2:9000": b"100"}
    assert await raw.get("demo.svc_10.0.0.1:8000") == b"1"
    assert 9 <= await raw.ttl("demo.svc_10.0.0.1:8000") <= 10
    assert await raw.get("demo.svc_10.0.0.2:9000") == b"1"
    assert sorted(await raw.keys("*")) == [b"demo.svc", b"demo.svc_10.0.0.1:8000", b"demo.svc_10.0.0.2:9000"]
    assert await messages(pubsub, 2) == [
        (b"CH_demo.svc", b"10.0.0.1:8000 10"),
        (b"CH_demo.svc", b"10.0.0.2:9000 100"),
    ]
    await reg.deregister(inst("h1"))
    assert await raw.hgetall("demo.svc") == {b"10.0.0.2:9000": b"100"}
    assert await raw.exists("demo.svc_10.0.0.1:8000") == 0
    assert await messages(pubsub, 1) == [(b"CH_demo.svc", b"10.0.0.1:8000 0")]
    await reg.aclose()  # graceful: the remaining registration goes too
    assert await raw.keys("*") == []
    assert await messages(pubsub, 1) == [(b"CH_demo.svc", b"10.0.0.2:9000 0")]
    other_db = aioredis.Redis(port=server.port, db=0)
    assert await other_db.dbsize() == 0
    await other_db.aclose()
    await pubsub.aclose()


async def messages_confirmed(pubsub: Any) -> None:
    async with asyncio.timeout(5):
        while (msg := await pubsub.get_message(timeout=1.0)) is None or msg["type"] != "subscribe":
            pass


async def test_consumer_follows_go_written_nodes_and_reaps_dead_fields(server: RedisServer, raw: Any) -> None:
    await go_register(raw, "go.svc", "10.1.0.1:80", 100)
    await raw.hset("go.svc", "10.1.0.9:80", "100")  # a crashed provider: field without liveness key
    reg = RedisRegistry(server.url(db=15), config=REDIS)
    w = reg.watch("go.svc")
    assert await reg.get_service("go.svc") == [node("go.svc", "10.1.0.1:80", 100)]
    assert await raw.hexists("go.svc", "10.1.0.9:80") == 0  # the consumer HDELs dead fields
    await go_register(raw, "go.svc", "10.1.0.2:80", 50)
    assert await next_event(w) == Event(Action.CREATE, node("go.svc", "10.1.0.2:80", 50))
    await go_register(raw, "go.svc", "10.1.0.2:80", 70)
    assert await next_event(w) == Event(Action.UPDATE, node("go.svc", "10.1.0.2:80", 70))
    await raw.publish("CH_go.svc", "garbage")  # ignored
    await raw.publish("CH_go.svc", "10.1.0.1:80 0")  # weight 0 removes
    assert await next_event(w) == Event(Action.DELETE, node("go.svc", "10.1.0.1:80", 100))
    assert [i.hostname for i in await reg.get_service("go.svc")] == ["10.1.0.2:80"]
    await close_watch(w)
    await reg.aclose()


async def test_heartbeat_readds_a_field_deleted_behind_its_back(server: RedisServer, raw: Any) -> None:
    reg = RedisRegistry(server.url(), config=RedisConfig(heartbeat=0.2))
    await reg.register(inst("h1"))
    await raw.expire(f"demo.svc_{ADDR}", 3)
    await until_async(lambda: raw.ttl(f"demo.svc_{ADDR}"), lambda ttl: ttl > 5, "the SETEX refresh")
    pubsub = raw.pubsub()
    await pubsub.subscribe("CH_demo.svc")
    await messages_confirmed(pubsub)
    await raw.hdel("demo.svc", ADDR)  # what a seed consumer does after 10 failures
    assert await messages(pubsub, 1) == [(b"CH_demo.svc", b"10.0.0.1:8000 10")]
    assert await raw.hget("demo.svc", ADDR) == b"10"
    await pubsub.aclose()
    await reg.aclose()


async def until_async(read: Any, ok: Any, what: str, within: float = 5.0) -> None:
    """Poll ``await read()`` until ``ok(value)``; fails the test after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not ok(value := await read()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.02)


CHILD = """
import asyncio, sys
from discoverd.backends.redis import RedisRegistry
from discoverd.model import Instance

async def main():
    reg = RedisRegistry(sys.argv[1])
    me = Instance(zone="", env="", appid=sys.argv[2], hostname="child", addrs=["http://" + sys.argv[3]],
                  metadata={"weight": "7"})
    await reg.register(me)
    print("registered", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await reg.aclose()

asyncio.run(main())
"""


def start_child(url: str, app: str, addr: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, app, addr],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    return child


def reap_child(child: subprocess.Popen[str], *, kill: bool = False) -> int:
    """Kill (if asked, or if still running after 10 s) and wait for ``child``; close its pipes."""
    if kill:
        os.kill(child.pid, signal.SIGKILL)
    try:
        code = child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait(5)
    for pipe in (child.stdin, child.stdout):
        if pipe is not None and not pipe.closed:
            pipe.close()
    return code


async def wait_line(child: subprocess.Popen[str], expected: str) -> None:
    assert child.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
    assert line.strip() == expected


async def test_two_processes_register_and_watch(server: RedisServer) -> None:
    reg = RedisRegistry(server.url(), config=REDIS)
    w = reg.watch("two.svc")
    assert await reg.get_service("two.svc") == []
    child = start_child(server.url(), "two.svc", "127.0.0.1:7001")
    try:
        await wait_line(child, "registered")
        assert await next_event(w, 5) == Event(Action.CREATE, node("two.svc", "127.0.0.1:7001", 7))
        assert child.stdin is not None
        child.stdin.close()  # the child deregisters gracefully
        assert await next_event(w, 10) == Event(Action.DELETE, node("two.svc", "127.0.0.1:7001", 7))
    finally:
        code = reap_child(child)
    assert code == 0
    await close_watch(w)
    await reg.aclose()


async def test_provider_killed_disappears_via_reaper_within_10s(server: RedisServer, raw: Any) -> None:
    reg = RedisRegistry(server.url(), config=REDIS)
    w = reg.watch("dead.svc")
    await reg.follow("dead.svc")
    child = start_child(server.url(), "dead.svc", "127.0.0.1:7002")
    try:
        await wait_line(child, "registered")
        assert (await next_event(w, 5)).action is Action.CREATE
        await until_async(lambda: raw.ttl("dead.svc_127.0.0.1:7002"), lambda t: t == 10, "a heartbeat", 3)
    finally:
        reap_child(child, kill=True)  # no goodbye: only the 10 s key tells
    loop = asyncio.get_running_loop()
    killed = loop.time()
    ev = await next_event(w, 13)
    elapsed = loop.time() - killed
    assert ev == Event(Action.DELETE, node("dead.svc", "127.0.0.1:7002", 7))
    assert 8.0 <= elapsed <= 12.5, elapsed  # the key lived its 10 s, the reaper looks once a second
    assert await raw.hexists("dead.svc", "127.0.0.1:7002") == 0
    await close_watch(w)
    await reg.aclose()


async def test_redis_killed_and_restarted(server: RedisServer, raw: Any) -> None:
    provider = RedisRegistry(server.url(), config=REDIS)
    consumer = RedisRegistry(server.url(), config=REDIS)
    await provider.register(inst("a1", port=1001))
    w = consumer.watch("demo.svc")
    assert [i.hostname for i in await consumer.get_service("demo.svc")] == ["10.0.0.1:1001"]

    server.kill()
    await until(lambda: consumer.state is RedisState.DISCONNECTED, 5, "the consumer to notice")
    assert [i.hostname for i in await consumer.get_service("demo.svc")] == ["10.0.0.1:1001"]  # last known
    await provider.register(inst("a2", port=1002))  # accepted while Redis is down, written later
    with pytest.raises(Unavailable):
        await consumer.get_service("never-read.svc")

    server.start()  # same port, empty: no persistence
    await until_async(
        lambda: raw.hgetall("demo.svc"),
        lambda h: h == {b"10.0.0.1:1001": b"10", b"10.0.0.1:1002": b"10"},
        "the provider to re-register both",
    )
    assert await raw.exists("demo.svc_10.0.0.1:1001", "demo.svc_10.0.0.1:1002") == 2
    seen: set[str] = set()
    async with asyncio.timeout(5):
        while "10.0.0.1:1002" not in seen:
            ev = await next_event(w)
            if ev.action is not Action.DELETE:
                seen.add(ev.instance.hostname)
    await until(lambda: consumer.state is RedisState.CONNECTED, 5, "the consumer to reconnect")
    await go_register(raw, "demo.svc", "10.9.9.9:1", 1)  # proves the consumer subscribed again
    while (ev := await next_event(w)).instance.hostname != "10.9.9.9:1":
        pass
    assert ev.action is Action.CREATE
    hosts = [i.hostname for i in await consumer.get_service("demo.svc")]
    assert hosts == ["10.0.0.1:1001", "10.0.0.1:1002", "10.9.9.9:1"]
    await close_watch(w)
    await consumer.aclose()
    await provider.aclose()


async def test_many_apps_and_nodes(server: RedisServer, raw: Any) -> None:
    apps, per_app = 40, 10
    provider = RedisRegistry(server.url(), config=REDIS)
    consumer = RedisRegistry(server.url(), config=REDIS)
    w = consumer.watch()
    await consumer.follow()
    for a in range(apps):
        for n in range(per_app):
            await provider.register(inst(f"h{n}", appid=f"app{a:02}.svc", port=2000 + n))
    created = [await next_event(w) for _ in range(apps * per_app)]
    assert {e.action for e in created} == {Action.CREATE}
    assert len({(e.instance.appid, e.instance.hostname) for e in created}) == apps * per_app
    assert await consumer.list_services() == [f"app{a:02}.svc" for a in range(apps)]
    got = await consumer.get_service("app07.svc")
    assert [i.hostname for i in got] == [f"10.0.0.1:{2000 + n}" for n in range(per_app)]
    assert await raw.hlen("app39.svc") == per_app
    await provider.aclose()
    deleted = [await next_event(w) for _ in range(apps * per_app)]
    assert {e.action for e in deleted} == {Action.DELETE}
    assert await consumer.get_service("app07.svc") == []
    await close_watch(w)
    await consumer.aclose()


async def test_static_registry_without_redis() -> None:
    reg = RedisRegistry.static({"s.svc": {"10.0.0.1:80": 100, "10.0.0.2:80": 50}})
    assert reg.state is RedisState.STATIC
    assert [i.hostname for i in await reg.get_service("s.svc")] == ["10.0.0.1:80", "10.0.0.2:80"]
    w = reg.watch("s.svc")
    reg.set_node("s.svc", "10.0.0.3:80", 10)
    reg.set_node("s.svc", "10.0.0.1:80", 0)
    assert await next_event(w) == Event(Action.CREATE, node("s.svc", "10.0.0.3:80", 10))
    assert await next_event(w) == Event(Action.DELETE, node("s.svc", "10.0.0.1:80", 100))
    await reg.register(inst("local", appid="s.svc"))
    assert (await next_event(w)).instance.hostname == "local"
    assert await reg.list_services() == ["s.svc"]
    await reg.aclose()
    assert reg.state in {RedisState.CLOSED}


async def test_never_reached_redis_is_unavailable_but_registrations_are_kept() -> None:
    from tests.backends.redis_server import free_port

    reg = RedisRegistry(f"redis://127.0.0.1:{free_port()}", config=RedisConfig(timeout=0.5))
    await reg.register(inst("h1"))  # kept, to be written when Redis answers
    with pytest.raises(Unavailable):
        await reg.get_service("demo.svc")
    assert await reg.list_services() == ["demo.svc"]  # from memory
    await reg.aclose()


def test_url_parsing() -> None:
    u = parse_redis_url("redis://:s%40cret@127.0.0.1:6380?app=a.svc,b.svc&app=c.svc&heartbeat=5")
    assert u.connection == {
        "host": "127.0.0.1",
        "port": 6380,
        "db": 15,
        "username": None,
        "password": "s@cret",
    }
    assert u.apps == ("a.svc", "b.svc", "c.svc") and u.config.heartbeat == 5.0
    assert parse_redis_url("redis://h/3").connection["db"] == 3
    for bad in (
        "redis://h?heartbeat=10",
        "redis://h?heartbeat=x",
        "redis://h/x",
        "redis://h?colour=1",
        "redis://",
    ):
        with pytest.raises(ConfigError):
            parse_redis_url(bad)
    assert isinstance(open_registry("redis://127.0.0.1:6379/15?heartbeat=1"), RedisRegistry)


def test_instance_mapping() -> None:
    def with_addrs(*addrs: str, weight: str | None = None) -> Instance:
        meta = None if weight is None else {"weight": weight}
        return Instance(zone="", env="", appid="a", hostname="h", addrs=list(addrs), metadata=meta)

    assert node_addr(with_addrs("tcp://x:1", "https://user@10.0.0.1:8443/p")) == "10.0.0.1:8443"
    assert node_addr(with_addrs("http://10.0.0.1")) == "10.0.0.1:80"
    assert node_addr(with_addrs("grpc://[::1]:9000")) == "[::1]:9000"
    assert node_addr(with_addrs("10.0.0.5:81")) == "10.0.0.5:81"
    with pytest.raises(BadRequest):
        node_addr(with_addrs("grpc://nohost-port"))
    assert node_weight(with_addrs()) == 100 and node_weight(with_addrs(weight="7")) == 7
    for bad in ("0", "-1", "x"):
        with pytest.raises(BadRequest):
            node_weight(with_addrs(weight=bad))
    assert parse_message(b"10.0.0.1:80 5") == ("10.0.0.1:80", 5)
    assert parse_message(b"10.0.0.1:80 0") == ("10.0.0.1:80", 0)
    assert parse_message(b"10.0.0.1:80") is None and parse_message(b"a b c") is None
