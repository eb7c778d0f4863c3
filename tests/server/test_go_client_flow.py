"""The exact request sequences of the Go clients (spec §8), replayed over raw HTTP/1.1.

The real kratos/bilibili Go modules cannot be fetched on this machine (no Go module proxy), so these
tests replay what their source sends, header for header, and check what their decoders rely on.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import orjson

from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node

K1_HEADERS = (
    "User-Agent: blademaster discovery-test\r\nx1-bmspy-timeout: 40000\r\nx1-bmspy-user: root\r\n"
    "Accept-Encoding: gzip\r\n"
)


async def raw(addr: str, method: str, path: str, *, query: str = "", body: str = "") -> dict[str, object]:
    """One request on a fresh connection, the way Go's net/http writes it; returns the parsed JSON."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    target = f"{path}?{query}" if query else path
    head = f"{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{K1_HEADERS}"
    if method == "POST":
        head += "Content-Type: application/x-www-form-urlencoded\r\n"
        head += f"Content-Length: {len(body.encode())}\r\n"
    writer.write(head.encode() + b"\r\n" + body.encode())
    await writer.drain()
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    data = await reader.readexactly(length)
    writer.close()
    await writer.wait_closed()
    doc = orjson.loads(data)
    assert isinstance(doc, dict)
    return doc


async def test_k1_constructor_finds_infra_discovery_in_its_zone(node: Node) -> None:
    """K1 New(): polls infra.discovery with latest 0 until an instance of its zone appears."""
    q = urlencode(
        [("env", "dev"), ("hostname", "client-1"), ("appid", "infra.discovery"), ("latest_timestamp", "0")]
    )
    doc = await raw(node.address, "GET", "/discovery/polls", query=q)
    assert doc["code"] == 0
    data = doc["data"]
    assert isinstance(data, dict)
    info = data["infra.discovery"]
    assert info["latest_timestamp"] > 0  # a 0 here makes the Go client switch nodes forever
    addrs = [a for ins in info["instances"]["sh001"] for a in ins["addrs"]]
    assert addrs == [f"http://{node.address}"]


async def test_k1_provider_lifecycle_register_renew_reregister_cancel(node: Node) -> None:
    ident = [("region", "sh"), ("zone", "sh001"), ("env", "dev"), ("hostname", "pod-1")]
    reg = urlencode(
        [
            *ident,
            ("appid", "main.account"),
            ("addrs", "grpc://10.0.0.1:9000"),
            ("addrs", "http://10.0.0.1:8000"),
            ("version", "1"),
            ("status", "1"),
            ("metadata", '{"weight":"10"}'),
        ]
    )
    assert (await raw(node.address, "POST", "/discovery/register", body=reg))["code"] == 0
    renew = urlencode([*ident, ("appid", "main.account")])
    assert (await raw(node.address, "POST", "/discovery/renew", body=renew))["code"] == 0
    assert (await raw(node.address, "POST", "/discovery/cancel", body=renew))["code"] == 0
    # a renew after the instance vanished answers -404: the client re-registers
    assert (await raw(node.address, "POST", "/discovery/renew", body=renew))["code"] == -404
    assert (await raw(node.address, "POST", "/discovery/register", body=reg))["code"] == 0
    assert (await raw(node.address, "POST", "/discovery/renew", body=renew))["code"] == 0


async def test_k2_sends_post_parameters_in_the_query_string() -> None:
    async with running_node(fast_config()) as node:
        q = urlencode(
            [
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "k2.app"),
                ("hostname", "pod"),
                ("addrs", "grpc://10.0.0.2:9000"),
                ("status", "1"),
                ("metadata", ""),
            ]
        )
        assert (await raw(node.address, "POST", "/discovery/register", query=q))["code"] == 0
        doc = await raw(node.address, "GET", "/discovery/fetch", query="env=dev&appid=k2.app&status=1")
        data = doc["data"]
        assert isinstance(data, dict)
        assert data["instances"]["sh001"][0]["addrs"] == ["grpc://10.0.0.2:9000"]


async def test_k1_set_with_instance_status() -> None:
    async with running_node(fast_config()) as node:
        reg = urlencode(
            [
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "a"),
                ("hostname", "p"),
                ("addrs", "grpc://x:1"),
                ("status", "1"),
            ]
        )
        await raw(node.address, "POST", "/discovery/register", body=reg)
        body = urlencode(
            [
                ("region", "sh"),
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "a"),
                ("hostname", "p"),
                ("version", "2"),
                ("status", "2"),
                ("metadata", '{"color":"blue"}'),
            ]
        )
        assert (await raw(node.address, "POST", "/discovery/set", body=body))["code"] == 0
        zero = urlencode(
            [("zone", "sh001"), ("env", "dev"), ("appid", "a"), ("hostname", "p"), ("status", "0")]
        )
        assert (await raw(node.address, "POST", "/discovery/set", body=zero))["code"] == -400
