"""memberlist messages: byte equality with Go's observed bytes (spec §1.2), Go typing rules when decoding."""

from __future__ import annotations

import re
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip.messages import (
    Ack,
    Alive,
    Compress,
    Dead,
    ErrResp,
    IndirectPing,
    MsgType,
    Nack,
    NodeState,
    Packet,
    Ping,
    PushNodeState,
    PushPullHeader,
    Suspect,
    UserMsgHeader,
    decode,
    encode,
    encode_struct,
    make_vsn,
    struct_from_map,
    unpack_one,
)
from discoverd.errors import GossipDecodeError


def spec_hex(text: str) -> bytes:
    """The spec's notation: hex bytes and "quoted" ASCII runs."""
    return b"".join(
        tok[1:-1].encode() if tok.startswith('"') else bytes.fromhex(tok)
        for tok in re.findall(r'"[^"]*"|[0-9a-f]+', text)
    )


GO_ACK = spec_hex('02 82 a7"Payload" c0 a5"SeqNo" 01')
GO_PING = spec_hex(
    '00 85 a4"Node" a3"py1" a5"SeqNo" 01 aa"SourceAddr" a4 7f000001 aa"SourceNode" a3"go1"'
    ' aa"SourcePort" cd 461a'
)
GO_ALIVE = spec_hex(
    '04 86 a4"Addr" a4 7f000001 ab"Incarnation" 01 a4"Meta" a8"meta-go1" a4"Node" a3"go1" a4"Port" cd 461a'
    ' a3"Vsn" a6 010502000000'
)
GO_DEAD = spec_hex('05 83 a4"From" a3"go1" ab"Incarnation" 01 a4"Node" a3"go1"')
LOCAL = b"\x7f\x00\x00\x01"


@pytest.mark.parametrize(
    ("wire", "msg"),
    [
        (GO_ACK, Ack(seq_no=1)),
        (
            GO_PING,
            Ping(seq_no=1, node="py1", source_addr=LOCAL, source_port=17946, source_node="go1"),
        ),
        (
            GO_ALIVE,
            Alive(incarnation=1, node="go1", addr=LOCAL, port=17946, meta=b"meta-go1", vsn=make_vsn()),
        ),
        (GO_DEAD, Dead(incarnation=1, node="go1", from_="go1")),
    ],
    ids=["ack", "ping", "alive", "dead"],
)
def test_go_observed_bytes(wire: bytes, msg: Packet) -> None:
    assert encode(msg) == wire
    assert decode(wire) == msg


def test_constants() -> None:
    assert [int(t) for t in MsgType] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 244]
    assert [int(s) for s in NodeState] == [0, 1, 2, 3]
    assert make_vsn() == bytes([1, 5, 2, 0, 0, 0])
    assert make_vsn(4, 1, 2, 3) == bytes([1, 5, 4, 1, 2, 3])
    with pytest.raises(ValueError):
        make_vsn(256)


def keys_in_order(wire: bytes) -> list[str]:
    pairs = msgpack.unpackb(wire[1:], raw=False, object_pairs_hook=list)
    return [k for k, _ in pairs]


def test_keys_are_alphabetical_and_source_fields_omitted_when_zero() -> None:
    ind = IndirectPing(seq_no=9, target=LOCAL, port=1, node="n", nack=True)
    assert keys_in_order(encode(ind)) == ["Nack", "Node", "Port", "SeqNo", "Target"]
    full = IndirectPing(
        seq_no=9, target=LOCAL, port=1, node="n", source_addr=LOCAL, source_port=2, source_node="s"
    )
    assert keys_in_order(encode(full)) == [
        "Nack",
        "Node",
        "Port",
        "SeqNo",
        "SourceAddr",
        "SourceNode",
        "SourcePort",
        "Target",
    ]
    assert keys_in_order(encode(Ping(seq_no=1))) == ["Node", "SeqNo"]
    assert keys_in_order(encode(Suspect(incarnation=1, node="a", from_="b"))) == [
        "From",
        "Incarnation",
        "Node",
    ]
    state = PushNodeState(name="a", addr=LOCAL, port=1, meta=b"", incarnation=1, state=0, vsn=make_vsn())
    assert [k for k, _ in msgpack.unpackb(encode_struct(state), object_pairs_hook=list)] == [
        "Addr",
        "Incarnation",
        "Meta",
        "Name",
        "Port",
        "State",
        "Vsn",
    ]
    header = encode_struct(PushPullHeader(nodes=1, user_state_len=2, join=True))
    assert header == spec_hex('83 a4"Join" c3 a5"Nodes" 01 ac"UserStateLen" 02')
    assert encode_struct(UserMsgHeader(user_msg_len=300)) == spec_hex('81 aa"UserMsgLen" cd 012c')


