"""Fixtures of the caller tests: HTTP providers on loopback, and one "fleet" per source of instances.

A :class:`Fleet` is what the caller contract suite runs against: a way to make providers visible
(``add``), withdraw them (``remove``), make a caller, and — where the backend is a separate thing
that can fail — take the backend down. :data:`FLEETS` lists them, built like the backend contract
suite's (``tests/backends/conftest.py``):

* ``client`` — ``AsyncClient.caller()`` on a real node, providers registered by another client (the
  node runs in the test's loop, or — for :func:`fragile_fleet`, which kills it — in a child process);
* ``memory`` / ``cached`` — ``registry.caller()`` of a ``MemoryRegistry`` / ``CachedRegistry`` over one,
  providers registered in the same registry (it is in-process);
* ``discoverd`` — ``DiscoverdRegistry.caller()`` on a real node, providers registered by another one;
* ``redis`` — ``RedisRegistry.caller()`` on a real redis-server, providers registered by another one
  (so the consumer reads them back from Redis as the protocol carries them);
* ``gossip`` — ``GossipRegistry.caller()`` of one memberlist node, providers registered on another
  node joined to it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from discoverd.backends.base import Registry
from discoverd.backends.cache import CachedRegistry
from discoverd.backends.gossip.registry import GossipRegistry
from discoverd.backends.memory import MemoryRegistry
from discoverd.backends.redis import RedisRegistry, RedisState
from discoverd.calling.caller import AsyncCaller
from discoverd.client.async_client import AsyncClient
from discoverd.client.registration import AsyncRegistration
from discoverd.client.registry import DiscoverdRegistry
from discoverd.model import Instance
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.backends.conftest import CLIENT, REDIS
from tests.backends.redis_server import RedisServer, redis_server
from tests.helpers import eventually

APP = "pay.svc"
FLEETS = ["client", "memory", "cached", "discoverd", "redis", "gossip"]
#: Fleets whose backend is a separate server the test can stop.
CAN_GO_DOWN = {"client", "discoverd", "redis"}


@dataclass
class Provider:
    """An HTTP server on 127.0.0.1 (OS-assigned port, kept across restarts) answering as ``name``.

    ``GET /who`` answers ``status`` with the name; ``/headers`` echoes the request headers as JSON.
    """

    name: str
    weight: int = 10
    status: int = 200
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    port: int = 0
    runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        async def who(request: web.Request) -> web.Response:
            self.hits[request.method] += 1
            return web.Response(status=self.status, text=self.name)

        async def headers(request: web.Request) -> web.Response:
            self.hits[request.method] += 1
            return web.json_response(dict(request.headers))

        app = web.Application()
        app.router.add_route("*", "/who", who)
        app.router.add_get("/headers", headers)
        return app

    async def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def instance(self, appid: str = APP) -> Instance:
        return Instance(
            region="sh",
            zone="sh001",
            env="dev",
            appid=appid,
            hostname=self.name,
            addrs=[f"http://{self.addr}"],
            metadata={"weight": str(self.weight)},
        )


@contextlib.asynccontextmanager
async def providers(*weights: int) -> AsyncIterator[list[Provider]]:
    """Started providers ``p0``, ``p1``… with these weights; stopped on exit."""
    items = [Provider(f"p{i}", weight=w) for i, w in enumerate(weights)]
    try:
        for p in items:
            await p.start()
        yield items
    finally:
        for p in items:
            await p.stop()


class Fleet:
    """Providers made visible through one backend, and callers reading them (see the module docstring)."""

    name = ""

    async def add(self, provider: Provider) -> None:
        raise NotImplementedError

    async def remove(self, provider: Provider) -> None:
        raise NotImplementedError

    def caller(self, **options: Any) -> AsyncCaller:
        raise NotImplementedError

    async def go_down(self) -> None:
        """Stop the backend and return once the consumer noticed (only for :data:`CAN_GO_DOWN`)."""
        raise NotImplementedError


class RegistryFleet(Fleet):
    """Callers of ``consumer.caller()``; providers registered through ``provider`` (may be the same)."""

    def __init__(self, name: str, consumer: Registry, provider: Registry) -> None:
        self.name = name
        self.consumer = consumer
        self.provider = provider
        self.down: Callable[[], Awaitable[None]] | None = None

    async def add(self, provider: Provider) -> None:
        await self.provider.register(provider.instance())

    async def remove(self, provider: Provider) -> None:
        await self.provider.deregister(provider.instance())

    def caller(self, **options: Any) -> AsyncCaller:
        return self.consumer.caller(**options)

    async def go_down(self) -> None:
        assert self.down is not None, f"{self.name} cannot be taken down"
        await self.down()


class ClientFleet(Fleet):
    """Callers of ``AsyncClient.caller()``; providers registered by another client."""

    name = "client"

    def __init__(self, consumer: AsyncClient, provider: AsyncClient, kill: Callable[[], None] | None) -> None:
        self.consumer = consumer
        self.provider = provider
        self.kill = kill
        self.regs: dict[str, AsyncRegistration] = {}

    async def add(self, provider: Provider) -> None:
        ins = provider.instance()
        self.regs[provider.name] = await self.provider.register(
            APP, ins.addrs, metadata=ins.metadata, hostname=provider.name
        )

    async def remove(self, provider: Provider) -> None:
        await self.regs.pop(provider.name).close()

    def caller(self, **options: Any) -> AsyncCaller:
        return self.consumer.caller(**options)

    async def go_down(self) -> None:
        await kill_node(self.kill, self.consumer)


async def kill_node(kill: Callable[[], None] | None, consumer: AsyncClient) -> None:
    assert kill is not None, "this node runs in the test's loop: open the fleet with separate=True"
    kill()
    await eventually(lambda: not consumer.connected.is_set(), 10, "the consumer to lose the node")


#: ``discoverd serve`` flags giving the child-process node the identity of ``fast_config()``.
NODE_FLAGS = ["--env", "dev", "--zone", "sh001", "--region", "sh", "--hostname", "node-test"]


@contextlib.asynccontextmanager
async def open_fleet(name: str, *, separate: bool = False) -> AsyncIterator[Fleet]:
    """The fleet ``name`` with whatever it needs running; everything is stopped on exit. With
    ``separate``, a discoverd node runs in a child process (so that it can be killed)."""
    if name in ("client", "discoverd") and separate:
        with ServerProcess(NODE_FLAGS) as proc:
            async with _node_fleet(name, proc.addr, proc.kill) as fleet:
                yield fleet
        return
    if name in ("client", "discoverd"):
        async with running_node(fast_config()) as node, _node_fleet(name, node.address, None) as fleet:
            yield fleet
        return
    if name == "redis":
        with redis_server() as server:
            async with _redis_fleet(server) as fleet:
                yield fleet
        return
    if name == "gossip":
        async with _gossip_fleet() as fleet:
            yield fleet
        return
    registry = MemoryRegistry() if name == "memory" else CachedRegistry(MemoryRegistry(), own=True)
    async with registry:
        yield RegistryFleet(name, registry, registry)


@contextlib.asynccontextmanager
async def _node_fleet(name: str, address: str, kill: Callable[[], None] | None) -> AsyncIterator[Fleet]:
    def client(host: str) -> AsyncClient:
        return AsyncClient([address], env="dev", zone="sh001", region="sh", hostname=host, config=CLIENT)

    if name == "client":
        async with client("provider") as provider, client("consumer") as consumer:
            yield ClientFleet(consumer, provider, kill)
        return
    url = f"discoverd://{address}?env=dev&zone=sh001&region=sh&hostname="
    async with (
        DiscoverdRegistry(url + "provider", config=CLIENT) as provider_reg,
        DiscoverdRegistry(url + "consumer", config=CLIENT) as consumer_reg,
    ):
        fleet = RegistryFleet(name, consumer_reg, provider_reg)

        async def down() -> None:
            await kill_node(kill, consumer_reg.client)

        fleet.down = down
        yield fleet


@contextlib.asynccontextmanager
async def _redis_fleet(server: RedisServer) -> AsyncIterator[Fleet]:
    async with (
        RedisRegistry(server.url(), config=REDIS) as provider_reg,
        RedisRegistry(server.url(), config=REDIS) as consumer_reg,
    ):
        fleet = RegistryFleet("redis", consumer_reg, provider_reg)

        async def down() -> None:
            server.kill()
            await eventually(
                lambda: consumer_reg.state is RedisState.DISCONNECTED, 10, "the consumer to notice"
            )

        fleet.down = down
        yield fleet


@contextlib.asynccontextmanager
async def _gossip_fleet() -> AsyncIterator[Fleet]:
    async with GossipRegistry("gossip://127.0.0.1:0?name=consumer") as consumer_reg:
        await consumer_reg.start()
        seed = f"127.0.0.1:{consumer_reg.node.addr[1]}"
        async with GossipRegistry(f"gossip://127.0.0.1:0?name=provider&join={seed}") as provider_reg:
            await provider_reg.start()
            await eventually(lambda: consumer_reg.node.num_members() == 2, 10, "the nodes to meet")
            yield RegistryFleet("gossip", consumer_reg, provider_reg)


@pytest.fixture(params=FLEETS)
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    """Each fleet of :data:`FLEETS`, stopped after the test."""
    async with open_fleet(request.param) as f:
        yield f


@pytest.fixture(params=sorted(CAN_GO_DOWN))
async def fragile_fleet(request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    """Each fleet whose backend can be taken down."""
    async with open_fleet(request.param, separate=True) as f:
        yield f


async def candidates(caller: AsyncCaller, appid: str = APP) -> list[Instance]:
    """What ``caller`` would choose from for ``appid`` right now."""
    return await caller.candidates(appid, caller.config_for(appid))


async def settle(caller: AsyncCaller, ports: set[int], appid: str = APP, within: float = 10.0) -> None:
    """Wait until ``caller`` sees exactly the providers on ``ports`` (polling, bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        seen = {port_of(i) for i in await candidates(caller, appid)}
        if seen == ports:
            return
        assert loop.time() < deadline, f"the caller sees {seen}, expected {ports}"
        await asyncio.sleep(0.02)


def port_of(ins: Instance) -> int:
    """The port of the instance's first address."""
    return int(ins.addrs[0].rsplit(":", 1)[1].split("/", 1)[0])
