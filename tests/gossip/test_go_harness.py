"""Tests of the Go memberlist peer itself (Go nodes only), before Python interop tests rely on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.gossip.go_harness import GoCommandError, GoNode, GoNodeError, b64, unique_name

GOLDEN = Path(__file__).parent / "fixtures" / "golden.json"
KEY_A = b"micro-gossip-key".hex()
KEY_B = b"another-16-bytes".hex()
KEY_C = b"a-third-24-byte-aes-key!".hex()


def service(name: str, node_id: str, version: str = "1.0.0") -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "metadata": {"k": "v"},
        "endpoints": None,
        "nodes": [{"id": node_id, "address": "127.0.0.1:8080", "metadata": {"proto": "grpc"}}],
    }


async def test_two_nodes_join_and_list_both_members(mlharness_bin: Path) -> None:
    a_name, b_name = unique_name("a"), unique_name("b")
    async with (
        GoNode(mlharness_bin, "-name", a_name, "-meta", "meta-a") as a,
        GoNode(mlharness_bin, "-name", b_name, "-join", a.address) as b,
    ):
        assert (await b.wait_event("ok", cmd="join"))["joined"] == 1
        await a.wait_event("join", node=b_name)
        await b.wait_event("join", node=a_name, meta="meta-a")
        for node in (a, b):
            members = {m["name"]: m for m in await node.members()}
            assert set(members) == {a_name, b_name}
            assert members[a_name]["port"] == a.port
            assert members[a_name]["meta"] == "meta-a"
            assert all(m["state"] == 0 and m["addr"] == "127.0.0.1" for m in members.values())


async def test_join_command_and_leave(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin) as a, GoNode(mlharness_bin) as b:
        assert await b.join(a.address) == 1
        await a.wait_event("join", node=b.name)
        await b.leave()
        left = await a.wait_event("leave", node=b.name)
        assert left["state"] == 3  # StateLeft: a voluntary leave, not a failure
        assert [m["name"] for m in await a.members()] == [a.name]
        everyone = {m["name"]: m for m in (await a.command({"cmd": "members", "all": True}))["members"]}
        assert everyone[b.name]["state"] == 3
        assert everyone[a.name]["vsn"] == [1, 5, 2, 0, 0, 0]


async def test_killed_peer_is_declared_dead(mlharness_bin: Path) -> None:
    fast = ("-probe-interval", "200ms", "-probe-timeout", "100ms")
    async with GoNode(mlharness_bin, *fast) as a, GoNode(mlharness_bin, *fast, "-join", a.address) as b:
        await a.wait_event("join", node=b.name)
        await b.kill()
        assert (await a.wait_event("leave", node=b.name))["state"] == 2  # StateDead: a failure, not a leave
        everyone = {m["name"]: m for m in (await a.command({"cmd": "members", "all": True}))["members"]}
        assert everyone[b.name]["state"] == 2


async def test_user_broadcast_and_reliable_message_arrive(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin) as a, GoNode(mlharness_bin, "-join", a.address) as b:
        await a.wait_event("join", node=b.name)
        await a.broadcast(b"hello from a")
        await b.wait_event("msg", data=b64(b"hello from a"))
        await b.send_reliable(a.name, b"\x00reliable\xff")
        await a.wait_event("msg", data=b64(b"\x00reliable\xff"))


async def test_meta_update_and_health(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin) as a, GoNode(mlharness_bin, "-join", a.address) as b:
        await a.wait_event("join", node=b.name)
        await b.update_meta("v2")
        await a.wait_event("update", node=b.name, meta="v2")
        assert await a.health() >= 0


async def test_encrypted_cluster_rejects_a_wrong_key(mlharness_bin: Path) -> None:
    async with (
        GoNode(mlharness_bin, "-key", f"{KEY_A},{KEY_B}") as a,
        GoNode(mlharness_bin, "-key", KEY_B, "-key", KEY_A) as b,
        GoNode(mlharness_bin, "-key", KEY_C) as c,
    ):
        with pytest.raises(GoCommandError, match="No installed keys could decrypt"):
            await c.join(a.address)
        assert await b.join(a.address) == 1  # each side decrypts the other's primary with its secondary
        await a.wait_event("join", node=b.name)
        assert {m["name"] for m in await a.members()} == {a.name, b.name}


async def test_micro_register_reaches_a_joined_peer_by_broadcast(mlharness_bin: Path) -> None:
    async with (
        GoNode(mlharness_bin, "-micro") as a,
        GoNode(mlharness_bin, "-micro", "-join", a.address) as b,
    ):
        await a.wait_event("join", node=b.name)
        svc = service("go.a", "go.a-1")
        await a.register(svc, ttl_ms=60_000)
        got = await b.wait_event("micro", action="create", source="remote")
        assert got["service"] == svc
        assert (await b.services()) == {"go.a": [svc]}
        await a.deregister(svc)
        await b.wait_event("micro", action="delete", source="remote")
        assert (await b.services()) == {}


async def test_micro_state_is_exchanged_on_join(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, "-micro") as a, GoNode(mlharness_bin, "-micro") as b:
        svc_a, svc_b = service("go.a", "a-1"), service("go.b", "b-1", version="v2")
        await a.register(svc_a)
        await b.register(svc_b)
        await b.join(a.address)
        assert (await b.wait_event("micro", source="state", service=svc_a))["action"] == "create"
        assert (await a.wait_event("micro", source="state", service=svc_b))["action"] == "create"
        assert await a.services() == await b.services() == {"go.a": [svc_a], "go.b": [svc_b]}


async def test_micro_registration_expires_after_its_ttl(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, "-micro") as a:
        svc = service("go.ttl", "t-1")
        with pytest.raises(GoCommandError, match="Require register TTL"):
            await a.register(svc, ttl_ms=0)  # push/pull off and no TTL: go-micro refuses
        await a.register(svc, ttl_ms=200)
        await a.wait_event("micro", action="delete", source="expiry", timeout=5.0)
        assert await a.services() == {}


async def test_unexpected_exit_is_reported(mlharness_bin: Path) -> None:
    with pytest.raises(GoNodeError, match="status 1"):
        async with GoNode(mlharness_bin, "-protocol", "9"):
            pass
    node = GoNode(mlharness_bin)
    with pytest.raises(GoNodeError, match="exited unexpectedly"):
        async with node:
            os.kill(node.pid, signal.SIGKILL)  # not through node.kill(): an unexpected death
            await node.wait_for(lambda e: False, timeout=10.0)


async def test_kill_and_shutdown_are_expected_exits(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin) as a, GoNode(mlharness_bin) as b:
        await a.kill()
        await b.shutdown()


def test_golden_vectors_are_what_the_harness_prints(mlharness_bin: Path) -> None:
    out = subprocess.run([str(mlharness_bin), "vectors"], capture_output=True, check=True).stdout
    assert out == GOLDEN.read_bytes(), "regenerate: mlharness vectors > tests/gossip/fixtures/golden.json"
    assert {"messages", "lzw", "framing", "aes", "streams", "micro"} <= set(json.loads(out))
