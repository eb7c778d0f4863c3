"""Python memberlist nodes against the real Go memberlist 0.2.2 (Debian), through the project's Go harness.

Both sides run scaled-down Local timings (probe 200 ms) so that failure detection takes a couple of
seconds. Every Go process that exits unexpectedly or panics fails the test (GoNode checks on exit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from discoverd.backends.gossip.delegate import Delegate
from discoverd.backends.gossip.node import MemberlistNode
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.messages import NodeState, Suspect, encode
from discoverd.core.gossip.suspicion import suspicion_timeouts
from discoverd.errors import GossipError
from tests.backends.gossip.helpers import Recorder
from tests.gossip.go_harness import GoNode, b64, unique_name
from tests.helpers import eventually

PROBE = 0.2
GO_FAST = ("-probe-interval", "200ms", "-probe-timeout", "100ms", "-gossip-interval", "50ms")
KEY = b"0123456789abcdef0123456789abcdef"  # AES-256
OTHER_KEY = b"fedcba9876543210"


def py_config(name: str, **kw: object) -> GossipConfig:
    base: dict[str, object] = {
        "name": name,
        "probe_interval": PROBE,
        "probe_timeout": 0.1,
        "gossip_interval": 0.05,
        "push_pull_interval": 0,
        "tcp_timeout": 2.0,
    }
    base.update(kw)
    return GossipConfig.local(**base)


@asynccontextmanager
async def py_node(
    name: str | None = None, delegate: Delegate | None = None, **kw: object
) -> AsyncIterator[MemberlistNode]:
    node = MemberlistNode(py_config(name or unique_name("py"), **kw), delegate)
    await node.start()
    try:
        yield node
    finally:
        await node.shutdown()


def addr(node: MemberlistNode) -> str:
    return f"{node.addr[0]}:{node.addr[1]}"


async def go_state(go: GoNode, name: str) -> int | None:
    everyone = (await go.command({"cmd": "members", "all": True}))["members"]
    return next((int(m["state"]) for m in everyone if m["name"] == name), None)


async def go_eventually(go: GoNode, name: str, state: int, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (got := await go_state(go, name)) != state:
        assert loop.time() < deadline, f"Go sees {name} in state {got}, wanted {state}"
        await asyncio.sleep(0.05)


def detection_bound(n: int, mult: int = 3) -> float:
    """Probe round (every member probed within ~n intervals at worst, scaled) + the longest suspicion."""
    _lo, hi = suspicion_timeouts(mult, 6, n, PROBE)
    return n * PROBE * 2 + hi + 2.0


async def test_python_joins_go(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, *GO_FAST) as go, py_node() as py:
        assert await py.join([go.address]) == 1
        await go.wait_event("join", node=py.name, addr="127.0.0.1", port=py.addr[1])
        await eventually(lambda: {m.name for m in py.members()} == {py.name, go.name}, within=5)
        member = py.table.nodes[go.name]
        assert member.vsn == bytes([1, 5, 2, 0, 0, 0])


async def test_go_joins_python_and_meta_flows(mlharness_bin: Path) -> None:
    class Meta(Delegate):
        def node_meta(self, limit: int) -> bytes:
            return b"x" * 512  # the largest meta memberlist allows

    async with (
        py_node(delegate=Meta()) as py,
        GoNode(mlharness_bin, *GO_FAST, "-join", addr(py), "-meta", "m1") as go,
    ):
        joined = await go.wait_event("join", node=py.name)
        assert joined["meta"] == "x" * 512
        await eventually(lambda: py.table.nodes.get(go.name) is not None, within=5)
        assert py.table.nodes[go.name].meta == b"m1"
        await go.update_meta("m2")
        await eventually(lambda: py.table.nodes[go.name].meta == b"m2", within=5)


async def test_mixed_three_node_cluster(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, *GO_FAST) as go1, py_node() as py:
        await py.join([go1.address])
        async with GoNode(mlharness_bin, *GO_FAST, "-join", addr(py)) as go2:
            names = {go1.name, go2.name, py.name}
            await eventually(lambda: {m.name for m in py.members()} == names, within=5)
            for go in (go1, go2):
                for other in names - {go.name}:
                    await go.wait_event("join", node=other)
                assert {m["name"] for m in await go.members()} == names


async def test_killed_python_node_is_declared_dead_by_go(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, *GO_FAST) as go:
        py = MemberlistNode(py_config(unique_name("py")))
        await py.start()
        await py.join([go.address])
        await go.wait_event("join", node=py.name)
        loop = asyncio.get_running_loop()
        killed = loop.time()
        await py.shutdown()  # no leave: Go must find out by probing
        await go.wait_event("leave", node=py.name, state=2, timeout=detection_bound(2))
        elapsed = loop.time() - killed
        assert elapsed <= detection_bound(2)


async def test_killed_go_node_is_declared_dead_by_python(mlharness_bin: Path) -> None:
    async with py_node() as py, GoNode(mlharness_bin, *GO_FAST, "-join", addr(py)) as go:
        await eventually(lambda: go.name in py.table.nodes, within=5)
        events = py.events()
        loop = asyncio.get_running_loop()
        killed = loop.time()
        await go.kill()
        async with asyncio.timeout(detection_bound(2)):
            async for ev in events:
                if ev.kind == "leave" and ev.member.name == go.name:
                    break
        assert py.table.nodes[go.name].state == NodeState.DEAD
        assert loop.time() - killed <= detection_bound(2)


async def test_graceful_leave_both_ways(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, *GO_FAST) as go, py_node() as py:
        await py.join([go.address])
        await go.wait_event("join", node=py.name)
        assert await py.leave(timeout=3)
        await go.wait_event("leave", node=py.name, state=3)
    async with py_node() as py, GoNode(mlharness_bin, *GO_FAST, "-join", addr(py)) as go:
        await eventually(lambda: go.name in py.table.nodes, within=5)
        await go.leave()
        await eventually(lambda: py.table.nodes[go.name].state == NodeState.LEFT, within=5)


async def test_go_suspects_python_and_python_refutes(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, *GO_FAST) as go, py_node() as py, py_node() as accuser:
        await py.join([go.address])
        await accuser.join([go.address])
        await go.wait_event("join", node=accuser.name)
        before = py.table.local.incarnation
        # the accuser tells Go that py is suspect; Go gossips it; py must refute with a higher incarnation
        accuser.sender.raw(
            (go.addr, go.port), encode(Suspect(incarnation=before, node=py.name, from_=accuser.name))
        )
        await eventually(lambda: py.table.local.incarnation > before, within=5)
        await go_eventually(go, py.name, 0, within=5)


async def test_python_suspects_go_and_go_refutes(mlharness_bin: Path) -> None:
    async with py_node() as py, GoNode(mlharness_bin, *GO_FAST, "-join", addr(py)) as go:
        await eventually(lambda: go.name in py.table.nodes, within=5)
        before = py.table.nodes[go.name].incarnation
        py.apply(py.table.on_suspect(Suspect(incarnation=before, node=go.name, from_=py.name), py.now()))
        await eventually(
            lambda: (
                py.table.nodes[go.name].state == NodeState.ALIVE
                and py.table.nodes[go.name].incarnation > before
            ),
            within=5,
        )


@pytest.mark.parametrize(
    ("py_keys", "go_keys"), [((KEY,), KEY.hex()), ((KEY, OTHER_KEY), f"{OTHER_KEY.hex()},{KEY.hex()}")]
)
async def test_encrypted_cluster(mlharness_bin: Path, py_keys: tuple[bytes, ...], go_keys: str) -> None:
    rec = Recorder()
    async with (
        GoNode(mlharness_bin, *GO_FAST, "-key", go_keys) as go,
        py_node(delegate=rec, keys=py_keys) as py,
    ):
        await py.join([go.address])
        await go.wait_event("join", node=py.name)
        await go.broadcast(b"secret hello")
        await eventually(lambda: b"secret hello" in rec.msgs, within=5)


async def test_key_mismatch_keeps_nodes_apart(mlharness_bin: Path) -> None:
    async with GoNode(mlharness_bin, *GO_FAST, "-key", OTHER_KEY.hex()) as go, py_node(keys=(KEY,)) as py:
        with pytest.raises(GossipError):
            await py.join([go.address])
        assert [m["name"] for m in await go.members()] == [go.name]
    async with GoNode(mlharness_bin, *GO_FAST) as go, py_node(keys=(KEY,)) as py:
        with pytest.raises(GossipError):  # encrypted Python, plaintext Go
            await py.join([go.address])


@pytest.mark.parametrize(("py_compress", "go_compress"), [(True, "false"), (False, "true"), (False, "false")])
async def test_compression_on_and_off(mlharness_bin: Path, py_compress: bool, go_compress: str) -> None:
    rec = Recorder()
    async with (
        GoNode(mlharness_bin, *GO_FAST, f"-compress={go_compress}") as go,
        py_node(delegate=rec, enable_compression=py_compress) as py,
    ):
        await py.join([go.address])
        await go.wait_event("join", node=py.name)
        py.broadcast(b"p" * 300)
        await go.wait_event("msg", data=b64(b"p" * 300))
        await go.broadcast(b"g" * 300)
        await eventually(lambda: b"g" * 300 in rec.msgs, within=5)


async def test_user_messages_both_ways_reliable_too(mlharness_bin: Path) -> None:
    rec = Recorder()
    async with GoNode(mlharness_bin, *GO_FAST) as go, py_node(delegate=rec) as py:
        await py.join([go.address])
        await go.wait_event("join", node=py.name)
        await py.send_reliable(go.name, b"r" * 3000)
        await go.wait_event("msg", data=b64(b"r" * 3000))
        await go.send_reliable(py.name, b"from go")
        await eventually(lambda: b"from go" in rec.msgs, within=5)


async def test_periodic_push_pull_from_go(mlharness_bin: Path) -> None:
    async with (
        py_node() as py,
        GoNode(mlharness_bin, *GO_FAST, "-pushpull", "200ms", "-join", addr(py)) as go,
    ):
        await eventually(lambda: go.name in py.table.nodes, within=5)
        served = py.stats.get("push_pulls", 0)
        await eventually(lambda: py.stats.get("push_pulls", 0) >= served + 2, within=5)
        await py.push_pull((go.addr, go.port))  # and ours, not a join, is accepted by Go


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
async def test_protocol_versions(mlharness_bin: Path, protocol: int) -> None:
    async with (
        GoNode(mlharness_bin, *GO_FAST, "-protocol", str(protocol)) as go,
        py_node(protocol_version=protocol) as py,
    ):
        await py.join([go.address])
        await go.wait_event("join", node=py.name)
        probes = py.prober.probes
        await eventually(lambda: py.prober.probes >= probes + 3, within=5)
        assert py.table.nodes[go.name].state == NodeState.ALIVE
        assert py.health_score == 0  # every probe of Go succeeded
