"""memberlist ≥ 0.3.0 labels (spec §1.1, §1.3, §1.4, §1.14; memberlist label.go, net.go, transport.go):
``[244][len][label]`` in front of packets and of the stream's opening message, the label as AES-GCM AAD
(UDP: the label; TCP: ``[10][u32 len]`` + label), and the inbound checks."""

from __future__ import annotations

import contextlib
import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.framing import (
    LABEL_MAX_SIZE,
    PushPull,
    add_crc,
    check_label,
    decode_packet,
    encode_packet,
    encode_push_pull,
    encode_stream,
    label_header,
    label_overhead,
    make_compounds,
    parse_stream,
    split_label,
)
from discoverd.core.gossip.keyring import Keyring
from discoverd.core.gossip.messages import Ack, ErrResp, Ping, PushNodeState, encode, make_vsn
from discoverd.errors import ConfigError, GossipDecodeError, GossipLabelError

KEY = b"micro-gossip-key"
KR = Keyring([KEY])
LABEL = b"prod"
PING = encode(Ping(seq_no=7, node="go1"))
ACK = encode(Ack(seq_no=7))
STATE = PushNodeState(
    name="a", addr=b"\x7f\x00\x00\x01", port=7946, meta=b"m", incarnation=1, state=0, vsn=make_vsn()
)
PUSH = encode_push_pull([STATE], b"user state", join=True)
FUZZ = settings(max_examples=300, deadline=2000)
labels = st.binary(min_size=1, max_size=LABEL_MAX_SIZE)


def aes_open(blob: bytes, aad: bytes) -> bytes:
    """Decrypt a version-1 blob with `cryptography` directly (independent of Keyring and framing)."""
    assert blob[0] == 1
    return AESGCM(KEY).decrypt(blob[1:13], blob[13:], aad)


# -- the header --------------------------------------------------------------------------------------------


def test_label_header_layout() -> None:
    assert label_header(b"prod") == b"\xf4\x04prod"
    assert label_header(b"") == b""
    assert label_header(b"x" * 255) == b"\xf4\xff" + b"x" * 255
    with pytest.raises(ValueError, match="255"):
        label_header(b"x" * 256)
    assert label_overhead(b"") == 0
    assert label_overhead(b"prod") == 6


def test_split_label() -> None:
    assert split_label(b"\xf4\x04prodREST") == (b"prod", 6)
    assert split_label(PING) == (b"", 0)
    assert split_label(b"") == (b"", 0)
    assert split_label(b"\xf4") is None  # cut short: a stream reader waits for more
    assert split_label(b"\xf4\x04pro") is None
    with pytest.raises(GossipLabelError, match="empty"):
        split_label(b"\xf4\x00" + PING)


def test_check_label_rules() -> None:
    assert check_label(b"prod", b"prod") == b"prod"
    assert check_label(b"", b"") == b""
    for found, mine in ((b"dev", b"prod"), (b"", b"prod"), (b"prod", b"")):
        with pytest.raises(GossipLabelError, match="unacceptable"):
            check_label(found, mine)
    # SkipInboundLabelCheck: no header expected, our label becomes the AAD; a header is refused
    assert check_label(b"", b"prod", skip_inbound_label_check=True) == b"prod"
    for found in (b"prod", b"dev"):
        with pytest.raises(GossipLabelError, match="double"):
            check_label(found, b"prod", skip_inbound_label_check=True)


# -- packets -----------------------------------------------------------------------------------------------


def test_plain_packet_layout() -> None:
    assert encode_packet(PING, compress=False, crc=False, keyring=None, label=LABEL) == b"\xf4\x04prod" + PING
    got = encode_packet(PING, compress=False, crc=True, keyring=None, label=LABEL)
    assert got == b"\xf4\x04prod" + add_crc(PING)  # the label goes outside the CRC


def test_empty_label_is_the_unlabelled_packet() -> None:
    assert encode_packet(PING, compress=False, crc=True, keyring=None, label=b"") == add_crc(PING)
    blob = encode_packet(PING, compress=False, crc=False, keyring=KR, label=b"")
    assert aes_open(blob, b"") == PING


