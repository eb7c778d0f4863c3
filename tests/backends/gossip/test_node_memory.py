"""Multi-node behaviour of MemberlistNode on the in-memory network (no sockets): join, failure detection,
leave, refutation, broadcasts, push/pull, encryption, hostile input."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discoverd.backends.gossip.delegate import Delegate
from discoverd.backends.gossip.node import MemberlistNode
from discoverd.backends.gossip.registry import parse_gossip_url
from discoverd.backends.gossip.transport import MemoryNetwork
from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.framing import encode_packet, parse_stream
from discoverd.core.gossip.messages import Alive, ErrResp, NodeState, Ping, Suspect, encode
from discoverd.errors import ConfigError, GossipError
from tests.backends.gossip.helpers import Recorder
from tests.helpers import eventually

KEY_A = b"0123456789abcdef"
KEY_B = b"fedcba9876543210"


def fast(name: str, **kw: object) -> GossipConfig:
    """Local preset scaled down ~20×, so failure detection takes well under a second."""
    base: dict[str, object] = {
        "name": name,
        "probe_interval": 0.1,
        "probe_timeout": 0.05,
        "gossip_interval": 0.02,
        # as in every preset, a periodic push/pull repairs what gossip's few retransmissions miss (with three
        # nodes and the Local multiplier an alive is sent twice, and both copies may go to the same peer)
        "push_pull_interval": 0.5,
        "tcp_timeout": 0.5,
        "gossip_to_the_dead_time": 1.0,
    }
    base.update(kw)
    return GossipConfig.local(**base)


Cluster = Callable[..., "MemberlistNode"]


@pytest.fixture
async def net() -> AsyncIterator[tuple[MemoryNetwork, AsyncExitStack]]:
    async with AsyncExitStack() as stack:
        yield MemoryNetwork(), stack


async def start(
    env: tuple[MemoryNetwork, AsyncExitStack], name: str, delegate: Delegate | None = None, **kw: object
) -> MemberlistNode:
    network, stack = env
    node = MemberlistNode(fast(name, **kw), delegate, network.transport())
    await node.start()
    stack.push_async_callback(node.shutdown)
    return node


def seed(node: MemberlistNode) -> str:
    return f"{node.addr[0]}:{node.addr[1]}"


def states(node: MemberlistNode) -> dict[str, NodeState]:
    return {n: m.state for n, m in node.table.nodes.items()}


async def test_three_nodes_join_and_see_each_other(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    a, b, c = [await start(net, n) for n in "abc"]
    assert await b.join([seed(a)]) == 1
    assert await c.join([seed(b)]) == 1
    for n in (a, b, c):
        await eventually(lambda n=n: [m.name for m in n.members()] == ["a", "b", "c"], within=5)  # type: ignore[misc]


async def test_join_event_is_published(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    a, b = await start(net, "a"), await start(net, "b")
    events = a.events()
    await b.join([seed(a)])
    ev = await anext(events)
    assert (ev.kind, ev.member.name) == ("join", "b")


async def test_killed_node_is_declared_dead(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    network, _ = net
    a, b, c = [await start(net, n) for n in "abc"]
    await b.join([seed(a)])
    await c.join([seed(a)])
    await eventually(lambda: a.num_members() == 3 and b.num_members() == 3, within=5)
    network.isolate(c.addr)
    await eventually(lambda: states(a)["c"] == NodeState.DEAD and states(b)["c"] == NodeState.DEAD, within=5)
    assert a.num_members() == 2


async def test_indirect_probe_keeps_a_node_reachable_through_a_peer(
    net: tuple[MemoryNetwork, AsyncExitStack],
) -> None:
    network, _ = net
    a, b, c = [await start(net, n, disable_tcp_pings=True) for n in "abc"]
    await b.join([seed(a)])
    await c.join([seed(a)])
    await eventually(lambda: all(n.num_members() == 3 for n in (a, b, c)), within=5)
    network.block(a.addr, c.addr)  # a cannot reach c directly; b can
    network.block(c.addr, a.addr)
    relayed = b.stats["packets"]
    probes = a.prober.probes
    await eventually(lambda: a.prober.probes >= probes + 12, within=5)
    assert states(a)["c"] == NodeState.ALIVE  # every probe of c succeeded through b's indirect ping
    assert b.stats["packets"] > relayed


async def test_tcp_fallback_ping_when_udp_is_blocked(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    network, _ = net
    a, b = await start(net, "a"), await start(net, "b")
    await b.join([seed(a)])
    await eventually(lambda: a.num_members() == 2 and b.num_members() == 2, within=5)
    network.block(a.addr, b.addr, streams=False)  # UDP from a to b is lost, TCP gets through
    probes = a.prober.probes
    await eventually(lambda: a.prober.probes >= probes + 10, within=5)
    assert states(a)["b"] == NodeState.ALIVE
    assert a.prober.tcp_acks >= 8  # the probes were saved by the TCP fallback ping


async def test_nacks_are_sent_by_the_intermediary(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    network, _ = net
    # (probe timeout ≪ interval, as in the presets: the nack comes back one probe timeout after the request)
    a, b, c = [
        await start(net, n, disable_tcp_pings=True, protocol_version=4, probe_interval=0.25) for n in "abc"
    ]
    await b.join([seed(a)])
    await c.join([seed(a)])
    await eventually(lambda: all(n.num_members() == 3 for n in (a, b, c)), within=5)
    network.isolate(c.addr)
    await eventually(lambda: states(a)["c"] != NodeState.ALIVE, within=5)
    # b answered a's indirect probes with nacks, so a's failed probes did not raise its awareness
    assert a.health_score == 0


async def test_graceful_leave_marks_left(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    a, b = await start(net, "a"), await start(net, "b")
    await b.join([seed(a)])
    await eventually(lambda: a.num_members() == 2, within=5)
    assert await b.leave(timeout=2)
    await eventually(lambda: states(a)["b"] == NodeState.LEFT, within=5)


async def test_suspected_node_refutes_with_higher_incarnation(
    net: tuple[MemoryNetwork, AsyncExitStack],
) -> None:
    a, b = await start(net, "a"), await start(net, "b")
    await b.join([seed(a)])
    await eventually(lambda: a.num_members() == 2 and b.num_members() == 2, within=5)
    before = b.table.local.incarnation
    accusation = Suspect(incarnation=before, node="b", from_="a")
    a.apply(a.table.on_suspect(accusation, a.now()))
    assert states(a)["b"] == NodeState.SUSPECT
    await eventually(lambda: states(a)["b"] == NodeState.ALIVE, within=5)
    assert a.table.nodes["b"].incarnation > before
    assert b.health_score >= 0


async def test_user_broadcast_reaches_peer(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    rec = Recorder()
    a = await start(net, "a", rec)
    b = await start(net, "b")
    await b.join([seed(a)])
    b.broadcast(b"hello over gossip")
    await eventually(lambda: b"hello over gossip" in rec.msgs, within=5)


async def test_reliable_message(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    rec = Recorder()
    a = await start(net, "a", rec)
    b = await start(net, "b")
    await b.join([seed(a)])
    await b.send_reliable("a", b"x" * 5000)
    await eventually(lambda: rec.msgs == [b"x" * 5000], within=5)


async def test_more_than_255_broadcasts_are_split_into_compounds(
    net: tuple[MemoryNetwork, AsyncExitStack],
) -> None:
    rec = Recorder()
    a = await start(net, "a", rec)
    b = await start(net, "b", udp_buffer_size=60000)
    await b.join([seed(a)])
    for i in range(400):
        b.broadcast(b"m%d" % i)
    await eventually(lambda: len(set(rec.msgs)) == 400, within=5)


async def test_encrypted_cluster_and_key_mismatch(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    a = await start(net, "a", keys=(KEY_A,))
    b = await start(net, "b", keys=(KEY_A, KEY_B))  # B installed as a secondary key: rotation in progress
    c = await start(net, "c", keys=(KEY_B,))
    await b.join([seed(a)])
    await eventually(lambda: a.num_members() == 2, within=5)
    with pytest.raises(GossipError):
        await c.join([seed(a)])
    plain = await start(net, "plain")
    with pytest.raises(GossipError):
        await plain.join([seed(a)])
    assert a.num_members() == 2


async def test_periodic_push_pull_heals_a_missed_join(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    network, _ = net
    a = await start(net, "a", push_pull_interval=0.1)
    b = await start(net, "b", push_pull_interval=0.1)
    c = await start(net, "c", push_pull_interval=0.1)
    network.block(c.addr, b.addr)
    network.block(b.addr, c.addr)
    await b.join([seed(a)])
    await c.join([seed(a)])
    await eventually(lambda: {m.name for m in b.members()} == {"a", "b", "c"}, within=5)


async def test_incompatible_protocol_version_is_refused(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    a = await start(net, "a", protocol_version=5)
    b = await start(net, "b", protocol_version=1)
    # each side's range is 1..5, so versions 1 and 5 are compatible: both join
    await b.join([seed(a)])
    a.table.local.vsn = bytes([3, 5, 5, 0, 0, 0])  # a now claims it needs at least 3
    c = await start(net, "c", protocol_version=2)
    with pytest.raises(GossipError, match="incompatible"):
        await c.join([seed(a)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.binary(max_size=300), max_size=8))
async def test_hostile_packets_never_stop_the_node(junk: list[bytes]) -> None:
    network = MemoryNetwork()
    node = MemberlistNode(fast("victim"), transport=network.transport())
    await node.start()
    try:
        for data in junk:
            node.on_packet(data, ("127.0.0.1", 1))
            node.on_packet(encode(Suspect(incarnation=1, node="x", from_="y")) + data, ("127.0.0.1", 1))
        assert not node._runner or not node._runner.done()
        assert node.num_members() == 1
    finally:
        await node.shutdown()


async def test_hostile_streams_get_an_error_and_node_survives(
    net: tuple[MemoryNetwork, AsyncExitStack],
) -> None:
    network, _ = net
    a = await start(net, "a")
    rng = random.Random(7)
    client = network.transport()
    await client.start(lambda d, s: None, _ignore)
    for _ in range(30):
        stream = await client.dial(a.addr, 1)
        stream.write(bytes([6]) + rng.randbytes(rng.randint(0, 200)))
        stream.close()
    b = await start(net, "b")
    await b.join([seed(a)])
    assert a.num_members() == 2


async def _ignore(stream: object) -> None:
    return None


async def test_key_rotation_while_running(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    rec = Recorder()
    a = await start(net, "a", keys=(KEY_A,))
    b = await start(net, "b", rec, keys=(KEY_A,))
    await b.join([seed(a)])
    await eventually(lambda: a.num_members() == 2, within=5)
    assert a.keyring is not None and b.keyring is not None
    for n in (a, b):  # 1. install the new key everywhere
        assert n.keyring is not None
        n.keyring.add_key(KEY_B)
    for n in (a, b):  # 2. switch the primary everywhere
        assert n.keyring is not None
        n.keyring.use_key(KEY_B)
    for n in (a, b):  # 3. remove the old key
        assert n.keyring is not None
        n.keyring.remove_key(KEY_A)
    # (with two members every gossip round goes to b; with three, the broadcast's few transmissions might
    # all go to the newcomer, as in memberlist)
    a.broadcast(b"after rotation")
    await eventually(lambda: b"after rotation" in rec.msgs, within=5)
    newcomer = await start(net, "c", keys=(KEY_B,))
    await newcomer.join([seed(a)])
    await eventually(lambda: b.table.nodes.get("c") is not None, within=5)
    old = await start(net, "old", keys=(KEY_A,))
    with pytest.raises(GossipError):
        await old.join([seed(a)])


# -- memberlist >= 0.3.0 labels ----------------------------------------------------------------------------


def _record_packets(monkeypatch: pytest.MonkeyPatch, node: MemberlistNode) -> list[bytes]:
    """Every datagram ``node`` sends from now on."""
    sent: list[bytes] = []
    original = node.transport.send_packet

    def send_packet(data: bytes, addr: tuple[str, int]) -> None:
        sent.append(data)
        original(data, addr)

    monkeypatch.setattr(node.transport, "send_packet", send_packet)
    return sent


@pytest.mark.parametrize("keys", [(), (KEY_A,)], ids=["plain", "encrypted"])
async def test_nodes_with_the_same_label_join_and_gossip(
    net: tuple[MemoryNetwork, AsyncExitStack], monkeypatch: pytest.MonkeyPatch, keys: tuple[bytes, ...]
) -> None:
    rec_a, rec_b, rec_c = Recorder(), Recorder(), Recorder()
    a = await start(net, "a", rec_a, label="prod", keys=keys)
    b = await start(net, "b", rec_b, label="prod", keys=keys)
    c = await start(net, "c", rec_c, label="prod", keys=keys)
    sent = _record_packets(monkeypatch, b)
    assert await b.join([seed(a)]) == 1
    assert await c.join([seed(b)]) == 1
    await eventually(lambda: all(n.num_members() == 3 for n in (a, b, c)), within=5)
    b.broadcast(
        b"labelled news"
    )  # sent a limited number of times (maybe to one peer only), never re-gossiped
    await eventually(lambda: b"labelled news" in rec_a.msgs + rec_c.msgs, within=5)
    await a.send_reliable("b", b"over tcp")
    await eventually(lambda: b"over tcp" in rec_b.msgs, within=5)
    assert sent and all(p.startswith(b"\xf4\x04prod") for p in sent)
    assert all(n.stats["bad_packets"] == 0 and n.stats["bad_streams"] == 0 for n in (a, b, c))


@pytest.mark.parametrize("keys", [(), (KEY_A,)], ids=["plain", "encrypted"])
@pytest.mark.parametrize(("mine", "theirs"), [("prod", "dev"), ("prod", ""), ("", "prod")])
async def test_node_with_another_label_cannot_join(
    net: tuple[MemoryNetwork, AsyncExitStack], keys: tuple[bytes, ...], mine: str, theirs: str
) -> None:
    a = await start(net, "a", label=mine, keys=keys)
    friend = await start(net, "friend", label=mine, keys=keys)
    stranger = await start(net, "stranger", label=theirs, keys=keys)
    assert await friend.join([seed(a)]) == 1  # the control: the same label gets in
    with pytest.raises(GossipError):
        await stranger.join([seed(a)])
    with pytest.raises(GossipError):  # and the other way round
        await a.join([seed(stranger)])
    assert a.stats["bad_streams"] >= 1
    assert "stranger" not in a.table.nodes and "a" not in stranger.table.nodes
    await eventually(lambda: a.num_members() == 2 and friend.num_members() == 2, within=5)


async def test_packets_with_another_label_are_dropped(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    a = await start(net, "a", label="prod")
    friend = await start(net, "friend", label="prod")
    stranger = await start(net, "stranger", label="dev")
    bare = await start(net, "bare")
    assert await friend.prober.ping(a.addr, "a", 1.0)  # the control: a answers a ping with our label
    assert a.stats["bad_packets"] == 0
    assert not await stranger.prober.ping(a.addr, "a", 0.2)
    assert a.stats["bad_packets"] == 1
    assert not await bare.prober.ping(a.addr, "a", 0.2)
    assert a.stats["bad_packets"] == 2
    assert not await a.prober.ping(bare.addr, "bare", 0.2)  # an unlabelled node drops labelled packets
    assert bare.stats["bad_packets"] == 1
    # a forged alive for a stranger, gossiped without our label, changes nothing
    forged = Alive(incarnation=1, node="stranger", addr=b"\x7f\x00\x00\x01", port=stranger.addr[1])
    stranger.sender.send_parts(a.addr, [encode(forged)])
    await eventually(lambda: a.stats["bad_packets"] == 3, within=5)
    assert "stranger" not in a.table.nodes


async def test_label_mismatch_closes_the_stream_without_an_error_answer(
    net: tuple[MemoryNetwork, AsyncExitStack],
) -> None:
    network, _ = net
    a = await start(net, "a", label="prod")
    client = network.transport()
    await client.start(lambda d, s: None, _ignore)

    async def answer(data: bytes) -> bytes:
        stream = await client.dial(a.addr, 1)
        stream.write(data)
        got = b""
        while chunk := await stream.read():
            got += chunk
        stream.close()
        return got

    garbage = bytes([6]) + b"\xc1not msgpack"
    assert await answer(b"\xf4\x03dev" + garbage) == b""  # another label: closed, no errMsg
    assert await answer(garbage) == b""  # no label
    # the right label but a malformed message: an errMsg, which (an answer) carries no label header
    reply = await answer(b"\xf4\x04prod" + garbage)
    got = parse_stream(reply, keyring=None, label=b"prod", with_label_header=False)
    assert got is not None and isinstance(got[0], ErrResp)
    assert a.stats["bad_streams"] == 3


async def test_tcp_fallback_ping_with_labels(net: tuple[MemoryNetwork, AsyncExitStack]) -> None:
    network, _ = net
    a = await start(net, "a", label="prod", keys=(KEY_A,))
    b = await start(net, "b", label="prod", keys=(KEY_A,))
    await b.join([seed(a)])
    await eventually(lambda: a.num_members() == 2 and b.num_members() == 2, within=5)
    network.block(a.addr, b.addr, streams=False)
    await eventually(lambda: a.prober.tcp_acks >= 3, within=5)
    assert states(a)["b"] == NodeState.ALIVE
    assert b.stats["bad_streams"] == 0


async def test_skip_inbound_label_check_accepts_only_unlabelled_streams(
    net: tuple[MemoryNetwork, AsyncExitStack],
) -> None:
    a = await start(net, "a", label="prod", skip_inbound_label_check=True)
    bare = await start(net, "bare")
    labelled = await start(net, "labelled", label="prod")
    assert await bare.join([seed(a)]) == 1  # no header: taken as if it carried ours
    assert "bare" in a.table.nodes
    with pytest.raises(GossipError):  # a header is refused ("unexpected double stream label header")
        await labelled.join([seed(a)])
    assert "labelled" not in a.table.nodes
    # packets too: an unlabelled one is taken, a labelled one dropped
    alive = encode(Alive(incarnation=1, node="x", addr=b"\x7f\x00\x00\x01", port=1))
    bad = a.stats["bad_packets"]
    a.on_packet(encode_packet(alive, compress=False, crc=False, keyring=None), ("127.0.0.1", 1))
    assert a.stats["bad_packets"] == bad and "x" in a.table.nodes
    a.on_packet(
        encode_packet(alive, compress=False, crc=False, keyring=None, label=b"prod"), ("127.0.0.1", 1)
    )
    assert a.stats["bad_packets"] == bad + 1


def test_gossip_url_label() -> None:
    config, _, _ = parse_gossip_url("gossip://127.0.0.1:0?label=prod%20eu")
    assert config.label == "prod eu"
    assert parse_gossip_url("gossip://127.0.0.1:0")[0].label == ""
    with pytest.raises(ConfigError, match="255"):
        parse_gossip_url("gossip://127.0.0.1:0?label=" + "x" * 256)


async def test_labelled_packets_still_fit_the_udp_buffer(
    net: tuple[MemoryNetwork, AsyncExitStack], monkeypatch: pytest.MonkeyPatch
) -> None:
    label, size = "L" * 100, 300
    a = await start(net, "a", label=label, keys=(KEY_A,), udp_buffer_size=size)
    b = await start(net, "b", label=label, keys=(KEY_A,), udp_buffer_size=size)
    await b.join([seed(a)])
    await eventually(lambda: a.num_members() == 2, within=5)
    sent = _record_packets(monkeypatch, a)
    rng = random.Random(3)
    for _ in range(40):  # incompressible, so nothing is saved by compression
        a.broadcast(rng.randbytes(30))
    # memberlist's own accounting leaves out the CRC (5 bytes, b speaks protocol 5) and, in sendMsg, the
    # length entry of the message itself (2): a packet may exceed udp_buffer_size by that much, not by the
    # 102 bytes of the label header
    slack = 7
    a.gossip()  # memberlist gossip(): the label overhead comes off the space for broadcasts
    assert sent
    assert size - 40 < max(map(len, sent)) <= size + slack
    sent.clear()
    a.sender.send_msg(b.addr, encode(Ping(seq_no=1, node="b")))  # sendMsg(): piggy-backed on a ping
    assert len(sent) == 1
    assert size - 40 < len(sent[0]) <= size + slack
