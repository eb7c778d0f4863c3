"""ADS stream state without gRPC: identity, subscriptions, versions, nonces, ACK/NACK, absence, pushes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from discoverd.core.registry_state import RegistryState
from discoverd.model import Instance
from discoverd.server.xds import protos
from discoverd.server.xds.protos import CLUSTER, ENDPOINTS, LISTENER
from discoverd.server.xds.streams import AdsStream, Hub


def request(
    type_url: str,
    *names: str,
    nonce: str = "",
    version: str = "",
    env: str = "",
    zone: str = "",
    node_id: str = "",
    error: str = "",
) -> Any:
    req = protos.DiscoveryRequest(
        type_url=type_url, resource_names=names, response_nonce=nonce, version_info=version
    )
    if node_id:
        req.node.id = node_id
        req.node.locality.zone = zone
        if env:
            req.node.metadata.update({"env": env})
    if error:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req


def ins(host: str, zone: str = "z1", env: str = "dev", appid: str = "app") -> Instance:
    return Instance(zone=zone, env=env, appid=appid, hostname=host, addrs=[f"grpc://10.0.0.1:{len(host)}"])


class Pump:
    """Runs a stream's ``outgoing`` and collects the decoded responses."""

    def __init__(self, stream: AdsStream) -> None:
        self.stream = stream
        self.got: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        async for message in self.stream.outgoing():
            self.got.put_nowait(protos.DiscoveryResponse.FromString(message))

    async def next(self) -> Any:
        return await asyncio.wait_for(self.got.get(), 2.0)

    async def drain(self) -> list[Any]:
        """Everything sent once the stream has nothing left to do (the pump is synchronous after a wake)."""
        for _ in range(5):
            await asyncio.sleep(0)
        out = []
        while not self.got.empty():
            out.append(self.got.get_nowait())
        return out


class Env:
    def __init__(self) -> None:
        self.registry = RegistryState()
        self.hub = Hub(self.registry, default_env="dev", clock=lambda: 1_000_000_000)
        self.now = 1

    def register(self, instance: Instance) -> None:
        self.now += 1
        self.hub.on_event(self.registry.register(instance, self.now))

    def cancel(self, instance: Instance) -> None:
        self.now += 1
        event = self.registry.cancel(instance.appid, instance.env, instance.zone, instance.hostname, self.now)
        assert event is not None
        self.hub.on_event(event)


@contextlib.asynccontextmanager
async def pumped(env: Env, peer: str = "ipv4:127.0.0.1:1") -> AsyncIterator[tuple[AdsStream, Pump]]:
    stream = env.hub.open(peer)
    pump = Pump(stream)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(pump.run())
        try:
            yield stream, pump
        finally:
            env.hub.close(stream)


def names(response: Any) -> list[str]:
    cls = {LISTENER: protos.Listener, CLUSTER: protos.Cluster, ENDPOINTS: protos.ClusterLoadAssignment}
    out = []
    for packed in response.resources:
        msg = cls[response.type_url]()
        packed.Unpack(msg)
        out.append(msg.cluster_name if response.type_url == ENDPOINTS else msg.name)
    return out


def endpoint_count(response: Any) -> int:
    [packed] = response.resources
    cla = protos.ClusterLoadAssignment()
    packed.Unpack(cla)
    return sum(len(loc.lb_endpoints) for loc in cla.endpoints)


async def test_node_identity_comes_from_the_first_request_and_stays() -> None:
    env = Env()
    async with pumped(env) as (stream, pump):
        stream.receive(request(LISTENER, "app", node_id="n1", env="prod", zone="z7"))
        stream.receive(request(CLUSTER, "app", node_id="other", env="dev", zone="z1"))
        await pump.drain()
        [client] = env.hub.clients()
        assert (client.node_id, client.env, client.zone, client.peer) == (
            "n1",
            "prod",
            "z7",
            "ipv4:127.0.0.1:1",
        )
        assert client.watching == {"listener": ("app",), "cluster": ("app",)}
        assert (client.since, client.region, client.nacks) == (1.0, "", 0)


async def test_without_env_metadata_the_servers_env_is_used() -> None:
    env = Env()
    env.register(ins("a"))
    async with pumped(env) as (stream, pump):
        stream.receive(request(LISTENER, "app", node_id="n1", zone="z1"))
        assert names(await pump.next()) == ["app"]
        assert stream.env == "dev"


async def test_an_unknown_app_is_absent_until_it_registers() -> None:
    env = Env()
    async with pumped(env) as (stream, pump):
        stream.receive(request(LISTENER, "ghost", node_id="n1", zone="z1"))
        first = await pump.next()
        assert (names(first), first.version_info, first.type_url) == ([], "1", LISTENER)
        env.register(ins("a", appid="ghost"))
        pushed = await pump.next()
        assert (names(pushed), pushed.version_info) == (["ghost"], "2")
        assert pushed.nonce != first.nonce