def test_encrypted_packet_uses_the_label_as_aad() -> None:
    data = encode_packet(PING, compress=False, crc=False, keyring=KR, label=LABEL)
    assert data[:6] == b"\xf4\x04prod"
    blob = data[6:]
    assert len(blob) == 1 + 12 + len(PING) + 16
    assert aes_open(blob, LABEL) == PING
    for aad in (b"", b"\xf4\x04prod", b"dev"):
        with pytest.raises(InvalidTag):
            aes_open(blob, aad)


def test_packet_round_trip_with_label() -> None:
    for kr in (None, KR):
        for crc in (False, True):
            data = encode_packet(PING, compress=True, crc=crc, keyring=kr, label=LABEL)
            assert decode_packet(data, keyring=kr, label=LABEL) == [PING]


def test_packet_with_another_or_no_label_is_rejected() -> None:
    labelled = encode_packet(PING, compress=False, crc=False, keyring=None, label=b"dev")
    bare = encode_packet(PING, compress=False, crc=False, keyring=None)
    with pytest.raises(GossipLabelError, match="unacceptable"):
        decode_packet(labelled, keyring=None, label=LABEL)
    with pytest.raises(GossipLabelError, match="unacceptable"):
        decode_packet(bare, keyring=None, label=LABEL)
    with pytest.raises(GossipLabelError, match="unacceptable"):  # we have none, it has one
        decode_packet(labelled, keyring=None)


def test_blob_encrypted_under_one_label_does_not_decrypt_under_another() -> None:
    data = encode_packet(PING, compress=False, crc=False, keyring=KR, label=b"dev")
    relabelled = label_header(LABEL) + data[5:]  # swap the header, keep the blob
    assert decode_packet(data, keyring=KR, label=b"dev") == [PING]
    with pytest.raises(GossipDecodeError, match="no installed key"):
        decode_packet(relabelled, keyring=KR, label=LABEL)
    with pytest.raises(GossipDecodeError, match="no installed key"):  # header stripped: AAD becomes empty
        decode_packet(data[5:], keyring=KR)


def test_skip_inbound_label_check_on_packets() -> None:
    bare_plain = encode_packet(PING, compress=False, crc=False, keyring=None)
    assert decode_packet(bare_plain, keyring=None, label=LABEL, skip_inbound_label_check=True) == [PING]
    # the label is still the AAD: an unlabelled peer encrypting with our label as AAD is accepted…
    bare_sealed = encode_packet(PING, compress=False, crc=False, keyring=KR, label=LABEL)[6:]
    assert decode_packet(bare_sealed, keyring=KR, label=LABEL, skip_inbound_label_check=True) == [PING]
    # …one encrypting with an empty AAD is not
    no_aad = encode_packet(PING, compress=False, crc=False, keyring=KR)
    with pytest.raises(GossipDecodeError, match="no installed key"):
        decode_packet(no_aad, keyring=KR, label=LABEL, skip_inbound_label_check=True)
    labelled = encode_packet(PING, compress=False, crc=False, keyring=None, label=LABEL)
    with pytest.raises(GossipLabelError, match="double"):
        decode_packet(labelled, keyring=None, label=LABEL, skip_inbound_label_check=True)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xf4", "truncated"),
        (b"\xf4\x05prod", "truncated"),
        (b"\xf4\x00" + PING, "empty"),
        (b"\xf4\x04prod", "empty packet"),
    ],
)
def test_malformed_packet_labels(data: bytes, match: str) -> None:
    with pytest.raises(GossipDecodeError, match=match):
        decode_packet(data, keyring=None, label=LABEL)


def test_compound_behind_a_label() -> None:
    (compound,) = make_compounds([PING, ACK])
    data = encode_packet(compound, compress=False, crc=False, keyring=KR, label=LABEL)
    assert decode_packet(data, keyring=KR, label=LABEL) == [PING, ACK]


def test_encode_packet_refuses_a_long_label() -> None:
    with pytest.raises(ValueError, match="255"):
        encode_packet(PING, compress=False, crc=False, keyring=None, label=b"x" * 256)


# -- streams -----------------------------------------------------------------------------------------------


