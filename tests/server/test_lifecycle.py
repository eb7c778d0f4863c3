"""Eviction, the renew guard, start-up protect, self-registration and graceful stop, with short timings."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from discoverd.server.runner import Node
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.helpers import Wire, eventually


def hosts(node: Node, appid: str) -> set[str]:
    app = node.registry.app(appid, "dev")
    return set() if app is None else {i.hostname for i in app.instances()}


async def test_silent_instance_is_evicted_and_pollers_woken(http: aiohttp.ClientSession) -> None:
    cfg = fast_config(evict_interval=0.2, evict_after=0.5, protect_threshold=0.01, self_renew_interval=0.1)
    async with running_node(cfg) as node:
        wire = Wire(http, node.address)
        await wire.register("a", "dead")
        await wire.register("a", "alive")
        data, _ = await wire.get("fetch", {"env": "dev", "appid": "a", "status": "1"})
        latest = data["data"]["latest_timestamp"]
        poll = asyncio.ensure_future(
            wire.get(
                "polls",
                [("env", "dev"), ("hostname", "c"), ("appid", "a"), ("latest_timestamp", str(latest))],
            )
        )
        renew = {"zone": "sh001", "env": "dev", "appid": "a", "hostname": "alive"}
        deadline = time.monotonic() + 5
        while "dead" in hosts(node, "a"):
            assert time.monotonic() < deadline, "dead instance never evicted"
            body, _ = await wire.post("renew", renew)
            assert body["code"] == 0, "alive instance was evicted"
            await asyncio.sleep(0.05)
        assert hosts(node, "a") == {"alive"}
        answer, _ = await poll
        assert answer["code"] == 0
        assert [i["hostname"] for i in answer["data"]["a"]["instances"]["sh001"]] == ["alive"]
        assert "node-test" in hosts(node, "infra.discovery")  # self-renew keeps the node registered


async def test_guard_suspends_eviction_until_the_ceiling(http: aiohttp.ClientSession) -> None:
    cfg = fast_config(evict_interval=0.1, evict_after=0.2, evict_ceiling=1.0, self_renew_interval=5.0)
    async with running_node(cfg) as node:
        wire = Wire(http, node.address)
        for i in range(5):
            await wire.register("a", f"h{i}")
        await eventually(lambda: node.registry.guard.protecting, what="protect")
        registered = time.monotonic()
        assert len(hosts(node, "a")) == 5  # silent past evict_after, but protected
        await eventually(lambda: not hosts(node, "a"), within=10, what="ceiling eviction")
        assert time.monotonic() - registered >= 0.5


async def test_eviction_is_capped_per_pass(http: aiohttp.ClientSession) -> None:
    cfg = fast_config(evict_interval=0.3, evict_after=0.05, protect_threshold=0.5, self_renew_interval=5.0)
    async with running_node(cfg) as node:
        wire = Wire(http, node.address)
        for i in range(9):
            await wire.register("a", f"h{i}")
        node.registry.guard.recount(0)  # no expected renews: never protected
        sizes: list[int] = []

        def shrunk() -> bool:
            sizes.append(node.registry.size)
            return sizes[-1] <= 5

        await eventually(shrunk, within=10)
        # 10 instances with share 0.5 → at most 5 per pass: never all at once
        assert all(s >= 5 for s in sizes)


async def test_startup_protect_refuses_reads_then_serves(http: aiohttp.ClientSession) -> None:
    cfg = fast_config(enable_protect=True, protect_duration=0.6)
    async with running_node(cfg) as node:
        wire = Wire(http, node.address)
        started = time.monotonic()
        for path, params in [
            ("fetch", {"env": "dev", "appid": "a", "status": "1"}),
            ("fetchs", {"env": "dev", "appid": "a", "status": "1"}),
            ("fetch/all", {}),
            ("poll", {"env": "dev", "appid": "a", "hostname": "c"}),
            ("polls", {"env": "dev", "appid": "a", "hostname": "c", "latest_timestamp": "0"}),
            ("nodes", {}),
        ]:
            body, resp = await wire.get(path, params)
            assert body == {"code": -500, "message": "-500", "ttl": 1}, path
            assert resp.status == 200 and resp.headers["kratos-status-code"] == "-500"
        assert (await wire.register("a"))["code"] == 0  # writes work
        assert time.monotonic() - started < 0.6, "machine too slow for this test's timings"
        deadline = time.monotonic() + 5
        while True:
            body, _ = await wire.get("fetch", {"env": "dev", "appid": "a", "status": "1"})
            if body["code"] != -500:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert body["code"] == 0
        assert time.monotonic() - started >= 0.55


async def test_self_registration_is_reregistered_after_cancel(http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(self_renew_interval=0.1)) as node:
        wire = Wire(http, node.address)
        body, _ = await wire.post(
            "cancel", {"zone": "sh001", "env": "dev", "appid": "infra.discovery", "hostname": "node-test"}
        )
        assert body["code"] == 0
        await eventually(lambda: hosts(node, "infra.discovery") == {"node-test"}, what="self re-register")


async def metrics(http: aiohttp.ClientSession, addr: str) -> str:
    async with http.get(f"http://{addr}/metrics") as r:
        assert r.status == 200
        return await r.text()


async def test_metrics_reports_gauges(node: Node, http: aiohttp.ClientSession) -> None:
    await Wire(http, node.address).register("a")
    text = await metrics(http, node.address)
    assert "discoverd_instances 2.0\n" in text  # a + infra.discovery
    assert "discoverd_apps 2.0\n" in text
    assert "discoverd_held_polls 0.0\n" in text


async def test_graceful_stop_answers_held_polls_and_exits_quickly() -> None:
    with ServerProcess(["--hostname", "graceful", "--env", "dev", "--poll-hold", "60"]) as srv:
        async with aiohttp.ClientSession() as http:
            wire = Wire(http, srv.addr)
            await wire.register("a")
            body, _ = await wire.get("fetch", {"env": "dev", "appid": "a", "status": "1"})
            latest = str(body["data"]["latest_timestamp"])
            q = [("env", "dev"), ("hostname", "c"), ("appid", "a"), ("latest_timestamp", latest)]
            polls = [asyncio.ensure_future(wire.get("polls", q)) for _ in range(5)]
            deadline = time.monotonic() + 5
            while "discoverd_held_polls 5.0\n" not in await metrics(http, srv.addr):
                assert time.monotonic() < deadline, "polls never held"
                await asyncio.sleep(0.01)
            started = time.monotonic()
            assert srv.proc is not None
            srv.proc.terminate()
            answers = await asyncio.wait_for(asyncio.gather(*polls), 5)
            code = await asyncio.to_thread(srv.proc.wait, 5)
            elapsed = time.monotonic() - started
        assert [a[0]["code"] for a in answers] == [-304] * 5
        assert code == 0
        assert elapsed < 2.0
        assert "5 held poll(s) answered -304" in srv.stderr_text()
