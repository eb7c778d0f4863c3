"""Golden wire vectors produced by Go itself (``mlharness vectors``, see
``tests/gossip/harness/src/mlharness/vectors.go``): go-msgpack 0.5.5 messages, ``compress/lzw``, compound
and CRC framing, AES-GCM blobs, push/pull streams and the go-micro Update protobuf / Service JSON.

Pure Python: the JSON fixture is checked in, Go is not needed. Each vector is its own test case.

Where Go's bytes are something our encoders cannot express, the check is "equal up to the documented
convention" (still a byte comparison) plus decode equality:

* messages: Go writes a nil ``[]byte`` as msgpack nil (``c0``) and an empty one as ``a0``; our API has only
  ``b""``, written as nil for ``Ack.payload``, left out for ``SourceAddr`` (omitempty) and ``a0`` elsewhere
  (``messages.py``). An Alive without a 6-byte ``Vsn`` is refused by our encoder (decode only).
* Service JSON: Go writes nil slices/maps as ``null`` and escapes ``<``, ``>``, ``&`` (and U+2028/9) as
  ``\\u003c`` …; our model has no nil (we write ``[]``/``{}``) and orjson does not HTML-escape (``micro.py``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_type_hints

import orjson
import pytest

from discoverd.core.gossip import keyring as keyring_module
from discoverd.core.gossip import lzw
from discoverd.core.gossip.framing import (
    PACKET_TYPES,
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
from discoverd.core.gossip.keyring import Keyring, encrypted_length
from discoverd.core.gossip.messages import (
    Ack,
    Alive,
    Compress,
    Dead,
    ErrResp,
    IndirectPing,
    Message,
    Nack,
    Packet,
    Ping,
    PushNodeState,
    PushPullHeader,
    Struct,
    Suspect,
    UserMsgHeader,
    decode,
    encode,
    encode_struct,
    struct_from_map,
    unpack_one,
)
from discoverd.core.gossip.micro import (
    Endpoint,
    MicroNode,
    Service,
    Update,
    Value,
    decode_service,
    decode_update,
    encode_update,
    service_obj,
    service_to_json,
)
from discoverd.core.gossip.micro_state import MicroState
from discoverd.errors import GossipDecodeError

Vec = dict[str, Any]

GOLDEN_PATH = Path(__file__).parents[2] / "gossip" / "fixtures" / "golden.json"
GOLDEN: dict[str, Any] = json.loads(GOLDEN_PATH.read_text())
GROUPS = ("messages", "lzw", "framing", "aes", "streams", "micro")


def _params(group: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in GOLDEN[group]]


def _by_name(group: str) -> dict[str, Vec]:
    return {v["name"]: v for v in GOLDEN[group]}


def _hex(v: Vec, key: str = "hex") -> bytes:
    return bytes.fromhex(v[key])


def test_fixture_groups_all_covered() -> None:
    """A new group in the fixture must get tests here; every group holds vectors with unique names."""
    assert set(GOLDEN) - {"_doc"} == set(GROUPS)
    for group in GROUPS:
        names = [v["name"] for v in GOLDEN[group]]
        assert names, group
        assert len(names) == len(set(names)), group


# -- messages ----------------------------------------------------------------------------------------------

_CLASSES: dict[str, type[Message]] = {
    "ping": Ping,
    "indirectPingReq": IndirectPing,
    "ackResp": Ack,
    "nackResp": Nack,
    "errResp": ErrResp,
    "suspect": Suspect,
    "dead": Dead,
    "alive": Alive,
    "compress": Compress,
    "pushPullHeader": PushPullHeader,
    "pushNodeState": PushNodeState,
    "userMsgHeader": UserMsgHeader,
}
#: Our encoding of ``b""`` (messages.py): left out (omitempty) / msgpack nil; every other bytes field: ``a0``.
_OMITTED_WHEN_EMPTY = frozenset({"SourceAddr"})
_NIL_WHEN_EMPTY = frozenset({("ackResp", "Payload")})
_NIL, _EMPTY = b"\xc0", b"\xa0"


def _attr(go_name: str) -> str:
    """Go field name → dataclass attribute (``SeqNo`` → ``seq_no``, ``From`` → ``from_``)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", go_name).lower()
    return "from_" if snake == "from" else snake


def _bytes_attrs(cls: type) -> set[str]:
    return {name for name, hint in get_type_hints(cls).items() if hint is bytes}


