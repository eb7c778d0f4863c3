"""Framing: compounds, CRC, compression, the UDP pipeline and TCP streams (spec §1.3–1.6)."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest

from discoverd.core.gossip import lzw
from discoverd.core.gossip.framing import (
    MAX_NESTING,
    MAX_PACKET_INFLATED,
    PushPull,
    UserStream,
    add_crc,
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
    Compress,
    ErrResp,
    Ping,
    PushNodeState,
    PushPullHeader,
    decode,
    encode,
    encode_struct,
    make_vsn,
)
from discoverd.errors import GossipDecodeError

KEY = b"micro-gossip-key"
PING = encode(Ping(seq_no=7, node="go1"))
ACK = encode(Ack(seq_no=7))
USER = b"\x08user payload"
LOCAL = b"\x7f\x00\x00\x01"


def state(i: int) -> PushNodeState:
    return PushNodeState(
        name=f"node-{i}", addr=LOCAL, port=7946 + i, meta=b"m", incarnation=i + 1, state=0, vsn=make_vsn()
    )


# -- compounds ---------------------------------------------------------------------------------------------


def test_compound_layout() -> None:
    (msg,) = make_compounds([PING, b"\x08x"])
    assert msg == bytes([7, 2]) + struct.pack(">HH", len(PING), 2) + PING + b"\x08x"
    assert split_compound(msg) == ([PING, b"\x08x"], 0)


def test_compound_edge_counts() -> None:
    assert make_compounds([]) == []
    assert make_compounds([PING]) == [PING]  # a single message is sent as is
    parts = [bytes([8, i % 256]) for i in range(600)]
    out = make_compounds(parts)
    assert [m[1] for m in out] == [255, 255, 90]
    assert [p for m in out for p in split_compound(m)[0]] == parts
    out = make_compounds(parts[:256])
    assert len(out) == 2 and out[0][1] == 255 and out[1] == parts[255]
    big = b"\x08" + bytes(65534)
    assert split_compound(make_compounds([big, PING])[0])[0] == [big, PING]


def test_compound_rejects_bad_parts() -> None:
    with pytest.raises(ValueError):
        make_compounds([PING, b""])
    with pytest.raises(ValueError):
        make_compounds([b"\x08" + bytes(65535)])


def test_split_compound_truncation_and_errors() -> None:
    (msg,) = make_compounds([PING, ACK, USER])
    assert split_compound(msg[:-1]) == ([PING, ACK], 1)
    assert split_compound(msg[: -len(USER) - 1]) == ([PING], 2)
    assert split_compound(msg + b"trailing") == ([PING, ACK, USER], 0)
    assert split_compound(b"\x07\x00") == ([], 0)
    for bad in (b"", b"\x07", b"\x07\x02\x00\x01\x00", PING):
        with pytest.raises(GossipDecodeError):
            split_compound(bad)


# -- CRC, compression, UDP pipeline ------------------------------------------------------------------------


def test_crc_and_compress_layout() -> None:
    assert add_crc(PING) == b"\x0c" + zlib.crc32(PING).to_bytes(4, "big") + PING
    packed = compress_message(PING)
    assert packed[0] == 9
    assert decode(packed) == Compress(algo=0, buf=lzw.compress(PING))
    assert msgpack.unpackb(packed[1:], raw=True) == {b"Algo": 0, b"Buf": lzw.compress(PING)}


def test_encode_packet_compresses_only_when_smaller() -> None:
    assert encode_packet(PING, compress=True, crc=False, keyring=None) == PING
    big = encode(Alive(incarnation=1, node="n", addr=LOCAL, port=1, meta=b"abc" * 150))
    out = encode_packet(big, compress=True, crc=False, keyring=None)
    assert out == compress_message(big) and len(out) < len(big)
    assert encode_packet(big, compress=False, crc=True, keyring=None) == add_crc(big)
    crc_first = encode_packet(big, compress=True, crc=True, keyring=None)
    assert crc_first == add_crc(compress_message(big))
    with pytest.raises(ValueError):
        encode_packet(b"", compress=False, crc=False, keyring=None)


def test_encrypted_packet_pipeline() -> None:
    kr = Keyring([KEY])
    (compound,) = make_compounds([PING, ACK, USER])
    data = encode_packet(compound * 1, compress=True, crc=True, keyring=kr)
    plain = kr.decrypt(data)  # empty AAD on UDP
    assert plain[0] == 12
    assert decode_packet(data, keyring=kr) == [PING, ACK, USER]
    v0 = encode_packet(PING, compress=False, crc=False, keyring=kr, encryption_version=0)
    assert v0[0] == 0 and decode_packet(v0, keyring=kr) == [PING]


def test_decode_packet_plain_forms() -> None:
    assert decode_packet(PING, keyring=None) == [PING]
    assert decode_packet(add_crc(PING), keyring=None) == [PING]
    assert decode_packet(USER, keyring=None) == [USER]
    assert decode_packet(b"\x08", keyring=None) == [b"\x08"]  # an empty user message is still delivered
    (compound,) = make_compounds([PING, compress_message(ACK), USER])
    assert decode_packet(compress_message(compound), keyring=None) == [PING, ACK, USER]
    assert decode_packet(compress_message(b""), keyring=None) == []  # empty inflated data is dropped


def test_decode_packet_encryption_rules() -> None:
    kr = Keyring([KEY])
    with pytest.raises(GossipDecodeError):
        decode_packet(PING, keyring=kr)  # plaintext refused when verifying
    assert decode_packet(PING, keyring=kr, verify_incoming=False) == [PING]
    other = encode_packet(PING, compress=False, crc=False, keyring=Keyring([bytes(16)]))
    with pytest.raises(GossipDecodeError):
        decode_packet(other, keyring=kr)
    with pytest.raises(GossipDecodeError):
        decode_packet(kr.encrypt(b""), keyring=kr)  # decrypts to nothing


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x0c" + (zlib.crc32(PING) ^ 1).to_bytes(4, "big") + PING,  # bad CRC
        b"\x0c" + zlib.crc32(b"").to_bytes(4, "big"),  # CRC of nothing
        b"\x0c\x00\x00",  # too short for a CRC: type 12 is not a message
        b"\x06\x80",  # push/pull is TCP only
        b"\x0a\x00\x00\x00\x00",
        b"\x0d\x80",
        b"\xf4\x01x",  # labels are not supported (memberlist 0.2.2)
        b"\x07\x03\x00",  # truncated compound header
        b"\x09\x80",  # compress without Buf: LZW of nothing is not a valid stream
        encode(Compress(algo=1, buf=lzw.compress(PING))),
        encode(Compress(algo=0, buf=lzw.compress(PING)[:-1])),
        compress_message(b"\x06\x80"),
    ],
)
def test_decode_packet_rejects(data: bytes) -> None:
    with pytest.raises(GossipDecodeError):
        decode_packet(data, keyring=None)


def test_bad_compound_parts_are_dropped_and_siblings_kept() -> None:
    (msg,) = make_compounds([PING, b"\x06\x80", add_crc(ACK), b"\x09garbage", USER])
    assert decode_packet(msg, keyring=None) == [PING, USER]
    # an empty part (which Go 0.2.2 would crash on) and a truncated tail
    empty_part = bytes([7, 2, 0, 0, 0, len(PING)]) + PING
    assert decode_packet(empty_part, keyring=None) == [PING]
    (msg,) = make_compounds([PING, ACK])
    assert decode_packet(msg[:-1], keyring=None) == [PING]


def test_nesting_is_bounded() -> None:
    msg = PING
    for _ in range(MAX_NESTING):
        msg = bytes([7, 1]) + struct.pack(">H", len(msg)) + msg
    assert decode_packet(msg, keyring=None) == [PING]
    # one level more: the innermost compound is a compound part, so it is dropped like any bad part
    assert decode_packet(compress_message(msg), keyring=None) == []
    # compress wrappers are not parts: too deep a chain fails the packet
    chain = PING
    for _ in range(MAX_NESTING + 1):
        chain = compress_message(chain)
    with pytest.raises(GossipDecodeError, match="nested"):
        decode_packet(chain, keyring=None)


def test_inflation_budget() -> None:
    bomb = compress_message(b"\x08" + bytes(MAX_PACKET_INFLATED))
    with pytest.raises(GossipDecodeError, match="exceeds"):
        decode_packet(bomb, keyring=None)
    ok = compress_message(b"\x08" + bytes(MAX_PACKET_INFLATED - 1))
    assert decode_packet(ok, keyring=None) == [b"\x08" + bytes(MAX_PACKET_INFLATED - 1)]


# -- TCP streams -------------------------------------------------------------------------------------------


def test_push_pull_layout() -> None:
    states = [state(0), state(1)]
    msg = encode_push_pull(states, b"user-state", join=True)
    header = encode_struct(PushPullHeader(nodes=2, user_state_len=10, join=True))
    assert msg == b"\x06" + header + encode_struct(states[0]) + encode_struct(states[1]) + b"user-state"
    assert encode_user_stream(b"abc") == b"\x08\x81\xaaUserMsgLen\x03abc"


def test_encode_stream_framing() -> None:
    msg = encode_push_pull([state(0)], b"", join=False)
    assert encode_stream(msg, compress=False, keyring=None) == msg
    assert encode_stream(msg, compress=True, keyring=None) == compress_message(msg)
    kr = Keyring([KEY])
    for version in (0, 1):
        out = encode_stream(msg, compress=True, keyring=kr, encryption_version=version)
        assert out[0] == 10
        assert struct.unpack(">I", out[1:5])[0] == len(out) - 5
        assert out[5] == version
        assert kr.decrypt(out[5:], aad=out[:5]) == compress_message(msg)
        with pytest.raises(GossipDecodeError):  # the 5 header bytes are the AAD
            kr.decrypt(out[5:])


def all_stream_forms(msg: bytes) -> list[tuple[bytes, Keyring | None]]:
    kr = Keyring([KEY])
    return [
        (encode_stream(msg, compress=c, keyring=k, encryption_version=v), k)
        for c in (False, True)
        for k in (None, kr)
        for v in ((0, 1) if k else (1,))
    ]


STREAMS: list[tuple[bytes, object]] = [
    (
        encode_push_pull([state(i) for i in range(3)], b"\x00user\xff", join=True),
        PushPull(
            header=PushPullHeader(nodes=3, user_state_len=6, join=True),
            states=[state(i) for i in range(3)],
            user_state=b"\x00user\xff",
        ),
    ),
    (
        encode_push_pull([], b"", join=False),
        PushPull(header=PushPullHeader(nodes=0, user_state_len=0, join=False), states=[], user_state=b""),
    ),
    (PING, Ping(seq_no=7, node="go1")),
    (ACK, Ack(seq_no=7)),
    (encode(ErrResp(error="nope")), ErrResp(error="nope")),
    (encode_user_stream(b"reliable"), UserStream(payload=b"reliable")),
    (encode_user_stream(b""), UserStream(payload=b"")),
]


@pytest.mark.parametrize(
    ("msg", "expected"), STREAMS, ids=["pushpull", "empty-pp", "ping", "ack", "err", "user", "user0"]
)
def test_parse_stream_every_form_and_every_prefix(msg: bytes, expected: object) -> None:
    for wire, kr in all_stream_forms(msg):
        for cut in range(len(wire)):
            assert parse_stream(wire[:cut], keyring=kr) is None
        assert parse_stream(wire + b"next", keyring=kr) == (expected, len(wire))


def test_parse_stream_encryption_rules() -> None:
    kr = Keyring([KEY])
    with pytest.raises(GossipDecodeError, match="not encrypted"):
        parse_stream(PING, keyring=kr)
    assert parse_stream(PING, keyring=kr, verify_incoming=False) == (Ping(seq_no=7, node="go1"), len(PING))
    encrypted = encode_stream(PING, compress=False, keyring=kr)
    with pytest.raises(GossipDecodeError, match="encrypted"):
        parse_stream(encrypted, keyring=None)
    with pytest.raises(GossipDecodeError):
        parse_stream(encrypted, keyring=Keyring([bytes(16)]))
    with pytest.raises(GossipDecodeError):  # one more byte claimed and sent: the blob no longer authenticates
        parse_stream(b"\x0a" + struct.pack(">I", len(encrypted) - 4) + encrypted[5:] + b"x", keyring=kr)


def encrypted(plain: bytes, kr: Keyring) -> bytes:
    header = b"\x0a" + struct.pack(">I", len(plain) + 29)
    return header + kr.encrypt(plain, aad=header)


def test_parse_stream_rejects() -> None:
    kr = Keyring([KEY])
    pp = encode_push_pull([state(0)], b"xyz", join=False)
    bad_plain = [
        b"\x07\x00",
        b"\x01\x80",
        b"\x03\x80",
        b"\x0b\x80",
        b"\xf4\x00",
        b"\x06\x92\x01\x02",  # header is an array
        b"\x06" + encode_struct(PushPullHeader(nodes=-1, user_state_len=0, join=False)),
        b"\x06" + encode_struct(PushPullHeader(nodes=1_048_577, user_state_len=0, join=False)),
        b"\x06" + encode_struct(PushPullHeader(nodes=0, user_state_len=-1, join=False)),
        b"\x06" + encode_struct(PushPullHeader(nodes=0, user_state_len=(20 << 20) + 1, join=False)),
        b"\x06" + encode_struct(PushPullHeader(nodes=1, user_state_len=0, join=False)) + b"\x81\xa4Name\x01",
        b"\x08\x81\xaaUserMsgLen\xff",  # negative length
        b"\x00\xc1",
        compress_message(b""),
        compress_message(pp[:-1]),  # inflated content must be complete
        compress_message(compress_message(PING)),  # compressed twice
        compress_message(encrypted(PING, kr)),
    ]
    for data in bad_plain:
        with pytest.raises(GossipDecodeError):
            parse_stream(data, keyring=None)
    bad_encrypted = [
        encrypted(b"", kr),
        encrypted(pp[:-1], kr),
        encrypted(encrypted(PING, kr), kr),
        encrypted(b"\x07\x00", kr),
        b"\x0a" + struct.pack(">I", (20 << 20) + 1),
    ]
    for data in bad_encrypted:
        with pytest.raises(GossipDecodeError):
            parse_stream(data, keyring=kr)


def test_parse_stream_size_limits() -> None:
    pp = encode_push_pull([state(i) for i in range(20)], b"u" * 100, join=False)
    assert parse_stream(pp, keyring=None, max_bytes=len(pp) - 1) is not None
    with pytest.raises(GossipDecodeError, match="exceeds"):
        parse_stream(pp, keyring=None, max_bytes=len(pp) - 2)
    with pytest.raises(GossipDecodeError, match="exceeds"):  # the states alone overflow the limit
        parse_stream(pp[:-50], keyring=None, max_bytes=200)
    # a string declared larger than the limit: waited for, then refused once the limit is passed
    huge_str = b"\x00\x81\xa4Node\xdb" + struct.pack(">I", 1 << 30)
    assert parse_stream(huge_str + bytes(900), keyring=None, max_bytes=1000) is None
    with pytest.raises(GossipDecodeError, match="exceeds"):
        parse_stream(huge_str + bytes(1000), keyring=None, max_bytes=1000)
    kr = Keyring([KEY])
    enc = encode_stream(pp, compress=False, keyring=kr)
    with pytest.raises(GossipDecodeError, match="exceeds"):
        parse_stream(enc[:5], keyring=kr, max_bytes=len(enc) - 6)