def test_plain_stream_layout() -> None:
    opening = encode_stream(PING, compress=False, keyring=None, label=LABEL)
    assert opening == b"\xf4\x04prod" + PING
    answer = encode_stream(ACK, compress=False, keyring=None, label=LABEL, with_label_header=False)
    assert answer == ACK  # memberlist's responder writes no header
    assert encode_stream(PING, compress=False, keyring=None, label=b"") == PING


def test_encrypted_stream_aad_is_encrypt_header_plus_label() -> None:
    data = encode_stream(PING, compress=False, keyring=KR, label=LABEL)
    assert data[:6] == b"\xf4\x04prod"
    head, blob = data[6:11], data[11:]
    assert head == b"\x0a" + struct.pack(">I", len(blob))
    assert aes_open(blob, head + LABEL) == PING
    for aad in (head, LABEL + head, head + b"\xf4\x04prod"):
        with pytest.raises(InvalidTag):
            aes_open(blob, aad)
    answer = encode_stream(ACK, compress=False, keyring=KR, label=LABEL, with_label_header=False)
    assert answer[0] == 0x0A
    assert aes_open(answer[5:], answer[:5] + LABEL) == ACK


def test_empty_label_stream_aad_is_the_encrypt_header_only() -> None:
    data = encode_stream(PING, compress=False, keyring=KR, label=b"")
    assert aes_open(data[5:], data[:5]) == PING


def test_stream_round_trip_with_label() -> None:
    for kr in (None, KR):
        opening = encode_stream(PUSH, compress=True, keyring=kr, label=LABEL)
        got = parse_stream(opening + b"trailing", keyring=kr, label=LABEL)
        assert got is not None
        msg, used = got
        assert used == len(opening)
        assert isinstance(msg, PushPull)
        assert msg.user_state == b"user state"
        assert msg.states == [STATE]
        answer = encode_stream(PUSH, compress=True, keyring=kr, label=LABEL, with_label_header=False)
        got = parse_stream(answer, keyring=kr, label=LABEL, with_label_header=False)
        assert got is not None and got[1] == len(answer)


def test_stream_is_parsed_incrementally_across_the_label_header() -> None:
    data = encode_stream(PUSH, compress=False, keyring=None, label=LABEL)
    for cut in range(len(data)):
        assert parse_stream(data[:cut], keyring=None, label=LABEL) is None, cut
    assert parse_stream(data, keyring=None, label=LABEL) is not None


def test_stream_label_mismatch_is_rejected() -> None:
    other = encode_stream(PING, compress=False, keyring=None, label=b"dev")
    bare = encode_stream(PING, compress=False, keyring=None)
    with pytest.raises(GossipLabelError, match="unacceptable"):
        parse_stream(other, keyring=None, label=LABEL)
    with pytest.raises(GossipLabelError, match="unacceptable"):
        parse_stream(bare, keyring=None, label=LABEL)
    with pytest.raises(GossipLabelError, match="unacceptable"):
        parse_stream(other, keyring=None)
    with pytest.raises(GossipLabelError, match="empty"):
        parse_stream(b"\xf4\x00" + PING, keyring=None, label=LABEL)
    # an answer starting with a label header is not a message
    with pytest.raises(GossipDecodeError, match="244"):
        parse_stream(other, keyring=None, label=b"dev", with_label_header=False)


def test_encrypted_stream_under_another_label_does_not_decrypt() -> None:
    data = encode_stream(PING, compress=False, keyring=KR, label=b"dev")
    relabelled = label_header(LABEL) + data[5:]
    assert parse_stream(data, keyring=KR, label=b"dev") is not None
    with pytest.raises(GossipDecodeError, match="no installed key"):
        parse_stream(relabelled, keyring=KR, label=LABEL)
    answer = encode_stream(ACK, compress=False, keyring=KR, label=b"dev", with_label_header=False)
    with pytest.raises(GossipDecodeError, match="no installed key"):
        parse_stream(answer, keyring=KR, label=LABEL, with_label_header=False)
    with pytest.raises(GossipDecodeError, match="no installed key"):
        parse_stream(answer, keyring=KR, with_label_header=False)


