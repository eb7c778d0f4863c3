"""``registry.caller()`` beyond the contract: ``memory://`` end to end, zones, the httpx transport, the
synchronous facade (``SyncRegistry``), and ``DiscoverdRegistry``'s callers reading the client's cache."""

from __future__ import annotations

import asyncio
import collections
import dataclasses

import httpx
import orjson
import pytest

from discoverd import RegistryClosed, SyncRegistry, open_registry
from discoverd.calling.httpx_transport import DiscoverdTransport
from discoverd.client.registry import DiscoverdRegistry
from discoverd.model import Action
from discoverd.testing import fast_config, running_node
from tests.backends.conftest import CLIENT
from tests.calling.conftest import APP, providers, settle


async def test_a_memory_registry_caller_calls_its_providers() -> None:
    async with open_registry("memory://") as registry, providers(10, 10) as (a, b):
        await registry.register(a.instance())
        await registry.register(b.instance())
        caller = registry.caller(balancer="round-robin")
        names = collections.Counter([(await caller.get(APP, "/who")).text() for _ in range(10)])
        assert names == {"p0": 5, "p1": 5}
        assert caller.source.zone == "" and not caller.source.zone_weights(APP)


async def test_zone_option_prefers_that_zone_and_none_means_every_zone() -> None:
    async with open_registry("memory://") as registry, providers(10, 10) as (here, there):
        await registry.register(here.instance())
        await registry.register(dataclasses.replace(there.instance(), zone="sh002"))
        local = registry.caller(zone="sh001", balancer="round-robin")
        anywhere = registry.caller(balancer="round-robin")
        await settle(anywhere, {here.port, there.port})
        assert {(await local.get(APP, "/who")).text() for _ in range(6)} == {"p0"}
        assert {(await anywhere.get(APP, "/who")).text() for _ in range(6)} == {"p0", "p1"}
        await here.stop()  # the preferred zone has no candidate left: the other zone takes over
        assert (await local.get(APP, "/who")).text() == "p1"


async def test_httpx_transport_over_a_registry_caller() -> None:
    async with open_registry("memory://?cache=30") as registry, providers(10) as (only,):
        await registry.register(only.instance())
        transport = DiscoverdTransport(registry.caller())
        async with httpx.AsyncClient(transport=transport) as http:
            r = await http.get(f"http://{APP}/who")
            assert (r.status_code, r.text) == (200, "p0")
            r = await http.get(f"http://{APP}/headers", headers={"X-Request-ID": "abc"})
            assert orjson.loads(r.content)["X-Request-ID"] == "abc"
            with pytest.raises(httpx.ConnectError):
                await http.get("http://nobody.svc/who")


async def test_sync_registry_over_memory() -> None:
    async with providers(10) as (only,):

        def work() -> None:
            with SyncRegistry("memory://") as registry:
                events = registry.watch(APP, timeout=5)
                registry.register(only.instance())
                assert next(events).action is Action.CREATE
                assert [i.hostname for i in registry.get_service(APP)] == ["p0"]
                assert registry.list_services() == [APP]
                caller = registry.caller()
                assert caller.get(APP, "/who").text() == "p0"
                registry.deregister(only.instance())
                assert next(events).action is Action.DELETE
                events.close()
            with pytest.raises(RegistryClosed):
                registry.get_service(APP)

        await asyncio.to_thread(work)


async def test_discoverd_registry_callers_read_the_clients_cache() -> None:
    async with running_node(fast_config()) as node, providers(10) as (only,):
        url = f"discoverd://{node.address}?env=dev&zone=sh001&region=sh&hostname="
        async with (
            DiscoverdRegistry(url + "provider", config=CLIENT) as provider,
            DiscoverdRegistry(url + "consumer", config=CLIENT) as consumer,
        ):
            await provider.register(only.instance())
            caller = consumer.caller()
            assert caller.source.zone == "sh001"  # the backend knows its zone: preferred by default
            assert consumer.caller(zone="sh009").source.zone == "sh009"
            await settle(caller, {only.port})
            got = (await caller.get(APP, "/headers")).json()
            assert got["X-From-Node"] == "consumer"
