"""The dashboard's server side: state content, the state long poll, static files, abort, auth hook."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from discoverd.core.params import Form
from discoverd.model import INFRA_APPID, Instance
from discoverd.server import dashboard, pipeline
from discoverd.server.answers import json_answer
from discoverd.server.dashboard import Dashboard
from discoverd.server.http import HttpConnection, HttpRequest
from discoverd.server.logs import RequestScope
from discoverd.server.replication import NODE_LOST, NODE_UP
from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node
from tests.helpers import Wire, eventually

STATE = "/dashboard/api/state"


def parts(node: Node) -> tuple[Node, Dashboard]:
    dash = node.dashboard
    assert dash is not None
    return node, dash


@pytest.fixture
def wire(node: Node, http: aiohttp.ClientSession) -> Wire:
    return Wire(http, node.address)


async def get_state(
    http: aiohttp.ClientSession, node: Node, headers: dict[str, str] | None = None, **params: str
) -> dict[str, Any]:
    async with http.get(f"http://{node.address}{STATE}", params=params, headers=headers) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("application/json")
        doc: dict[str, Any] = orjson.loads(await r.read())
        return doc


async def settled_version(http: aiohttp.ClientSession, node: Node) -> int:
    """The version once no change is pending (the debounce has run)."""
    _, dash = parts(node)
    await eventually(lambda: dash.settled, what="the debounce to run")
    doc = await get_state(http, node)
    return int(doc["data"]["version"])


async def raw_get(node: Node, target: str) -> bytes:
    """One GET with ``target`` sent byte for byte (no client-side path normalisation)."""
    host, port = node.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


# -- state content -------------------------------------------------------------------------------


async def test_state_shows_apps_counts_instances_node_guard(
    node: Node, wire: Wire, http: aiohttp.ClientSession
) -> None:
    await wire.register("demo.svc", "h1", metadata='{"weight":"10","color":"red"}', version="v1.2")
    await wire.register("demo.svc", "h2", status="2", zone="sh002")
    await wire.register("demo.svc", "h3", zone="sh002")
    doc = await get_state(http, node, app="demo.svc")
    assert doc["code"] == 0 and doc["message"] == "0"
    data = doc["data"]
    assert isinstance(data["version"], int) and isinstance(data["renew_mark"], str)
    apps = {a["appid"]: a for a in data["apps"]}
    assert set(apps) == {"demo.svc", INFRA_APPID}
    assert apps["demo.svc"]["instances"] == 3
    assert apps["demo.svc"]["zones"] == {"sh001": {"UP": 1, "WAITING": 0}, "sh002": {"UP": 1, "WAITING": 1}}
    assert data["selected"] == {"appid": "demo.svc", "env": "dev", "found": True}
    rows = {i["hostname"]: i for i in data["instances"]}
    assert list(rows) == ["h1", "h2", "h3"]
    h1 = rows["h1"]
    assert h1["addrs"] == ["http://10.0.0.1:8002"] and h1["version"] == "v1.2"
    assert h1["metadata"] == {"color": "red", "weight": "10"}
    assert (h1["status"], h1["status_name"], rows["h2"]["status_name"]) == (1, "UP", "WAITING")
    assert h1["zone"] == "sh001" and rows["h2"]["zone"] == "sh002"
    assert 0 <= h1["reg_age"] < 5 and 0 <= h1["renew_age"] < 5
    assert h1["reg_timestamp"] > 0 and h1["dirty_timestamp"] >= h1["reg_timestamp"]
    n = data["node"]
    assert (n["zone"], n["env"], n["hostname"], n["addr"]) == ("sh001", "dev", "node-test", node.address)
    assert n["version"] and n["uptime"] >= 0 and n["instances"] == 4 and n["apps"] == 2
    g = data["guard"]
    assert g["expected"] == 8 and g["needed"] == 6 and g["renews_last_window"] == 0
    assert g["eviction_suspended"] is False and g["reasons"] == [] and g["startup_protect"] is False
    assert data["nodes"] == [{"addr": node.address, "zone": "sh001", "status": "UP", "role": "self"}]


async def test_state_without_app_lists_every_instance(
    node: Node, wire: Wire, http: aiohttp.ClientSession
) -> None:
    await wire.register("a.svc", "h1")
    await wire.register("b.svc", "h2")
    data = (await get_state(http, node))["data"]
    assert data["selected"] is None
    assert sorted((i["appid"], i["hostname"]) for i in data["instances"]) == [
        ("a.svc", "h1"),
        ("b.svc", "h2"),
        (INFRA_APPID, "node-test"),
    ]
    gone = (await get_state(http, node, app="ghost"))["data"]
    assert gone["selected"] == {"appid": "ghost", "env": "dev", "found": False} and gone["instances"] == []


async def test_bad_since_is_400_in_the_envelope(node: Node, http: aiohttp.ClientSession) -> None:
    doc = await get_state(http, node, since="soon")
    assert doc["code"] == -400 and "invalid syntax" in doc["message"]


# -- the long poll -------------------------------------------------------------------------------


async def test_poll_is_held_then_answered_on_a_change(
    node: Node, wire: Wire, http: aiohttp.ClientSession
) -> None:
    _, dash = parts(node)
    await wire.register("demo.svc", "h9")
    v = await settled_version(http, node)
    poll = asyncio.ensure_future(get_state(http, node, since=str(v), app="demo.svc"))
    await eventually(lambda: len(dash.held) == 1, what="the poll to be held")
    await asyncio.sleep(0.2)  # no change yet: still held (a negative check, not synchronisation)
    assert not poll.done()
    started = time.monotonic()
    # a set changes neither the guard nor the peers: only the registry listener can see it
    await wire.post(
        "set", {"zone": "sh001", "env": "dev", "appid": "demo.svc", "hostname": "h9", "status": "2"}
    )
    data = (await asyncio.wait_for(poll, 2.0))["data"]
    assert time.monotonic() - started < 0.5
    assert data["version"] == v + 1
    assert [(i["hostname"], i["status_name"]) for i in data["instances"]] == [("h9", "WAITING")]
    assert not dash.held


async def test_other_version_is_answered_at_once(node: Node, http: aiohttp.ClientSession) -> None:
    v = await settled_version(http, node)
    for since in ("0", str(v + 1000), "-1"):
        doc = await asyncio.wait_for(get_state(http, node, since=since), 1.0)
        assert doc["data"]["version"] == v


async def test_burst_of_changes_makes_one_version(node: Node, http: aiohttp.ClientSession) -> None:
    app, dash = parts(node)
    v = await settled_version(http, node)
    poll = asyncio.ensure_future(get_state(http, node, since=str(v)))
    await eventually(lambda: len(dash.held) == 1, what="the poll to be held")
    for i in range(1000):
        ins = Instance(zone="sh001", env="dev", appid="burst", hostname=f"h{i}")
        app.events.publish(app.registry.register(ins, app.clock()))
    data = (await asyncio.wait_for(poll, 2.0))["data"]
    assert data["version"] == v + 1
    assert {a["appid"]: a["instances"] for a in data["apps"]}["burst"] == 1000
    assert await settled_version(http, node) == v + 1


async def test_registrations_over_http_are_coalesced(node: Node, http: aiohttp.ClientSession) -> None:
    """A watcher following 300 concurrent registrations gets a handful of answers, not 300."""
    wire = Wire(http, node.address)
    v = await settled_version(http, node)
    answers: list[int] = []

    async def watch() -> None:
        since = v
        while True:
            data = (await get_state(http, node, since=str(since)))["data"]
            answers.append(data["version"])
            since = data["version"]
            if {a["appid"]: a["instances"] for a in data["apps"]}.get("many") == 300:
                return

    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*(wire.register("many", f"h{i}") for i in range(300)))
    await asyncio.wait_for(watcher, 5.0)
    assert 1 <= len(answers) <= 30, answers


async def test_held_poll_times_out_with_the_current_state(node: Node, http: aiohttp.ClientSession) -> None:
    _, dash = parts(node)
    dash.hold = 0.3
    v = await settled_version(http, node)
    started = time.monotonic()
    doc = await asyncio.wait_for(get_state(http, node, since=str(v)), 2.0)
    assert 0.25 <= time.monotonic() - started < 1.5
    assert doc["code"] == 0 and doc["data"]["version"] == v
    assert not dash.held


async def test_renew_answers_a_poll_that_tracks_renews(
    node: Node, wire: Wire, http: aiohttp.ClientSession
) -> None:
    _, dash = parts(node)
    await wire.register("demo.svc", "h1")
    v = await settled_version(http, node)
    first = (await get_state(http, node, app="demo.svc"))["data"]
    tracked = asyncio.ensure_future(
        get_state(http, node, since=str(v), renews=first["renew_mark"], app="demo.svc")
    )
    untracked = asyncio.ensure_future(get_state(http, node, since=str(v), app="demo.svc"))
    await eventually(lambda: len(dash.held) == 2, what="both polls to be held")
    await wire.post("renew", {"zone": "sh001", "env": "dev", "appid": "demo.svc", "hostname": "h1"})
    data = (await asyncio.wait_for(tracked, 2.5))["data"]
    assert data["version"] == v and data["renew_mark"] != first["renew_mark"]
    assert not untracked.done() and len(dash.held) == 1
    untracked.cancel()


async def test_guard_change_bumps_the_version_on_the_tick(
    node: Node, wire: Wire, http: aiohttp.ClientSession
) -> None:
    app, dash = parts(node)
    await wire.register("demo.svc", "h1")
    v = await settled_version(http, node)
    poll = asyncio.ensure_future(get_state(http, node, since=str(v)))
    await eventually(lambda: len(dash.held) == 1, what="the poll to be held")
    app.lifecycle.evict()  # closes the guard window with no renews: self-preservation starts
    data = (await asyncio.wait_for(poll, 2.5))["data"]
    g = data["guard"]
    assert data["version"] == v + 1
    assert g["protecting"] and g["eviction_suspended"]
    assert [r["kind"] for r in g["reasons"]] == ["self-preservation"]
    assert "0 renews" in g["reasons"][0]["text"] and "3 needed" in g["reasons"][0]["text"]


async def test_restore_grace_and_startup_protect_are_reported(
    node: Node, http: aiohttp.ClientSession
) -> None:
    app, dash = parts(node)
    v = await settled_version(http, node)
    poll = asyncio.ensure_future(get_state(http, node, since=str(v)))
    await eventually(lambda: len(dash.held) == 1, what="the poll to be held")
    app.lifecycle.no_evict_until = app.clock() + 30 * 10**9
    app.lifecycle.protected = True
    g = (await asyncio.wait_for(poll, 2.5))["data"]["guard"]
    assert g["eviction_suspended"] and [r["kind"] for r in g["reasons"]] == ["restore-grace"]
    assert 25 < g["restore_grace"] <= 30 and g["startup_protect"] is True


async def test_held_polls_are_capped(http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(max_polls=1)) as node:
        _, dash = parts(node)
        v = await settled_version(http, node)
        first = asyncio.ensure_future(get_state(http, node, since=str(v)))
        await eventually(lambda: len(dash.held) == 1, what="the poll to be held")
        second = await asyncio.wait_for(get_state(http, node, since=str(v)), 1.0)
        assert second["code"] == -503
        first.cancel()


async def test_client_gone_forgets_the_held_poll(node: Node, http: aiohttp.ClientSession) -> None:
    _, dash = parts(node)
    v = await settled_version(http, node)
    host, port = node.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {STATE}?since={v} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await eventually(lambda: len(dash.held) == 1, what="the poll to be held")
    (held,) = dash.held
    timer = held.timer
    assert timer is not None and node.parking.count == 1
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: not dash.held, what="the abort hook")
    assert timer.cancelled() and held.done and node.parking.count == 0
    del reader


# -- peers ---------------------------------------------------------------------------------------


async def test_nodes_show_peers_up_and_lost(http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(hostname="A")) as a:
        cfg_b = fast_config(hostname="B", nodes=(a.address, "127.0.0.1:9"))
        async with running_node(cfg_b) as b:

            async def rows() -> dict[str, str]:
                data = (await get_state(http, b))["data"]
                return {n["addr"]: n["status"] for n in data["nodes"] if n["role"] == "peer"}

            deadline = time.monotonic() + 5
            while (await rows()) != {a.address: "UP", "127.0.0.1:9": "LOST"}:
                assert time.monotonic() < deadline, await rows()
                await asyncio.sleep(0.05)


async def stable_version(http: aiohttp.ClientSession, node: Node) -> int:
    """A version that a held poll kept until its timeout (nothing left to notice)."""
    while True:
        v = await settled_version(http, node)
        if (await get_state(http, node, since=str(v)))["data"]["version"] == v:
            return v


async def test_peer_status_change_bumps_the_version(http: aiohttp.ClientSession) -> None:
    async with (
        running_node(fast_config(hostname="A")) as a,
        running_node(fast_config(hostname="B", nodes=(a.address,))) as b,
    ):
        app, dash = parts(b)
        rep = app.replicator
        assert rep is not None
        await eventually(lambda: rep.own[a.address].status == NODE_UP, what="A to be UP")
        dash.hold = 0.3
        v = await stable_version(http, b)
        dash.hold = 10.0
        poll = asyncio.ensure_future(get_state(http, b, since=str(v)))
        await eventually(lambda: len(dash.held) == 1, what="the poll to be held")
        rep.own[a.address].status = NODE_LOST
        data = (await asyncio.wait_for(poll, 2.5))["data"]
        assert data["version"] == v + 1
        assert {n["addr"]: n["status"] for n in data["nodes"]}[a.address] == "LOST"


# -- auth ----------------------------------------------------------------------------------------


async def test_the_auth_stage_asks_the_gate_for_the_state_path(node: Node) -> None:
    seen: list[tuple[str, str]] = []

    def gate(req: HttpRequest, form: Form, path: str) -> bytes | None:
        seen.append((path, form.first("who")))
        return None if form.first("who") == "ok" else json_answer(-401, b'{"code":-401,"message":"no"}')

    handler = pipeline.build(
        node.routes, scope=RequestScope(), lifecycle=node.lifecycle, gate=gate, observe=None, access_log=False
    )
    conn = HttpConnection(node.http)

    def get(query: bytes) -> Any:
        answer = handler(HttpRequest(conn, "GET", STATE, query, {}, b"", True))
        assert answer is not None
        return orjson.loads(answer.split(b"\r\n\r\n", 1)[1])

    refused, allowed = get(b"who=x"), get(b"who=ok")
    assert refused == {"code": -401, "message": "no"} and allowed["code"] == 0
    assert seen == [(STATE, "x"), (STATE, "ok")]


async def test_tokens_protect_the_state_only_with_protect_reads(http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(tokens=("s3cret:admin",), protect_reads=True)) as node:
        assert (await get_state(http, node))["code"] == -401
        ok = await get_state(http, node, headers={"Authorization": "Bearer s3cret"})
        assert ok["code"] == 0
    async with running_node(fast_config(tokens=("s3cret:admin",))) as node:
        assert (await get_state(http, node))["code"] == 0


# -- static files --------------------------------------------------------------------------------


async def test_page_and_static_files(node: Node, http: aiohttp.ClientSession) -> None:
    base = f"http://{node.address}"
    for path in ("/", "/dashboard", "/dashboard/"):
        async with http.get(base + path) as r:
            body = await r.text()
            assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
            assert "<title>discoverd</title>" in body
            assert "script-src 'self'" in r.headers["content-security-policy"]
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        async with http.get(f"{base}/dashboard/static/{name}") as r:
            assert r.status == 200 and r.headers["content-type"].startswith(ctype)
            assert r.headers["x-content-type-options"] == "nosniff"
            assert len(await r.read()) > 100
    async with http.post(base + "/") as r:
        assert r.status == 405
    async with http.post(base + STATE) as r:
        assert r.status == 405
    async with http.get(base + "/dashboard/static/missing.js") as r:
        assert r.status == 404


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/static/../dashboard.py",
        "/dashboard/static/%2e%2e/dashboard.py",
        "/dashboard/static/..%2fdashboard.py",
        "/dashboard/static/%2e%2e%2f%2e%2e%2fapp.py",
        "/dashboard/static//etc/passwd",
        "/dashboard/static/./app.js",
        "/dashboard/static/",
        "/dashboard/static/app.js/",
        "/dashboard/static/APP.JS",
    ],
)
async def test_static_refuses_anything_but_the_files(node: Node, target: str) -> None:
    answer = await raw_get(node, target)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:80]
    assert b"import" not in answer and b"root:" not in answer


def test_load_static_lists_only_plain_known_files() -> None:
    files = dashboard.find_static()
    assert {"index.html", "app.js", "style.css"} <= set(files)
    assert all("/" not in name and not name.startswith(".") for name in files)


async def test_dashboard_off_serves_nothing(http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(dashboard=False)) as node:
        assert node.dashboard is None
        async with http.get(f"http://{node.address}/") as r:
            assert r.status == 404