def test_bytes_use_the_raw_string_family() -> None:
    meta = b"m" * 40  # 32..65535 bytes: str16 (da), never str8 (d9) or bin (c4)
    wire = encode(Alive(incarnation=1, node="n", addr=LOCAL, port=1, meta=meta))
    assert b"\xa4Meta\xda\x00\x28" + meta in wire
    assert b"\xc4" not in wire and b"\xd9" not in wire
    assert encode(Ack(seq_no=1, payload=b"\x00\xff")) == spec_hex('02 82 a7"Payload" a2 00ff a5"SeqNo" 01')
    # an empty (non-Ack) bytes field is an empty raw string, like Go's empty non-nil slice
    assert b"\xa4Meta\xa0" in encode(Alive(incarnation=1, node="n", addr=LOCAL, port=1))


def test_other_messages_round_trip() -> None:
    msgs: list[Packet] = [
        Nack(seq_no=4_000_000_000),
        ErrResp(error="boom ü"),
        Compress(algo=0, buf=b"\x00\x01"),
        Suspect(incarnation=0xFFFF_FFFF, node="a", from_="b"),
        IndirectPing(seq_no=1, target=bytes(16), port=65535, node="t", nack=True, source_node="s"),
    ]
    for m in msgs:
        assert decode(encode(m)) == m


def body(obj: Any, *, bin_type: bool = False) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=bin_type))


def test_decode_accepts_what_go_accepts() -> None:
    # nil for every field kind gives the zero value; bin for []byte; missing keys → zero; unknown keys skipped
    wire = bytes([4]) + body(
        {"Vsn": None, "Node": None, "Addr": None, "Port": None, "Future": [1, {"x": 2}], "Meta": b"\x00\xff"},
        bin_type=True,
    )
    assert decode(wire) == Alive(incarnation=0, node="", addr=b"", port=0, meta=b"\x00\xff", vsn=b"")
    assert decode(bytes([1]) + body({"Nack": None, "SeqNo": 1})) == IndirectPing(
        seq_no=1, target=b"", port=0, node="", nack=False
    )
    # key order does not matter; trailing bytes after the map are ignored; 16-byte addresses pass
    wire = bytes([4]) + body({"Port": 7, "Addr": bytes(16), "Node": "x", "Incarnation": 3}) + b"\xc1junk"
    assert decode(wire) == Alive(incarnation=3, node="x", addr=bytes(16), port=7, meta=b"", vsn=b"")
    # a raw string holding non-UTF-8 bytes is fine for a []byte field
    assert decode(bytes([2]) + body({"SeqNo": 1, "Payload": b"\xff\xfe"})) == Ack(
        seq_no=1, payload=b"\xff\xfe"
    )


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x06\x80",  # push/pull is a stream message
        b"\x07\x00",
        b"\x08hello",
        b"\x0c\x00\x00\x00\x00",
        b"\xf4",
        b"\x02",  # truncated: no map
        bytes([2]) + body({"SeqNo": 1})[:-1],
        bytes([2]) + body([1, b""]),  # an array, not a map
        bytes([2]) + body({1: 2}),  # non-string key
        bytes([2]) + body({"SeqNo": 1}, bin_type=True).replace(b"\xa5SeqNo", b"\xc4\x05SeqNo"),  # bin key
        bytes([4]) + body({"Node": b"go1"}, bin_type=True),  # bin where Go wants a string
        bytes([4]) + body({"Node": b"\xff"}),  # non-UTF-8 string
        bytes([4]) + body({"Port": 65536}),
        bytes([4]) + body({"Incarnation": -1}),
        bytes([4]) + body({"Incarnation": 1 << 32}),
        bytes([4]) + body({"Port": True}),
        bytes([4]) + body({"Port": 1.0}),
        bytes([4]) + body({"Meta": 5}),
        bytes([4]) + body({"Meta": [1]}),
        bytes([4]) + body({"Node": {"a": 1}}),
        bytes([1]) + body({"Nack": 1}),  # bool must be a msgpack bool
        bytes([2]) + b"\xc1",  # reserved byte
        bytes([2]) + b"\x91" * 5000,  # deep nesting
        bytes([2]) + b"\xdd\xff\xff\xff\xff",  # huge array header
        bytes([2]) + b"\xdf\xff\xff\xff\xff",  # huge map header
        bytes([2]) + b"\xd7\xff" + bytes(8),  # timestamp ext
    ],
)
def test_decode_rejects(wire: bytes) -> None:
    with pytest.raises(GossipDecodeError):
        decode(wire)


