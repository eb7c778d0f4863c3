"""The async client against real servers on loopback: propagation, outages, restarts, switching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from discoverd import Unavailable
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.registration import RegState
from discoverd.server.runner import Node
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.helpers import Wire, eventually

FAST = ClientConfig(
    renew_interval=0.3,
    poll_hold=30.0,
    request_timeout=2.0,
    start_timeout=3.0,
    backoff_base=0.05,
    backoff_cap=0.2,
)


def client(*nodes: str, host: str = "c1", config: ClientConfig = FAST) -> AsyncClient:
    return AsyncClient(list(nodes), env="dev", zone="sh001", region="sh", hostname=host, config=config)


@pytest.fixture
async def slow_node() -> AsyncIterator[Node]:
    """A node with the protocol's real 30 s hold: nothing may depend on a poll timing out."""
    async with running_node(fast_config()) as n:
        yield n


async def test_register_is_visible_to_another_client_within_100ms(slow_node: Node) -> None:
    async with client(slow_node.address, host="prov") as prov, client(slow_node.address, host="cons") as cons:
        watch = cons.watch("svc")
        first = asyncio.ensure_future(anext(watch))
        await eventually(lambda: "svc" in [a for a, _ in cons._state.query()], what="watch set")
        await asyncio.sleep(0)  # let the re-poll including svc go out
        t0 = time.monotonic()
        reg = await prov.register("svc", ["http://10.0.0.1:80"], metadata={"weight": "5"}, version="v1")
        got = await asyncio.wait_for(first, 5)
        assert time.monotonic() - t0 < 0.1
        assert [(i.hostname, i.addrs, i.metadata, i.version) for i in got] == [
            ("prov", ["http://10.0.0.1:80"], {"weight": "5"}, "v1")
        ]
        assert await cons.fetch("svc") == got
        await reg.set(status=2)
        assert await asyncio.wait_for(anext(watch), 5) == []
        await reg.set(status=1, metadata={"color": "red"})
        (back,) = await asyncio.wait_for(anext(watch), 5)
        assert back.metadata == {"weight": "5", "color": "red"}
        await reg.close()
        assert reg.state is RegState.CLOSED
        await reg.close()  # idempotent


async def test_close_cancels_and_orphan_does_not(slow_node: Node, http: aiohttp.ClientSession) -> None:
    wire = Wire(http, slow_node.address)
    async with client(slow_node.address) as c:
        r1 = await c.register("a", ["http://x:1"], hostname="h1")
        r2 = await c.register("a", ["http://x:2"], hostname="h2")
        r2.orphan()
        await r1.close()
        data, _ = await wire.get("fetch", {"env": "dev", "appid": "a", "status": "3"})
        assert [i["hostname"] for i in data["data"]["instances"]["sh001"]] == ["h2"]
        assert r2.state is RegState.ORPHANED and not c.registrations


async def test_aclose_cancels_active_registrations(slow_node: Node, http: aiohttp.ClientSession) -> None:
    async with client(slow_node.address) as c:
        await c.register("a", ["http://x:1"])
    data, _ = await Wire(http, slow_node.address).get("fetch", {"env": "dev", "appid": "a", "status": "3"})
    assert data["code"] == -404


async def test_duplicate_registration_is_refused(slow_node: Node) -> None:
    async with client(slow_node.address) as c:
        await c.register("a", ["http://x:1"])
        with pytest.raises(Exception, match="already registered"):
            await c.register("a", ["http://x:2"])


async def test_register_refused_by_server_raises(slow_node: Node) -> None:
    async with client(slow_node.address) as c:
        with pytest.raises(Exception, match="status"):
            await c.register("a", ["http://x:1"], status=7)


async def test_start_fails_clearly_when_no_node_answers() -> None:
    cfg = FAST.replace(start_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match=r"no registry node answered within 0\.5s"):
        async with client("127.0.0.1:9", config=cfg):
            pass
    assert time.monotonic() - t0 < 3


async def test_empty_app_does_not_busy_loop(slow_node: Node, http: aiohttp.ClientSession) -> None:
    """kratos #494: an app with only WAITING instances must not make the client re-poll in a loop."""
    await Wire(http, slow_node.address).register("quiet", status="2")
    async with client(slow_node.address) as c:
        watch = c.watch("quiet")
        assert await asyncio.wait_for(anext(watch), 5) == []
        sent = c.polls_sent
        await asyncio.sleep(0.5)  # measuring a rate: the window is the point, not synchronisation
        assert c.polls_sent - sent <= 1


