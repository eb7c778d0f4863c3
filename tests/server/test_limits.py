"""Limits that keep one client from exhausting a node: open connections (in total, and per client
address under pressure), held polls; and the start-up warning for a node exposed without tokens."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
import pytest

from discoverd.server.auth import exposure_warnings, is_loopback
from discoverd.server.http_limits import Occasional
from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node
from tests.helpers import eventually

NODES_REQUEST = b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\n\r\n"


async def connect(node: Node, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = node.address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port), local_addr=(source, 0))


async def served(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Send one request on an open connection: True when answered, False when the node closed it."""
    try:
        writer.write(NODES_REQUEST)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    except (ConnectionError, asyncio.IncompleteReadError):
        return False
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
    )
    body = await reader.readexactly(length)
    return bool(head.startswith(b"HTTP/1.1 200") and orjson.loads(body)["code"] == 0)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True when the node closes the connection without a word."""
    try:
        return await asyncio.wait_for(reader.read(1), 5.0) == b""
    except ConnectionError:
        return True


async def test_without_pressure_one_address_holds_any_number_of_connections() -> None:
    async with running_node(fast_config(max_connections=100, max_conns_per_host=2)) as node:
        admission = node.http.table.admission
        behind_one_nat = [await connect(node) for _ in range(10)]
        assert all([await served(r, w) for r, w in behind_one_nat])
        assert admission.per_host["127.0.0.1"] == 10 and admission.refused == 0
        for _, w in behind_one_nat:
            w.close()
        await eventually(lambda: "127.0.0.1" not in admission.per_host, what="slots released")


async def test_under_pressure_an_address_at_its_cap_is_refused_and_the_cap_is_global() -> None:
    async with running_node(fast_config(max_connections=8, max_conns_per_host=2)) as node:
        admission = node.http.table.admission  # pressure from 6 open connections (75 %)
        flood = [await connect(node) for _ in range(6)]
        assert all([await served(r, w) for r, w in flood])
        extra = await connect(node)
        assert await closed_by_peer(extra[0])  # its address holds 6 >= 2, under pressure
        assert (admission.refused_host, admission.refused_full) == (1, 0)
        other = [await connect(node, source="127.0.0.2") for _ in range(2)]
        assert all([await served(r, w) for r, w in other])  # another address, below its cap
        late = await connect(node, source="127.0.0.3")
        assert await closed_by_peer(late[0])  # 8 open: the global cap refuses anyone
        assert (admission.refused_host, admission.refused_full) == (1, 1)
        assert node.http.refused == 2
        for _, w in flood[:3]:
            w.close()
        await eventually(lambda: admission.open == 5, what="slots released")
        again = await connect(node, source="127.0.0.3")
        assert await served(*again)
        for _, w in (*flood[3:], extra, *other, late, again):
            w.close()


async def test_the_http_clients_of_a_full_node_see_closed_connections() -> None:
    async with (
        running_node(fast_config(max_connections=2)) as node,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0)) as s,
    ):
        hold = [await connect(node), await connect(node)]
        assert all([await served(r, w) for r, w in hold])
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"http://{node.address}/discovery/nodes") as r:
                await r.read()
        for _, w in hold:
            w.close()


def test_occasional_warnings_are_one_line_per_period_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    errors = Occasional(
        logging.getLogger("discoverd.test"), "accept failed", period=10.0, clock=lambda: now[0]
    )
    caplog.set_level(logging.WARNING, logger="discoverd.test")
    for i in range(50):
        errors.note(f"EMFILE #{i}")
    errors.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "accept failed: 1 time(s) since the last report (1 in all); last: EMFILE #0"
    ]
    now[0] += 9.9
    errors.flush()
    assert len(caplog.records) == 1
    now[0] += 0.1
    errors.flush()  # the reaper's periodic flush reports what was held back
    assert caplog.records[1].getMessage() == (
        "accept failed: 49 time(s) since the last report (50 in all); last: EMFILE #49"
    )
    errors.flush()
    assert len(caplog.records) == 2 and errors.total == 50


async def test_held_polls_are_capped_with_503() -> None:
    async with running_node(fast_config(max_polls=2, poll_hold=30.0)) as node, aiohttp.ClientSession() as s:
        url = f"http://{node.address}/discovery/polls"
        q = {"env": "dev", "hostname": "c", "appid": "svc", "latest_timestamp": "0"}

        async def poll() -> tuple[int, str]:
            async with s.get(url, params=q) as r:
                return orjson.loads(await r.read())["code"], r.headers["Kratos-Status-Code"]

        held = [asyncio.create_task(poll()) for _ in range(2)]
        await eventually(lambda: node.polls.waiters.count == 2, what="two polls held")
        assert await asyncio.wait_for(poll(), 5.0) == (-503, "-503")
        assert node.counters.poll_refused == 1 and node.polls.waiters.count == 2
        node.stop()  # held polls are answered -304 on the way out
        assert [await t for t in held] == [(-304, "-304"), (-304, "-304")]


# -- exposure warnings --------------------------------------------------------------------------------


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "example.org"):
        assert not is_loopback(host), host


def test_exposure_warnings() -> None:
    assert exposure_warnings("127.0.0.1", fast_config()) == []
    (no_tokens,) = exposure_warnings("0.0.0.0", fast_config())
    assert "WITHOUT access tokens" in no_tokens
    (plain,) = exposure_warnings("10.0.0.1", fast_config(tokens=("t",)))
    assert "plain HTTP" in plain
    assert exposure_warnings("10.0.0.1", fast_config(tokens_file="f", tls_cert="c", tls_key="k")) == []


async def test_binding_all_interfaces_without_tokens_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="discoverd.node")
    async with running_node(fast_config()):
        pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    async with running_node(fast_config(addr="0.0.0.0:0")) as node:
        assert node.http is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "discoverd.node"]
    assert len(warnings) == 1 and "WITHOUT access tokens" in warnings[0].getMessage()
