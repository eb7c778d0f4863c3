"""grpcio's own xDS client (a child process) calling real gRPC backends resolved through discoverd.

Each test runs a node with its xDS server, real ``grpc.aio`` backends registered over HTTP with
``grpc://127.0.0.1:PORT`` addresses, and one long-lived client process making calls to
``xds:///APPID``; the client reports which backend answered each call. Changes are awaited by
polling with a deadline (:func:`until`), never by sleeping.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from discoverd.grpc import bootstrap
from discoverd.server.xds.server import XdsServer
from discoverd.server.xds.stats import XdsStats
from discoverd.testing import fast_config, running_node
from tests.xds.harness import Registrar, XdsClient, backends, until, xds_client, xds_node


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def only(*names: str) -> Callable[[list[str]], bool]:
    """A check: the answers are exactly these backends (each at least once)."""
    return lambda answers: set(answers) == set(names)


async def test_calls_spread_over_all_up_instances(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("a", "b", "c") as bs:
        reg = Registrar(session, node.address)
        for name, b in bs.items():
            await reg.register("echo", name, b.addr)
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            answers = await until(lambda: client.calls("echo", 30), only("a", "b", "c"), what="all three")
            assert all(answers.count(n) >= 5 for n in "abc"), answers  # round robin, not one favourite


async def test_cancelled_or_waiting_instances_get_no_more_calls(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("a", "b", "c") as bs:
        reg = Registrar(session, node.address)
        for name, b in bs.items():
            await reg.register("echo", name, b.addr)
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            await until(lambda: client.calls("echo", 30), only("a", "b", "c"))
            await reg.cancel("echo", "a")
            await until(lambda: client.calls("echo", 10), lambda got: "a" not in got, what="a gone")
            assert set(await client.calls("echo", 40)) == {"b", "c"}
            await reg.set_status("echo", "b", 2)  # WAITING
            await until(lambda: client.calls("echo", 10), lambda got: "b" not in got, what="b waiting")
            assert set(await client.calls("echo", 40)) == {"c"}
            await reg.set_status("echo", "b", 1)
            await until(lambda: client.calls("echo", 20), only("b", "c"), what="b up again")
            assert bs["a"].calls > 0


async def test_a_new_instance_gets_calls(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("a", "b") as bs:
        reg = Registrar(session, node.address)
        await reg.register("echo", "a", bs["a"].addr)
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            assert set(await client.calls("echo", 10)) == {"a"}
            await reg.register("echo", "b", bs["b"].addr)
            await until(lambda: client.calls("echo", 10), only("a", "b"), what="the new instance")


async def test_own_zone_first_then_fail_over_and_back(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("near", "far1", "far2") as bs:
        reg = Registrar(session, node.address)
        await reg.register("echo", "near", bs["near"].addr, zone="z1")
        await reg.register("echo", "far1", bs["far1"].addr, zone="z2")
        await reg.register("echo", "far2", bs["far2"].addr, zone="z3")
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            assert set(await client.calls("echo", 30)) == {"near"}
            await reg.cancel("echo", "near", zone="z1")
            await until(lambda: client.calls("echo", 20), only("far1", "far2"), what="fail-over")
            await reg.register("echo", "near", bs["near"].addr, zone="z1")
            await until(lambda: client.calls("echo", 10), only("near"), what="back to the own zone")
            assert set(await client.calls("echo", 30)) == {"near"}


async def test_envs_are_isolated(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("dev1", "prod1") as bs:
        reg = Registrar(session, node.address)
        await reg.register("echo", "dev1", bs["dev1"].addr, env="dev")
        await reg.register("echo", "prod1", bs["prod1"].addr, env="prod")
        await reg.register("prod.only", "prod1", bs["prod1"].addr, env="prod")
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            assert set(await client.calls("echo", 30)) == {"dev1"}
            assert await client.calls("prod.only", 1, deadline=0.5) == ["!DEADLINE_EXCEEDED"]
        assert bs["prod1"].calls == 0


async def test_instances_without_a_grpc_address_are_left_out(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("a", "b", "c") as bs:
        reg = Registrar(session, node.address)
        await reg.register("echo", "a", f"http://127.0.0.1:1,{bs['a'].addr}")  # the grpc:// one counts
        await reg.register("echo", "b", f"http://127.0.0.1:{bs['b'].port}")  # no grpc:// address
        await reg.register("echo", "c", f"grpc://localhost:{bs['c'].port}")  # not an IP address
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            assert set(await client.calls("echo", 30)) == {"a"}
        assert bs["b"].calls == bs["c"].calls == 0


async def test_an_unknown_app_fails_fast_then_works_once_registered(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("late") as bs:
        reg = Registrar(session, node.address)
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            started = time.monotonic()
            assert await client.calls("ghost", 1, deadline=1.0) == ["!DEADLINE_EXCEEDED"]
            assert time.monotonic() - started < 5.0
            await reg.register("ghost", "late", bs["late"].addr)
            await until(lambda: client.calls("ghost", 1, deadline=1.0), only("late"), what="registered")
            assert xds.stats().nacks == {"listener": 0, "cluster": 0, "endpoints": 0}


async def test_an_emptied_app_fails_at_once(session: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, xds), backends("a") as bs:
        reg = Registrar(session, node.address)
        await reg.register("echo", "a", bs["a"].addr)
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            assert set(await client.calls("echo", 5)) == {"a"}
            await reg.cancel("echo", "a")
            # an empty assignment, not an absent resource: calls fail at once instead of hanging
            await until(lambda: client.calls("echo", 1, deadline=3.0), only("!UNAVAILABLE"), what="failing")
            await reg.register("echo", "a", bs["a"].addr)
            await until(lambda: client.calls("echo", 3), only("a"), what="back")


async def test_a_bootstrap_from_the_cli_works_as_it_is(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with xds_node() as (node, xds), backends("a") as bs:
        await Registrar(session, node.address).register("echo", "a", bs["a"].addr)
        cmd = [sys.executable, "-m", "discoverd", "xds-bootstrap", "--xds", xds.address]
        cmd += ["--env", "dev", "--zone", "z1", "--region", "r1", "--node-id", "cli-client"]
        out = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, check=True, timeout=30)
        path = tmp_path / "bootstrap.json"
        path.write_bytes(out.stdout)
        async with xds_client(path) as client:
            assert set(await client.calls("echo", 5)) == {"a"}
            assert [c.node_id for c in xds.clients()] == ["cli-client"]
            assert xds.clients()[0].zone == "z1"


async def test_clients_survive_a_registry_restart(session: aiohttp.ClientSession) -> None:
    async with backends("a", "b", "c") as bs:
        async with xds_node() as (node, xds):
            addr, xds_addr = node.address, xds.address
            reg = Registrar(session, addr)
            for name in "ab":
                await reg.register("echo", name, bs[name].addr)
            client = await XdsClient(bootstrap(xds_addr, env="dev", zone="z1")).start()
            await until(lambda: client.calls("echo", 10), only("a", "b"))
        try:
            # down: the client keeps calling the endpoints it has
            assert set(await client.calls("echo", 10)) == {"a", "b"}
            async with xds_node(xds=xds_addr, addr=addr) as (node, xds):
                # back, with an empty registry: the resumed client keeps its endpoints ...
                await until(lambda: stats(xds), lambda s: min(s.acks.values()) > 0, what="resumed")
                assert set(await client.calls("echo", 10)) == {"a", "b"}
                # ... and gets what registers now
                reg = Registrar(session, addr)
                await reg.register("echo", "c", bs["c"].addr)
                await until(lambda: client.calls("echo", 10), only("c"), what="the new registry's content")
                await reg.register("echo", "a", bs["a"].addr)
                await until(lambda: client.calls("echo", 10), only("a", "c"))
        finally:
            await client.stop()


async def stats(xds: XdsServer) -> XdsStats:
    await asyncio.sleep(0.01)
    return xds.stats()


async def test_changes_replicated_from_a_peer_reach_the_clients_of_every_node(
    session: aiohttp.ClientSession,
) -> None:
    async with (
        running_node(fast_config(hostname="A")) as a,
        xds_node(hostname="B", nodes=(a.address,)) as (b, xds),
        backends("one", "two") as bs,
    ):
        on_a = Registrar(session, a.address)
        await on_a.register("echo", "one", bs["one"].addr)
        async with xds_client(bootstrap(xds.address, env="dev", zone="z1")) as client:
            # registered on A, served by B's xDS server from B's own registry
            await until(lambda: client.calls("echo", 5), only("one"), within=10.0, what="replicated")
            await on_a.register("echo", "two", bs["two"].addr)
            await until(lambda: client.calls("echo", 10), only("one", "two"), what="a replicated register")
            await on_a.cancel("echo", "one")
            await until(lambda: client.calls("echo", 10), only("two"), what="a replicated cancel")
        assert b.registry.app("echo", "dev") is not None
