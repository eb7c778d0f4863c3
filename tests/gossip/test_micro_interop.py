"""The gossip:// registry against a Go peer speaking the go-micro gossip registry wire (Update protobuf +
Service JSON, spec §2.5–2.6), in both directions: broadcasts, join-state sync, deregister and expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from discoverd.backends.gossip.registry import GossipRegistry
from discoverd.model import Action, Instance
from tests.gossip.go_harness import GoNode
from tests.helpers import eventually

KEY = "micro-gossip-key"


def go_service(name: str, node_id: str, version: str = "1.0.0") -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "metadata": {"k": "v"},
        "endpoints": None,
        "nodes": [{"id": node_id, "address": "10.0.0.7:8080", "metadata": {"protocol": "grpc"}}],
    }


def py_instance(host: str = "py-1", appid: str = "py.svc") -> Instance:
    return Instance(
        zone="sh001",
        env="dev",
        appid=appid,
        hostname=host,
        addrs=["http://127.0.0.1:9000"],
        version="2.0.0",
        metadata={"weight": "10"},
    )


@asynccontextmanager
async def registry(*seeds: str, secret: str | None = None) -> AsyncIterator[GossipRegistry]:
    query = "&".join([f"join={s}" for s in seeds] + ([f"secret={secret}"] if secret else []))
    reg = GossipRegistry(f"gossip://127.0.0.1:0?{query}")
    await reg.start()
    try:
        yield reg
    finally:
        await reg.aclose()


async def go_services(go: GoNode, name: str, within: float = 5.0) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := (await go.services()).get(name)):
        assert loop.time() < deadline, f"Go never listed {name}"
        await asyncio.sleep(0.05)
    return found


async def test_go_registration_reaches_python_and_deregister_removes_it(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, "-micro") as go, registry(go.address) as py:
        watch = py.watch("go.a")
        await go.register(go_service("go.a", "go.a-node1"))
        ev = await asyncio.wait_for(anext(watch), 5)
        assert ev.action == Action.CREATE
        assert (ev.instance.appid, ev.instance.hostname, ev.instance.version) == (
            "go.a",
            "go.a-node1",
            "1.0.0",
        )
        assert ev.instance.addrs == ["10.0.0.7:8080"]
        assert ev.instance.metadata == {"k": "v", "protocol": "grpc"}
        await go.deregister(go_service("go.a", "go.a-node1"))
        ev = await asyncio.wait_for(anext(watch), 5)
        assert ev.action == Action.DELETE
        assert await py.get_service("go.a") == []


async def test_python_registration_is_listed_by_go(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, "-micro") as go, registry(go.address) as py:
        await go.wait_event("join")
        await py.register(py_instance())
        [svc] = await go_services(go, "py.svc")
        assert svc["version"] == "2.0.0"
        [node] = svc["nodes"]
        assert node["id"] == "py-1" and node["address"] == "127.0.0.1:9000"
        assert node["metadata"]["weight"] == "10" and node["metadata"]["zone"] == "sh001"
        await py.deregister(py_instance())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while (await go.services()).get("py.svc"):
            assert loop.time() < deadline, "Go still lists py.svc"
            await asyncio.sleep(0.05)


async def test_join_state_sync_both_ways(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, "-micro") as go:
        await go.register(go_service("go.early", "n1"))
        async with registry(go.address) as py:  # learns go.early from the join push/pull
            await eventually(lambda: bool(py.micro.state.instances("go.early")), within=5)
            await py.register(py_instance("py-early"))
            async with GoNode(mlharness_bin, "-micro", "-join", f"127.0.0.1:{py.node.addr[1]}") as late:
                await go_services(late, "py.svc")  # learned from Python's LocalState on join
                await go_services(late, "go.early")


async def test_go_ttl_expires_on_python(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, "-micro") as go, registry(go.address) as py:
        watch = py.watch("go.short")
        await go.register(go_service("go.short", "n1"), ttl_ms=1500)
        assert (await asyncio.wait_for(anext(watch), 5)).action == Action.CREATE
        ev = await asyncio.wait_for(anext(watch), 6)  # the expires timestamp (ns) passes: a local delete
        assert ev.action == Action.DELETE


async def test_encrypted_registry(mlharness_bin: Path) -> None:
    async with (
        GoNode(mlharness_bin, "-micro", "-key", KEY.encode().hex()) as go,
        registry(go.address, secret=KEY) as py,
    ):
        await go.register(go_service("go.secret", "n1"))
        await eventually(lambda: bool(py.micro.state.instances("go.secret")), within=5)
        await py.register(py_instance(appid="py.secret"))
        await go_services(go, "py.secret")