def _build(cls: type[Message], fields: dict[str, Any]) -> Message:
    """The dataclass for Go's field values (hex strings for ``[]byte``, ``null`` = nil → ``b""``)."""
    attrs = {_attr(k): v for k, v in fields.items()}
    assert set(attrs) == {f.name for f in dataclasses.fields(cls)}, "Go struct and dataclass fields differ"
    for a in _bytes_attrs(cls):
        attrs[a] = b"" if attrs[a] is None else bytes.fromhex(attrs[a])
    return cls(**attrs)


def _key(go_name: str) -> bytes:
    """A short map key as go-msgpack writes it (fixstr)."""
    raw = go_name.encode()
    assert len(raw) < 32
    return bytes((0xA0 | len(raw),)) + raw


def _swap(buf: bytes, go_name: str, old: bytes, new: bytes, count: int = 1) -> bytes:
    """``buf`` with the value ``old`` of map key ``go_name`` replaced by ``new`` (exactly ``count`` times)."""
    pattern = _key(go_name) + old
    assert buf.count(pattern) == count, f"{go_name}: expected {count} x {pattern.hex()} in {buf.hex()}"
    return buf.replace(pattern, _key(go_name) + new)


def _convention_swaps(kind: str, fields: dict[str, Any], bytes_fields: list[str]) -> list[tuple[str, bytes]]:
    """Empty ``[]byte`` fields where Go's nil/empty choice differs from ours: ``(field, Go's value byte)``."""
    out = []
    for name in bytes_fields:
        value = fields[name]
        if value not in (None, "") or name in _OMITTED_WHEN_EMPTY:
            continue
        if (value is None) != ((kind, name) in _NIL_WHEN_EMPTY):
            out.append((name, _NIL if value is None else _EMPTY))
    return out


def _decode_any(kind: str, go: bytes, type_byte: int | None) -> Message:
    if type_byte is None:
        return struct_from_map(_CLASSES[kind], unpack_one(go))
    return decode(go)


def _encode_any(msg: Message) -> bytes:
    if isinstance(msg, (PushPullHeader, PushNodeState, UserMsgHeader)):
        s: Struct = msg
        return encode_struct(s)
    p: Packet = msg
    return encode(p)


@pytest.mark.parametrize("v", _params("messages"))
def test_message(v: Vec) -> None:
    kind, fields, go, type_byte = v["struct"], v["fields"], _hex(v), v["type_byte"]
    cls = _CLASSES[kind]
    assert {_attr(b) for b in v["bytes_fields"]} == _bytes_attrs(cls)
    expected = _build(cls, fields)

    # Decoding Go's bytes gives back the input values (nil and empty []byte both → b"").
    if type_byte is not None:
        assert go[0] == type_byte
    assert _decode_any(kind, go, type_byte) == expected

    if any(name == "Vsn" and fields[name] is None for name in v["bytes_fields"]):
        # Go can send an Alive/push state without Vsn; we refuse to produce one (decode only).
        with pytest.raises(ValueError, match="vsn"):
            _encode_any(expected)
        return

    ours = _encode_any(expected)
    assert _decode_any(kind, ours, type_byte) == expected
    want = go
    for name, go_value in _convention_swaps(kind, fields, v["bytes_fields"]):
        want = _swap(want, name, go_value, _EMPTY if go_value == _NIL else _NIL)
    # Byte-identical with Go, up to the documented nil-vs-empty convention for empty []byte fields.
    assert ours.hex() == want.hex()


def test_message_convention_cases_are_the_expected_ones() -> None:
    """The vectors our API cannot reproduce byte for byte are exactly the nil-vs-empty (and nil Vsn) ones."""
    inexact = sorted(
        v["name"]
        for v in GOLDEN["messages"]
        if _convention_swaps(v["struct"], v["fields"], v["bytes_fields"])
        or any(k == "Vsn" and v["fields"][k] is None for k in v["bytes_fields"])
    )
    assert inexact == [
        "ack_empty_payload",
        "alive_16_nil_meta",
        "alive_name300_utf8",
        "alive_nil_vsn_port0",
        "indirect_nil_target",
        "push_node_state_left16",
    ]


# -- lzw ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", _params("lzw"))
def test_lzw(v: Vec) -> None:
    data, go = _hex(v, "input_hex"), _hex(v)
    assert lzw.compress(data).hex() == go.hex()
    assert lzw.decompress(go) == data


# -- framing -----------------------------------------------------------------------------------------------

_FRAMING = _by_name("framing")


def _pin_nonce(monkeypatch: pytest.MonkeyPatch, nonce: bytes) -> None:
    """Make the keyring's next random nonces ``nonce`` (only for ``keyring.py``)."""

    def urandom(n: int) -> bytes:
        assert n == len(nonce)
        return nonce

    monkeypatch.setattr(keyring_module, "os", SimpleNamespace(urandom=urandom))