async def test_acks_and_nacks_are_counted_and_a_nack_is_not_answered() -> None:
    env = Env()
    env.register(ins("a"))
    async with pumped(env) as (stream, pump):
        stream.receive(request(ENDPOINTS, "app", node_id="n1", zone="z1"))
        sent = await pump.next()
        stream.receive(request(ENDPOINTS, "app", nonce=sent.nonce, version=sent.version_info))
        stream.receive(request(ENDPOINTS, "app", nonce="stale", error="ignored: not the last nonce"))
        stream.receive(request(ENDPOINTS, "app", nonce=sent.nonce, error="bad endpoint"))
        assert await pump.drain() == []
        stats = env.hub.stats()
        assert (stats.acks["endpoints"], stats.nacks["endpoints"], env.hub.clients()[0].nacks) == (1, 1, 1)


async def test_a_name_sent_once_is_never_absent_and_an_emptied_app_gets_an_empty_assignment() -> None:
    env = Env()
    a = ins("a")
    env.register(a)
    async with pumped(env) as (stream, pump):
        for url in (LISTENER, CLUSTER, ENDPOINTS):
            stream.receive(request(url, "app", node_id="n1", zone="z1"))
        assert [names(r) for r in await pump.drain()] == [["app"]] * 3
        env.cancel(a)
        [pushed] = await pump.drain()  # Listener and Cluster unchanged: not re-sent
        assert (pushed.type_url, names(pushed), endpoint_count(pushed)) == (ENDPOINTS, ["app"], 0)


async def test_a_resuming_client_keeps_listener_and_cluster_but_not_an_unknown_assignment() -> None:
    env = Env()
    async with pumped(env) as (stream, pump):
        for url in (LISTENER, CLUSTER, ENDPOINTS):
            stream.receive(request(url, "app", version="17", node_id="n1", zone="z1"))
        got = await pump.drain()
        assert [(r.type_url, names(r), r.version_info) for r in got] == [
            (LISTENER, ["app"], "1"),
            (CLUSTER, ["app"], "1"),
            (ENDPOINTS, [], "1"),  # absent: the client keeps the endpoints it has
        ]
        env.register(ins("a"))
        [pushed] = await pump.drain()
        assert (pushed.type_url, endpoint_count(pushed)) == (ENDPOINTS, 1)


async def test_a_subscription_change_is_answered_and_versions_move_with_content_only() -> None:
    env = Env()
    env.register(ins("a"))
    async with pumped(env) as (stream, pump):
        stream.receive(request(LISTENER, "app", node_id="n1", zone="z1"))
        one = await pump.next()
        stream.receive(request(LISTENER, "app", "ghost", nonce=one.nonce, version="1"))
        two = await pump.next()  # answered although the content is the same
        assert (names(two), two.version_info) == (["app"], "1")
        env.register(ins("b", appid="ghost"))
        three = await pump.next()
        assert (names(three), three.version_info) == (["app", "ghost"], "2")
        assert len({one.nonce, two.nonce, three.nonce}) == 3


async def test_changes_reach_only_the_streams_of_that_app_and_env() -> None:
    env = Env()
    async with pumped(env) as (dev, dev_pump), pumped(env) as (prod, prod_pump):
        dev.receive(request(ENDPOINTS, "app", node_id="d", env="dev", zone="z1"))
        prod.receive(request(ENDPOINTS, "app", node_id="p", env="prod", zone="z1"))
        await dev_pump.drain()
        await prod_pump.drain()
        env.register(ins("a", env="dev"))
        assert [endpoint_count(r) for r in await dev_pump.drain()] == [1]
        assert await prod_pump.drain() == []
        env.register(ins("x", appid="other"))
        assert await dev_pump.drain() == []


async def test_one_change_is_encoded_once_for_many_streams() -> None:
    env = Env()
    env.register(ins("a", zone="z1"))
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(pumped(env)) for _ in range(200)]
        for i, (stream, _) in enumerate(streams):
            stream.receive(request(ENDPOINTS, "app", node_id=f"n{i}", zone="z1" if i % 2 else f"far{i}"))
        for _, pump in streams:
            await pump.drain()
        before = env.hub.stats()
        env.register(ins("b", zone="z2"))
        for _, pump in streams:
            assert [endpoint_count(r) for r in await pump.drain()] == [2]
        after = env.hub.stats()
        # two assignments: one for the z1 clients, one shared by every client without own endpoints
        assert after.encodings - before.encodings == 2
        assert after.pushes["endpoints"] - before.pushes["endpoints"] == 200


async def test_closing_ends_the_stream_and_forgets_it() -> None:
    env = Env()
    stream = env.hub.open("peer")
    stream.receive(request(ENDPOINTS, "app", node_id="n1"))
    messages = stream.outgoing()
    assert await anext(messages)  # the first (empty) answer
    env.hub.close(stream)
    assert [m async for m in messages] == []
    assert env.hub.stats().streams == 0 and env.hub.clients() == []
    env.register(ins("a"))  # no stream left to touch
