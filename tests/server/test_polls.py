"""Long polls: immediate answers, holds, -304, wake-ups, per-request waiters (spec §4, §12.7, §12.11)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from discoverd.server.runner import Node
from tests.helpers import Wire


@pytest.fixture
def wire(node: Node, http: aiohttp.ClientSession) -> Wire:
    return Wire(http, node.address)


def polls_q(*apps: tuple[str, int], hostname: str = "consumer", **extra: str) -> list[tuple[str, str]]:
    q = [("env", "dev"), ("hostname", hostname), *extra.items()]
    for appid, latest in apps:
        q += [("appid", appid), ("latest_timestamp", str(latest))]
    return q


async def latest_of(wire: Wire, appid: str) -> int:
    data, _ = await wire.get("fetch", {"env": "dev", "appid": appid, "status": "3"})
    return int(data["data"]["latest_timestamp"])


async def wait_held(node: Node, n: int, within: float = 5.0) -> None:
    """Wait until the node holds ``n`` polls (polling with a deadline, no blind sleep)."""
    deadline = time.monotonic() + within
    while node.polls.waiters.count != n:
        assert time.monotonic() < deadline, f"held {node.polls.waiters.count}, expected {n}"
        await asyncio.sleep(0.005)


async def test_immediate_answer_contains_only_changed_apps_and_missing(wire: Wire) -> None:
    await wire.register("a")
    await wire.register("b")
    lb = await latest_of(wire, "b")
    body, resp = await wire.get("polls", polls_q(("a", 0), ("b", lb), ("ghost", 0)))
    assert resp.headers["kratos-status-code"] == "0"
    assert list(body) == ["code", "data", "error", "message"]
    assert body["code"] == 0 and body["message"] == "0" and "ttl" not in body
    assert list(body["data"]) == ["a"]
    assert body["error"] == {"-404": ["ghost"]}
    assert body["data"]["a"]["latest_timestamp"] == await latest_of(wire, "a")


async def test_immediate_answer_error_is_null_when_nothing_missing(wire: Wire) -> None:
    await wire.register("a")
    body, _ = await wire.get("polls", polls_q(("a", 0)))
    assert body["error"] == {"-404": None}


async def test_polls_filter_up_only_and_keep_empty_zones(wire: Wire) -> None:
    await wire.register("a", "up")
    await wire.register("a", "wait", status="2", zone="sh002")
    body, _ = await wire.get("polls", polls_q(("a", 0)))
    inst = body["data"]["a"]["instances"]
    assert [i["hostname"] for i in inst["sh001"]] == ["up"]
    assert inst["sh002"] == []


async def test_count_mismatch_is_400(wire: Wire) -> None:
    body, resp = await wire.get(
        "polls",
        [("env", "dev"), ("hostname", "c"), ("appid", "a"), ("appid", "b"), ("latest_timestamp", "0")],
    )
    assert body == {"code": -400, "message": body["message"], "ttl": 1}
    assert resp.headers["kratos-status-code"] == "-400"


async def test_polls_requires_hostname(wire: Wire) -> None:
    body, _ = await wire.get("polls", [("env", "dev"), ("appid", "a"), ("latest_timestamp", "0")])
    assert (
        body["message"]
        == "Key: 'ArgPolls.Hostname' Error:Field validation for 'Hostname' failed on the 'required' tag"
    )


async def test_hold_then_304(wire: Wire, node: Node) -> None:
    await wire.register("a")
    la = await latest_of(wire, "a")
    started = time.monotonic()
    body, resp = await wire.get("polls", polls_q(("a", la)))
    held = time.monotonic() - started
    assert body == {"code": -304, "message": "-304", "ttl": 1}
    assert resp.headers["kratos-status-code"] == "-304"
    assert held >= node.config.poll_hold - 0.05
    assert node.polls.waiters.count == 0


async def test_bmspy_timeout_header_shortens_the_hold(wire: Wire, node: Node) -> None:
    await wire.register("a")
    la = await latest_of(wire, "a")
    started = time.monotonic()
    body, _ = await wire.get("polls", polls_q(("a", la)), headers={"x1-bmspy-timeout": "300"})
    assert body["code"] == -304
    assert time.monotonic() - started < node.config.poll_hold
    garbage, _ = await wire.get("polls", polls_q(("a", la)), headers={"x1-bmspy-timeout": "soon"})
    assert garbage["code"] == -304  # ignored: held for the configured hold


async def test_register_wakes_held_poll_within_100ms_with_only_that_app(wire: Wire, node: Node) -> None:
    await wire.register("a")
    await wire.register("b")
    la, lb = await latest_of(wire, "a"), await latest_of(wire, "b")
    poll = asyncio.ensure_future(wire.get("polls", polls_q(("a", la), ("b", lb))))
    await wait_held(node, 1)
    await wire.register("b", "h2")
    t0 = time.monotonic()
    body, _ = await poll
    assert time.monotonic() - t0 < 0.1
    assert body["code"] == 0
    assert list(body["data"]) == ["b"]
    assert body["error"] == {"-404": None}
    assert sorted(i["hostname"] for i in body["data"]["b"]["instances"]["sh001"]) == ["h1", "h2"]
    assert body["data"]["b"]["latest_timestamp"] == await latest_of(wire, "b") > lb
    assert node.polls.waiters.count == 0


async def test_renew_does_not_wake(wire: Wire, node: Node) -> None:
    await wire.register("a")
    la = await latest_of(wire, "a")
    poll = asyncio.ensure_future(wire.get("polls", polls_q(("a", la)), headers={"x1-bmspy-timeout": "600"}))
    await wait_held(node, 1)
    renewed, _ = await wire.post("renew", {"zone": "sh001", "env": "dev", "appid": "a", "hostname": "h1"})
    assert renewed["code"] == 0
    body, _ = await poll
    assert body["code"] == -304


@pytest.mark.parametrize("change", ["cancel", "set", "reregister"])
async def test_cancel_set_and_reregister_wake(wire: Wire, node: Node, change: str) -> None:
    await wire.register("a", "h1")
    await wire.register("a", "h2")
    la = await latest_of(wire, "a")
    poll = asyncio.ensure_future(wire.get("polls", polls_q(("a", la))))
    await wait_held(node, 1)
    key = {"zone": "sh001", "env": "dev", "appid": "a", "hostname": "h1"}
    if change == "cancel":
        await wire.post("cancel", key)
    elif change == "set":
        await wire.post("set", {**key, "status": "2"})
    else:
        await wire.register("a", "h1")
    body, _ = await poll
    assert body["code"] == 0
    ups = sorted(i["hostname"] for i in body["data"]["a"]["instances"]["sh001"])
    assert ups == (["h2"] if change in ("cancel", "set") else ["h1", "h2"])


async def test_cancel_of_last_instance_does_not_wake(wire: Wire, node: Node) -> None:
    await wire.register("a")
    la = await latest_of(wire, "a")
    poll = asyncio.ensure_future(wire.get("polls", polls_q(("a", la)), headers={"x1-bmspy-timeout": "400"}))
    await wait_held(node, 1)
    await wire.post("cancel", {"zone": "sh001", "env": "dev", "appid": "a", "hostname": "h1"})
    body, _ = await poll
    assert body["code"] == -304


async def test_all_missing_is_held_and_woken_answer_still_lists_missing(wire: Wire, node: Node) -> None:
    poll = asyncio.ensure_future(wire.get("polls", polls_q(("later", 0))))
    await wait_held(node, 1)
    await wire.register("later")
    body, _ = await poll
    assert body["code"] == 0
    assert list(body["data"]) == ["later"]
    assert body["error"] == {"-404": ["later"]}


async def test_per_request_waiters_from_one_host(wire: Wire, node: Node) -> None:
    """Two polls from one hostname with different zone filters each get their own answer."""
    await wire.register("a", "h1", zone="sh001")
    await wire.register("a", "h2", zone="sh002")
    la = await latest_of(wire, "a")
    p1 = asyncio.ensure_future(wire.get("polls", polls_q(("a", la), zone="sh001")))
    p2 = asyncio.ensure_future(wire.get("polls", polls_q(("a", la), zone="sh002")))
    await wait_held(node, 2)
    await wire.register("a", "h3", zone="sh002")
    b1, _ = await p1
    b2, _ = await p2
    assert list(b1["data"]["a"]["instances"]) == ["sh001"]
    assert list(b2["data"]["a"]["instances"]) == ["sh002"]
    assert sorted(i["hostname"] for i in b2["data"]["a"]["instances"]["sh002"]) == ["h2", "h3"]


async def test_zone_filter_absent_is_missing_immediately_when_others_changed(wire: Wire) -> None:
    await wire.register("a", zone="sh001")
    await wire.register("b", zone="sh002")
    body, _ = await wire.get("polls", polls_q(("a", 0), ("b", 0), zone="sh002"))
    assert list(body["data"]) == ["b"]
    assert body["error"] == {"-404": ["a"]}


async def test_many_waiters_get_identical_bytes(wire: Wire, node: Node, http: aiohttp.ClientSession) -> None:
    await wire.register("a")
    la = await latest_of(wire, "a")

    async def raw() -> bytes:
        async with http.get(f"{wire.base}/polls", params=polls_q(("a", la))) as r:
            return await r.read()

    polls = [asyncio.ensure_future(raw()) for _ in range(20)]
    await wait_held(node, 20)
    await wire.register("a", "h2")
    answers = await asyncio.gather(*polls)
    assert len(set(answers)) == 1
    assert b'"h2"' in answers[0]


async def test_client_disconnect_forgets_the_waiter(node: Node) -> None:
    _, writer = await asyncio.open_connection(*node.address.split(":"))
    writer.write(
        b"GET /discovery/polls?env=dev&hostname=c&appid=x&latest_timestamp=0 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    await writer.drain()
    await wait_held(node, 1)
    writer.close()
    await writer.wait_closed()
    await wait_held(node, 0)


# -- /poll (single app) -----------------------------------------------------------------------


async def test_poll_single_shapes(wire: Wire, node: Node) -> None:
    missing, resp = await wire.get("poll", {"env": "dev", "hostname": "c", "appid": "ghost"})
    assert missing == {"code": -404, "message": "ghost not found"}
    assert resp.headers["kratos-status-code"] == "-404"
    await wire.register("a")
    now, _ = await wire.get("poll", {"env": "dev", "hostname": "c", "appid": "a"})
    assert now["code"] == 0 and now["ttl"] == 1
    assert list(now["data"]) == ["instances", "latest_timestamp"]
    la = now["data"]["latest_timestamp"]
    poll = asyncio.ensure_future(
        wire.get("poll", {"env": "dev", "hostname": "c", "appid": "a", "latest_timestamp": str(la)})
    )
    await wait_held(node, 1)
    await wire.register("a", "h2")
    woken: Any
    woken, _ = await poll
    assert woken["code"] == 0 and woken["data"]["latest_timestamp"] > la
    assert len(woken["data"]["instances"]["sh001"]) == 2


async def test_pipelined_requests_answer_in_order_behind_a_held_poll(node: Node) -> None:
    reader, writer = await asyncio.open_connection(*node.address.split(":"))
    try:
        writer.write(
            b"GET /discovery/polls?env=dev&hostname=c&appid=x&latest_timestamp=0 HTTP/1.1\r\nHost: x\r\n"
            b"x1-bmspy-timeout: 200\r\n\r\n"
            b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"}"), 5)
        assert b'"code":-304' in first
        second = await asyncio.wait_for(reader.readuntil(b"}]}"), 5)
        assert b'"addr"' in second
    finally:
        writer.close()
        await writer.wait_closed()