async def test_new_watch_does_not_wait_for_the_held_poll(
    slow_node: Node, http: aiohttp.ClientSession
) -> None:
    await Wire(http, slow_node.address).register("late")
    async with client(slow_node.address) as c:
        await eventually(c.connected.is_set, what="first poll")
        got = await asyncio.wait_for(anext(c.watch("late")), 2)  # far less than the 30 s hold
        assert [i.hostname for i in got] == ["h1"]


async def test_learns_registry_nodes_own_zone_first(slow_node: Node, http: aiohttp.ClientSession) -> None:
    wire = Wire(http, slow_node.address)
    for host, zone, addr in [("n2", "sh002", "127.0.0.1:2"), ("n3", "sh001", "127.0.0.1:3")]:
        body, _ = await wire.post(
            "register",
            {
                "zone": zone,
                "env": "dev",
                "appid": "infra.discovery",
                "hostname": host,
                "status": "1",
                "addrs": f"http://{addr}",
            },
        )
        assert body["code"] == 0
    async with client(slow_node.address) as c:
        own = sorted(c.nodes.nodes[:2])
        assert own == sorted([slow_node.address, "127.0.0.1:3"])
        assert c.nodes.nodes[2:] == ["127.0.0.1:2"]


async def test_cache_survives_a_killed_server_and_registration_returns_after_restart() -> None:
    with ServerProcess(["--hostname", "s1", "--env", "dev", "--zone", "sh001"]) as srv:
        addr = srv.addr
        async with client(addr, host="prov") as prov, client(addr, host="cons") as cons:
            await prov.register("svc", ["http://10.0.0.1:80"])
            assert [i.hostname for i in await asyncio.wait_for(anext(cons.watch("svc")), 5)] == ["prov"]
            srv.kill()
            await eventually(lambda: not cons.connected.is_set(), what="client notices the outage")
            for _ in range(3):
                assert [i.hostname for i in await cons.fetch("svc")] == ["prov"]
            with ServerProcess(["--hostname", "s1", "--env", "dev", "--zone", "sh001"], addr=addr) as again:
                async with aiohttp.ClientSession() as http:
                    wire = Wire(http, again.addr)
                    deadline = time.monotonic() + 5
                    while True:  # one renew cycle (0.3 s) plus the client's backoff
                        data, _ = await wire.get("fetch", {"env": "dev", "appid": "svc", "status": "1"})
                        if data["code"] == 0:
                            break
                        assert time.monotonic() < deadline, "registration never came back"
                        await asyncio.sleep(0.05)
                assert [i["hostname"] for i in data["data"]["instances"]["sh001"]] == ["prov"]
                assert prov.registrations[0].reregistrations >= 1
                await eventually(cons.connected.is_set, what="poll loop reconnects")
                assert [i.hostname for i in await cons.fetch("svc")] == ["prov"]


async def test_switches_to_the_other_server_on_failure() -> None:
    with (
        ServerProcess(["--hostname", "a", "--zone", "sh001"]) as a,
        ServerProcess(["--hostname", "b", "--zone", "sh001"]) as b,
    ):
        async with client(a.addr, b.addr, host="cons") as cons:
            first = cons.nodes.current
            victim, survivor = (a, b) if first == a.addr else (b, a)
            await eventually(cons.connected.is_set, what="first poll")
            victim.kill()
            async with client(survivor.addr, host="prov") as prov:
                await prov.register("svc", ["http://10.0.0.9:80"])
                got = await asyncio.wait_for(anext(cons.watch("svc")), 5)
            assert [i.hostname for i in got] == ["prov"]
            assert cons.nodes.current == survivor.addr


async def test_watch_waiting_when_fetch_fills_the_cache_is_woken(
    slow_node: Node, http: aiohttp.ClientSession
) -> None:
    await Wire(http, slow_node.address).register("early")
    async with client(slow_node.address) as c:
        watch = asyncio.ensure_future(anext(c.watch("early")))
        await asyncio.sleep(0)  # the watch is now waiting on the unknown app
        assert [i.hostname for i in await c.fetch("early")] == ["h1"]
        got = await asyncio.wait_for(watch, 2)
        assert [i.hostname for i in got] == ["h1"]