@pytest.mark.parametrize("v", _params("framing"))
def test_framing(v: Vec, monkeypatch: pytest.MonkeyPatch) -> None:
    name, go = v["name"], _hex(v)
    if name == "compound_3":
        parts = [bytes.fromhex(p) for p in v["parts_hex"]]
        assert [c.hex() for c in make_compounds(parts)] == [go.hex()]
        assert split_compound(go) == (parts, 0)
        assert decode_packet(go, keyring=None) == parts
        assert decode(parts[0]) == Ping(seq_no=1, node="py1")
        assert encode(decode(parts[1])) == parts[1]
    elif name.startswith("crc_"):
        data = _hex(v, "input_hex")
        assert add_crc(data).hex() == go.hex()
        assert decode_packet(go, keyring=None) == decode_packet(data, keyring=None)
        assert go[5:] == data
        bad = go[:1] + bytes((go[1] ^ 1,)) + go[2:]
        with pytest.raises(GossipDecodeError, match="CRC"):
            decode_packet(bad, keyring=None)
    elif name.startswith("compress_message_"):
        data = _hex(v, "input_hex")
        assert compress_message(data).hex() == go.hex()
        c = decode(go)
        assert isinstance(c, Compress)
        assert c.algo == 0
        assert lzw.decompress(c.buf) == data
        leaves = decode_packet(go, keyring=None)
        assert leaves == decode_packet(data, keyring=None)
        assert len(leaves) == 3
    elif name == "udp_compress_crc_encrypt":
        data, key, nonce = _hex(v, "input_hex"), _hex(v, "key_hex"), _hex(v, "nonce_hex")
        ring = Keyring([key])
        _pin_nonce(monkeypatch, nonce)
        ours = encode_packet(data, compress=True, crc=True, keyring=ring, encryption_version=v["version"])
        assert ours.hex() == go.hex()
        assert ring.decrypt(go) == add_crc(compress_message(data))
        alive_part = bytes.fromhex(_FRAMING["compound_3"]["parts_hex"][1])
        assert decode_packet(go, keyring=ring) == [alive_part] * 3
    else:
        pytest.fail(f"framing vector {name!r} has no test")


# -- aes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", _params("aes"))
def test_aes(v: Vec, monkeypatch: pytest.MonkeyPatch) -> None:
    go, key, nonce, pt = _hex(v), _hex(v, "key_hex"), _hex(v, "nonce_hex"), _hex(v, "plaintext_hex")
    version, aad = v["version"], _hex(v, "aad_hex")
    ring = Keyring([key])
    if v["form"] == "tcp":
        header = bytes((10,)) + struct.pack(">I", encrypted_length(version, len(pt)))
        assert aad == go[:5] == header
        blob = go[5:]
        assert len(blob) == encrypted_length(version, len(pt))
    else:
        assert v["form"] == "udp"
        assert aad == b""
        blob = go
    assert blob[0] == version
    assert blob[1:13] == nonce

    assert ring.decrypt(blob, aad=aad) == pt
    # A secondary key decrypts too; the wrong AAD does not.
    assert Keyring([bytes(len(key)), key]).decrypt(blob, aad=aad) == pt
    with pytest.raises(GossipDecodeError):
        ring.decrypt(blob, aad=b"\x0a\x00\x00\x00\x00" if not aad else b"")

    assert ring.encrypt(pt, aad=aad, version=version, nonce=nonce).hex() == blob.hex()
    _pin_nonce(monkeypatch, nonce)
    if v["form"] == "tcp":
        ours = encode_stream(pt, compress=False, keyring=ring, encryption_version=version)
    else:
        ours = encode_packet(pt, compress=False, crc=False, keyring=ring, encryption_version=version)
    assert ours.hex() == go.hex()
    if v["form"] == "udp" and pt[0] in PACKET_TYPES:
        assert decode_packet(go, keyring=ring) == [pt]


# -- streams -----------------------------------------------------------------------------------------------


def _state(fields: dict[str, Any]) -> PushNodeState:
    s = _build(PushNodeState, fields)
    assert isinstance(s, PushNodeState)
    return s