def test_skip_inbound_label_check_on_streams() -> None:
    bare = encode_stream(PING, compress=False, keyring=KR, label=LABEL, with_label_header=False)
    got = parse_stream(bare, keyring=KR, label=LABEL, skip_inbound_label_check=True)
    assert got is not None and isinstance(got[0], Ping)
    labelled = encode_stream(PING, compress=False, keyring=KR, label=LABEL)
    with pytest.raises(GossipLabelError, match="double"):
        parse_stream(labelled, keyring=KR, label=LABEL, skip_inbound_label_check=True)


def test_error_answer_on_a_labelled_stream_has_no_header() -> None:
    err = encode(ErrResp(error="boom"))
    got = parse_stream(err, keyring=None, label=LABEL, with_label_header=False)
    assert got is not None and got[0] == ErrResp(error="boom")


def test_encode_stream_refuses_a_long_label() -> None:
    for header in (True, False):
        with pytest.raises(ValueError, match="255"):
            encode_stream(PING, compress=False, keyring=None, label=b"x" * 256, with_label_header=header)


# -- config ------------------------------------------------------------------------------------------------


def test_config_label() -> None:
    assert GossipConfig().label == ""
    assert GossipConfig().label_bytes == b""
    assert GossipConfig().skip_inbound_label_check is False
    assert GossipConfig(label="é" * 127).label_bytes == "é".encode() * 127  # 254 bytes
    assert GossipConfig.local(label="x" * 255, skip_inbound_label_check=True).skip_inbound_label_check
    with pytest.raises(ConfigError, match="255 bytes, got 256"):
        GossipConfig(label="é" * 128)  # 128 characters, 256 bytes
    with pytest.raises(ConfigError, match="255 bytes"):
        GossipConfig(label="x" * 256)
    with pytest.raises(ConfigError, match="UTF-8"):
        GossipConfig(label="\ud800")
    with pytest.raises(ConfigError, match="string"):
        GossipConfig(label=b"prod")  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------------------------


@FUZZ
@given(
    data=st.binary(max_size=400),
    label=st.binary(max_size=8),
    prefix=st.sampled_from([b"", b"\xf4", b"\xf4\x04prod", b"\xf4\x00", b"\xf4\x03dev"]),
    encrypted=st.booleans(),
    skip=st.booleans(),
)
def test_decode_packet_with_label_raises_only_decode_errors(
    data: bytes, label: bytes, prefix: bytes, encrypted: bool, skip: bool
) -> None:
    with contextlib.suppress(GossipDecodeError):
        decode_packet(
            prefix + data,
            keyring=KR if encrypted else None,
            label=label,
            skip_inbound_label_check=skip,
        )


@FUZZ
@given(
    data=st.binary(max_size=400),
    label=st.binary(max_size=8),
    prefix=st.sampled_from([b"", b"\xf4", b"\xf4\x04prod", b"\xf4\x00", b"\xf4\x03dev"]),
    encrypted=st.booleans(),
    header=st.booleans(),
)
def test_parse_stream_with_label_raises_only_decode_errors(
    data: bytes, label: bytes, prefix: bytes, encrypted: bool, header: bool
) -> None:
    with contextlib.suppress(GossipDecodeError):
        parse_stream(prefix + data, keyring=KR if encrypted else None, label=label, with_label_header=header)


@FUZZ
@given(label=labels, encrypted=st.booleans(), crc=st.booleans(), other=labels)
def test_any_label_round_trips_and_only_its_own(
    label: bytes, encrypted: bool, crc: bool, other: bytes
) -> None:
    kr = KR if encrypted else None
    data = encode_packet(PING, compress=True, crc=crc, keyring=kr, label=label)
    assert data[:2] == bytes((244, len(label))) and data[2 : 2 + len(label)] == label
    assert decode_packet(data, keyring=kr, label=label) == [PING]
    if other != label:
        with pytest.raises(GossipLabelError):
            decode_packet(data, keyring=kr, label=other)
    stream = encode_stream(PING, compress=True, keyring=kr, label=label)
    got = parse_stream(stream, keyring=kr, label=label)
    assert got is not None and got == (Ping(seq_no=7, node="go1"), len(stream))
