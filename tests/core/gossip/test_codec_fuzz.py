"""Property tests: decoders fed arbitrary or mutated bytes raise only GossipDecodeError (and finish quickly);
encoders never produce what crashes memberlist 0.2.2 (empty compound parts, >255 parts, short Vsn)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip import lzw
from discoverd.core.gossip.framing import (
    MAX_COMPOUND_PARTS,
    compress_message,
    decode_packet,
    encode_packet,
    encode_push_pull,
    encode_stream,
    encode_user_stream,
    make_compounds,
    parse_stream,
    split_compound,
)
from discoverd.core.gossip.keyring import Keyring
from discoverd.core.gossip.messages import (
    Ack,
    Alive,
    Dead,
    Ping,
    PushNodeState,
    decode,
    encode,
    encode_struct,
    make_vsn,
    struct_from_map,
    unpack_one,
)
from discoverd.errors import GossipDecodeError

KR = Keyring([b"micro-gossip-key"])
FUZZ = settings(max_examples=250, deadline=2000)
LOCAL = b"\x7f\x00\x00\x01"
PING = encode(Ping(seq_no=1, node="a", source_addr=LOCAL, source_port=7946, source_node="b"))
ALIVE = encode(Alive(incarnation=3, node="a", addr=LOCAL, port=7946, meta=b"meta"))
DEAD = encode(Dead(incarnation=3, node="a", from_="a"))
STATE = PushNodeState(name="a", addr=LOCAL, port=1, meta=b"", incarnation=1, state=0, vsn=make_vsn())
FIELD_NAMES = ["SeqNo", "Node", "Addr", "Port", "Meta", "Vsn", "Incarnation", "From", "Nack", "Target"]
FIELD_NAMES += ["Payload", "Error", "Algo", "Buf", "SourceAddr", "SourcePort", "SourceNode", "Other"]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def mutate(data: st.DataObject, wire: bytes) -> bytes:
    """Truncate, flip or insert a few bytes of ``wire``."""
    buf = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[pos:]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    return bytes(buf)


def only_decode_errors(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except GossipDecodeError:
        return None


@FUZZ
@given(st.binary(max_size=300))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    only_decode_errors(decode, data)
    only_decode_errors(lzw.decompress, data)


@FUZZ
@given(
    kind=st.sampled_from([0, 1, 2, 3, 4, 5, 9, 11, 13]),
    fields=st.dictionaries(st.sampled_from(FIELD_NAMES), msgpack_values, max_size=8),
    bin_type=st.booleans(),
    trailing=st.binary(max_size=4),
)
def test_decode_structured_garbage(
    kind: int, fields: dict[str, Any], bin_type: bool, trailing: bytes
) -> None:
    wire = bytes([kind]) + msgpack.packb(fields, use_bin_type=bin_type) + trailing
    msg = only_decode_errors(decode, wire)
    if msg is not None:
        try:  # what decodes re-encodes, except a Vsn that is not 6 bytes long
            assert decode(encode(msg)) == msg
        except ValueError as e:
            assert "vsn" in str(e)


@FUZZ
@given(st.data())
def test_mutated_packets(data: st.DataObject) -> None:
    parts = data.draw(st.lists(st.sampled_from([PING, ALIVE, DEAD, b"\x08user"]), min_size=1, max_size=5))
    keyring = data.draw(st.sampled_from([None, KR]))
    packet = encode_packet(
        make_compounds(parts)[0],
        compress=data.draw(st.booleans()),
        crc=data.draw(st.booleans()),
        keyring=keyring,
    )
    assert decode_packet(packet, keyring=keyring) == parts
    wire = mutate(data, packet)
    leaves = only_decode_errors(
        decode_packet, wire, keyring=keyring, verify_incoming=data.draw(st.booleans())
    )
    for leaf in leaves or []:
        assert leaf and leaf[0] in (0, 1, 2, 3, 4, 5, 8, 11)
        if leaf[0] != 8:
            only_decode_errors(decode, leaf)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([None, KR]), st.booleans())
def test_decode_packet_arbitrary_bytes(data: bytes, keyring: Keyring | None, verify: bool) -> None:
    only_decode_errors(decode_packet, data, keyring=keyring, verify_incoming=verify)


def check_parse(buf: bytes, keyring: Keyring | None, verify: bool = True) -> None:
    got = only_decode_errors(parse_stream, buf, keyring=keyring, verify_incoming=verify, max_bytes=4096)
    if got is not None:
        assert 0 < got[1] <= len(buf)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([None, KR]), st.booleans())
def test_parse_stream_arbitrary_bytes(data: bytes, keyring: Keyring | None, verify: bool) -> None:
    check_parse(data, keyring, verify)
    check_parse(bytes([6]) + data, None)
    check_parse(bytes([9]) + data, None)


@FUZZ
@given(st.data())
def test_mutated_streams(data: st.DataObject) -> None:
    msg = data.draw(
        st.sampled_from(
            [
                encode_push_pull([STATE, STATE], b"user", join=True),
                PING,
                encode(Ack(seq_no=1)),
                encode_user_stream(b"x"),
            ]
        )
    )
    keyring = data.draw(st.sampled_from([None, KR]))
    wire = encode_stream(msg, compress=data.draw(st.booleans()), keyring=keyring)
    check_parse(mutate(data, wire), keyring)


@FUZZ
@given(st.data())
def test_mutated_lzw(data: st.DataObject) -> None:
    plain = data.draw(st.binary(max_size=200) | st.text(alphabet="xy", max_size=500).map(str.encode))
    out = only_decode_errors(lzw.decompress, mutate(data, lzw.compress(plain)), max_size=1 << 16)
    assert out is None or len(out) <= 1 << 16


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8), max_size=700))
def test_make_compounds_never_emits_empty_parts_or_more_than_255(parts: list[bytes]) -> None:
    out = make_compounds(parts)
    assert all(out)
    recovered: list[bytes] = []
    for msg in out:
        if msg[0] == 7 and len(parts) > 1:
            got, truncated = split_compound(msg)
            assert 2 <= len(got) <= MAX_COMPOUND_PARTS and truncated == 0 and all(got)
            recovered += got
        else:
            recovered.append(msg)
    assert recovered == parts


@settings(max_examples=200, deadline=None)
@given(
    vsn=st.binary(max_size=10),
    meta=st.binary(max_size=20),
    port=st.integers(0, 65535),
    inc=st.integers(0, 0xFFFF_FFFF),
)
def test_vsn_always_six_bytes(vsn: bytes, meta: bytes, port: int, inc: int) -> None:
    alive = Alive(incarnation=inc, node="n", addr=LOCAL, port=port, meta=meta, vsn=vsn)
    state = PushNodeState(name="n", addr=LOCAL, port=port, meta=meta, incarnation=inc, state=0, vsn=vsn)
    if len(vsn) != 6:
        with pytest.raises(ValueError):
            encode(alive)
        with pytest.raises(ValueError):
            encode_struct(state)
        return
    decoded = decode(encode(alive))
    assert isinstance(decoded, Alive) and len(decoded.vsn) == 6
    assert len(struct_from_map(PushNodeState, unpack_one(encode_struct(state))).vsn) == 6
    # and compressing it keeps it intact through the UDP pipeline
    assert decode_packet(compress_message(encode(alive)), keyring=None) == [encode(alive)]
