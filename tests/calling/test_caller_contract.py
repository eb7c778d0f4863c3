"""The caller contract, run against every source of instances in ``FLEETS`` (``conftest.py``): the
discoverd client, and each registry backend's ``registry.caller()``. Real HTTP providers on loopback."""

from __future__ import annotations

import asyncio
import collections

import pytest

from discoverd.calling.callee import CalleeConfig, CallRoute
from discoverd.core.balancing import instance_key
from discoverd.core.ejection import Ejector
from tests.calling.conftest import APP, Fleet, candidates, port_of, providers, settle


async def test_calls_spread_by_weight(fleet: Fleet) -> None:
    async with providers(1, 3) as (light, heavy):
        await fleet.add(light)
        await fleet.add(heavy)
        caller = fleet.caller(balancer="round-robin")
        await settle(caller, {light.port, heavy.port})
        names = collections.Counter([(await caller.get(APP, "/who")).text() for _ in range(400)])
        # smooth weighted round robin over a stable list: the shares are exact, up to the cycle in progress
        assert abs(names["p0"] - 100) <= 4 and abs(names["p1"] - 300) <= 4, names


async def test_a_failing_answer_is_retried_on_another_instance(fleet: Fleet) -> None:
    async with providers(10, 10) as (bad, good):
        bad.status = 503
        await fleet.add(bad)
        await fleet.add(good)
        caller = fleet.caller(balancer="round-robin", default=CalleeConfig(max_attempts=3))
        await settle(caller, {bad.port, good.port})
        results = [await caller.get(APP, "/who") for _ in range(6)]
        assert [(r.status, r.text()) for r in results] == [(200, "p1")] * 6
        assert bad.hits["GET"] >= 1 and max(r.attempts for r in results) == 2


async def test_an_unreachable_instance_is_ejected(fleet: Fleet) -> None:
    async with providers(10, 10) as (victim, alive):
        await fleet.add(victim)
        await fleet.add(alive)
        caller = fleet.caller(
            balancer="round-robin", ejector=Ejector(consecutive_failures=2, base_ejection=60)
        )
        await settle(caller, {victim.port, alive.port})
        [victim_key] = [instance_key(i) for i in await candidates(caller) if port_of(i) == victim.port]
        await victim.stop()
        for _ in range(10):  # every call succeeds: the dead one is retried around, then ejected
            assert (await caller.get(APP, "/who")).text() == "p1"
        assert caller.ejector.ejected(asyncio.get_running_loop().time()) == [victim_key]
        assert [port_of(i) for i in await candidates(caller)] == [alive.port]


async def test_context_headers_are_relayed_and_identity_added(fleet: Fleet) -> None:
    async with providers(10) as (only,):
        await fleet.add(only)
        caller = fleet.caller(from_app="shop", from_node="shop-1", default=CalleeConfig(token="s3cret"))
        await settle(caller, {only.port})
        incoming = {"X-Request-ID": "req-1", "x-real-ip": "1.2.3.4", "Cookie": "private"}
        got = (await caller.get(APP, "/headers", context=incoming)).json()
        assert (got["X-Request-ID"], got["X-Real-IP"], got["Access-Token"]) == ("req-1", "1.2.3.4", "s3cret")
        assert (got["X-From-App"], got["X-From-Node"]) == ("shop", "shop-1")
        assert "Cookie" not in got


async def test_route_hook_rewrites_the_call(fleet: Fleet) -> None:
    async with providers(10) as (only,):
        await fleet.add(only)
        caller = fleet.caller(route=lambda r: CallRoute(APP, "POST", "/who", b""))
        await settle(caller, {only.port})
        assert (await caller.get("alias.svc", "/nowhere")).text() == "p0"
        assert only.hits == {"POST": 1}


async def test_a_deregistered_instance_is_no_longer_called(fleet: Fleet) -> None:
    async with providers(10, 10) as (leaving, staying):
        await fleet.add(leaving)
        await fleet.add(staying)
        caller = fleet.caller(balancer="round-robin")
        await settle(caller, {leaving.port, staying.port})
        await fleet.remove(leaving)
        await settle(caller, {staying.port})
        before = leaving.hits["GET"]
        assert {(await caller.get(APP, "/who")).text() for _ in range(10)} == {"p1"}
        assert leaving.hits["GET"] == before


async def test_the_last_list_is_served_while_the_backend_is_down(fragile_fleet: Fleet) -> None:
    async with providers(10, 10) as (a, b):
        await fragile_fleet.add(a)
        await fragile_fleet.add(b)
        caller = fragile_fleet.caller(balancer="round-robin")
        await settle(caller, {a.port, b.port})
        await fragile_fleet.go_down()
        names = collections.Counter([(await caller.get(APP, "/who")).text() for _ in range(10)])
        assert names == {"p0": 5, "p1": 5}


async def test_an_unknown_app_fails_the_call_not_the_caller(fleet: Fleet) -> None:
    async with providers(10) as (only,):
        await fleet.add(only)
        caller = fleet.caller()
        await settle(caller, {only.port})
        with pytest.raises(Exception, match="no instance left"):
            await caller.get("nobody.svc", "/who")
        assert (await caller.get(APP, "/who")).text() == "p0"