@pytest.mark.parametrize("v", _params("streams"))
def test_stream(v: Vec, monkeypatch: pytest.MonkeyPatch) -> None:
    go = _hex(v)
    if v["name"] == "user_stream":
        payload = _hex(v, "payload_hex")
        assert encode_user_stream(payload).hex() == go.hex()
        assert parse_stream(go, keyring=None) == (UserStream(payload=payload), len(go))
        assert parse_stream(go[:-1], keyring=None) is None
        return

    header = _build(PushPullHeader, v["header"])
    states = [_state(s) for s in v["states"]]
    user_state, plain = _hex(v, "user_state_hex"), _hex(v, "plain_hex")
    assert isinstance(header, PushPullHeader)
    assert header.nodes == len(states)
    assert header.user_state_len == len(user_state)

    # Our push/pull encoding: Go's, except a nil Meta (c0) that we write as an empty one (a0).
    nil_meta = sum(s["Meta"] is None for s in v["states"])
    want = _swap(plain, "Meta", _NIL, _EMPTY, count=nil_meta)
    assert encode_push_pull(states, user_state, header.join).hex() == want.hex()

    ring = Keyring([_hex(v, "key_hex")]) if "key_hex" in v else None
    if ring is not None:
        _pin_nonce(monkeypatch, _hex(v, "nonce_hex"))
    compressed = go != plain
    ours = encode_stream(plain, compress=compressed, keyring=ring, encryption_version=v.get("version", 1))
    assert ours.hex() == go.hex()

    expected = PushPull(header=header, states=states, user_state=user_state)
    assert parse_stream(go, keyring=ring) == (expected, len(go))
    assert parse_stream(go[:-1], keyring=ring) is None
    # Trailing bytes (the next message) are not consumed.
    assert parse_stream(go + b"\x00", keyring=ring) == (expected, len(go))
    if ring is None:
        assert parse_stream(plain, keyring=None) == (expected, len(plain))


# -- micro -------------------------------------------------------------------------------------------------

_MICRO = _by_name("micro")
_LIST_KEYS = (b"endpoints", b"nodes", b"values")


def _value(d: dict[str, Any] | None) -> Value | None:
    if d is None:
        return None
    children = [_value(x) for x in d["values"] or []]
    return Value(d["name"], d["type"], [c for c in children if c is not None])


def _service(d: dict[str, Any]) -> Service:
    """The Service of Go's struct (as the harness dumped it), written out independently of micro.py."""
    endpoints = [
        Endpoint(e["name"], _value(e["request"]), _value(e["response"]), e["metadata"] or {})
        for e in d["endpoints"] or []
    ]
    nodes = [MicroNode(n["id"], n["address"], n["metadata"] or {}) for n in d["nodes"] or []]
    return Service(d["name"], d["version"], d["metadata"] or {}, endpoints, nodes)


def _go_escape(js: bytes) -> bytes:
    """Go encoding/json's HTML-safe escaping applied to JSON text."""
    for raw, esc in ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026")):
        js = js.replace(raw, esc)
    return js.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")


def _no_nulls(go_json: bytes) -> bytes:
    """Go's JSON with nil slices/maps written as ``[]``/``{}`` (our model has no nil)."""
    for key in _LIST_KEYS:
        go_json = go_json.replace(b'"' + key + b'":null', b'"' + key + b'":[]')
    return go_json.replace(b'"metadata":null', b'"metadata":{}')


@pytest.mark.parametrize("v", _params("micro"))
def test_micro(v: Vec) -> None:
    name, go = v["name"], _hex(v)
    if name.startswith("update_"):
        update = Update(
            expires=v["expires"],
            type=v["type"],
            action=v["action"],
            metadata=v["metadata"],
            data=_hex(v, "data_hex"),
        )
        assert encode_update(update).hex() == go.hex()
        assert decode_update(go) == update
        assert decode_service(update.data) == _service(_MICRO["service_null_endpoints"]["service"])
    elif name.startswith("service_"):
        assert go == v["json"].encode()
        expected = _service(v["service"])
        assert decode_service(go) == expected
        ours = service_to_json(expected)
        assert _go_escape(ours).hex() == _no_nulls(go).hex()
        if b"null" not in go and b"\\u" not in go:
            assert ours.hex() == go.hex()
        assert decode_service(ours) == expected
    elif name == "local_state":
        assert go == v["json"].encode()
        by_name = {svc_name: [_service(s) for s in lst] for svc_name, lst in v["services"].items()}
        parsed = orjson.loads(go)
        assert list(parsed) == list(by_name)
        for svc_name, lst in parsed.items():
            assert [decode_service(orjson.dumps(s)) for s in lst] == by_name[svc_name]
        ours = orjson.dumps({k: [service_obj(s) for s in lst] for k, lst in by_name.items()})
        assert _go_escape(ours).hex() == _no_nulls(go).hex()
        # A discoverd node learns Go's push/pull user state (nodeless versions are not stored).
        state = MicroState()
        state.merge_remote_state(go, now_ns=10**18)
        assert state.rejected == 0
        assert state.names() == sorted(by_name)
        for svc_name, services in by_name.items():
            assert state.services(svc_name) == [s for s in services if s.nodes]
    else:
        pytest.fail(f"micro vector {name!r} has no test")