def test_int_fields_take_the_whole_go_int_range() -> None:
    header = struct_from_map(PushPullHeader, unpack_one(body({"Nodes": -1, "UserStateLen": (1 << 63) - 1})))
    assert header == PushPullHeader(nodes=-1, user_state_len=(1 << 63) - 1, join=False)
    with pytest.raises(GossipDecodeError):
        struct_from_map(PushPullHeader, unpack_one(body({"Nodes": 1 << 63})))


def test_encode_rejects_what_go_could_not_decode() -> None:
    bad: list[Any] = [
        Alive(incarnation=1, node="n", addr=LOCAL, port=1, vsn=b"\x01\x05"),
        Alive(incarnation=1, node="n", addr=LOCAL, port=1, vsn=b""),
        Ping(seq_no=-1),
        Ping(seq_no=1 << 32),
        Ping(seq_no=1, source_port=70000),
        Ping(seq_no=True),
        Ping(seq_no=1, node=b"bytes"),  # type: ignore[arg-type]
        Ping(seq_no=1, node="\udcff"),
        Ack(seq_no=1, payload="text"),  # type: ignore[arg-type]
        IndirectPing(seq_no=1, target=LOCAL, port=1, node="n", nack=1),  # type: ignore[arg-type]
        PushNodeState(name="a", addr=LOCAL, port=1, meta=b"", incarnation=1, state=0, vsn=b"\x01"),
        PushPullHeader(nodes=1, user_state_len=0, join=False),  # not a packet
    ]
    for msg in bad:
        with pytest.raises(ValueError):
            encode(msg)
    with pytest.raises(ValueError):
        encode_struct(Ping(seq_no=1))  # type: ignore[arg-type]


names = st.text(max_size=20)
blobs = st.binary(max_size=40)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
vsns = st.binary(min_size=6, max_size=6)
packets = st.one_of(
    st.builds(Ping, seq_no=u32, node=names, source_addr=blobs, source_port=u16, source_node=names),
    st.builds(
        IndirectPing,
        seq_no=u32,
        target=blobs,
        port=u16,
        node=names,
        nack=st.booleans(),
        source_addr=blobs,
        source_port=u16,
        source_node=names,
    ),
    st.builds(Ack, seq_no=u32, payload=blobs),
    st.builds(Nack, seq_no=u32),
    st.builds(Suspect, incarnation=u32, node=names, from_=names),
    st.builds(Dead, incarnation=u32, node=names, from_=names),
    st.builds(Alive, incarnation=u32, node=names, addr=blobs, port=u16, meta=blobs, vsn=vsns),
    st.builds(ErrResp, error=names),
    st.builds(Compress, algo=st.integers(-(1 << 63), (1 << 63) - 1), buf=blobs),
)


TYPE_BYTE = {
    Ping: 0,
    IndirectPing: 1,
    Ack: 2,
    Suspect: 3,
    Alive: 4,
    Dead: 5,
    Compress: 9,
    Nack: 11,
    ErrResp: 13,
}


@settings(max_examples=300, deadline=None)
@given(packets)
def test_packet_round_trip(msg: Packet) -> None:
    wire = encode(msg)
    assert wire[0] == TYPE_BYTE[type(msg)]
    assert decode(wire) == msg
    # only the old raw-string family (no bin, no str8): repacking everything as raw gives the same bytes
    assert msgpack.packb(msgpack.unpackb(wire[1:], raw=True), use_bin_type=False) == wire[1:]


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        PushNodeState,
        name=names,
        addr=blobs,
        port=u16,
        meta=blobs,
        incarnation=u32,
        state=st.integers(-(1 << 63), (1 << 63) - 1),
        vsn=vsns,
    )
)
def test_push_node_state_round_trip(state: PushNodeState) -> None:
    assert struct_from_map(PushNodeState, unpack_one(encode_struct(state))) == state
