"""go-micro gossip layer codecs: the Update protobuf, the Service JSON and the Instance mapping."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip.micro import (
    ACTION_CREATE,
    ACTION_DELETE,
    MAX_VALUE_DEPTH,
    TYPE_SERVICE,
    Endpoint,
    MicroNode,
    Service,
    Update,
    Value,
    decode_service,
    decode_update,
    encode_update,
    host_port,
    instance_to_service,
    node_instance,
    service_from_json,
    service_instances,
    service_to_json,
    service_update,
)
from discoverd.errors import GossipDecodeError
from discoverd.model import UP, WAITING, Instance

GO_JSON = (
    b'{"name":"go.a","version":"1.0.0","metadata":{"k":"v"},"endpoints":null,'
    b'"nodes":[{"id":"go.a-node1","address":"10.0.0.1:8080","metadata":{"proto":"grpc"}}]}'
)
EXPIRES = 1_700_000_000_123_456_789
EXPIRES_VARINT = bytes.fromhex("95 9a 97 ec e3 9f e7 cb 17")
META_ENTRY = bytes.fromhex("32 20 0a 0c") + b"Content-Type" + bytes.fromhex("12 10") + b"application/json"
#: A register update as the Go registry sends it (spec 2.5): expires, type 1, action 1, metadata, data.
GO_CREATE = b"\x08" + EXPIRES_VARINT + bytes.fromhex("10 01 18 01") + META_ENTRY + b"\x3a\x9b\x01" + GO_JSON
#: A deregister update: no expires field, action 2.
GO_DELETE = bytes.fromhex("10 01 18 02") + META_ENTRY + b"\x3a\x9b\x01" + GO_JSON


# --- protobuf -----------------------------------------------------------------------------------------------


def test_encode_register_update_matches_go_bytes() -> None:
    assert encode_update(Update(expires=EXPIRES, data=GO_JSON)) == GO_CREATE


def test_encode_deregister_update_has_no_expires() -> None:
    assert encode_update(Update(action=ACTION_DELETE, data=GO_JSON)) == GO_DELETE


def test_decode_go_bytes() -> None:
    u = decode_update(GO_CREATE)
    assert u == Update(expires=EXPIRES, type=TYPE_SERVICE, action=ACTION_CREATE, data=GO_JSON)
    assert u.metadata == {"Content-Type": "application/json"}
    assert decode_update(GO_DELETE) == Update(action=ACTION_DELETE, data=GO_JSON)


def test_zero_fields_are_omitted_and_decode_as_proto3_zeros() -> None:
    empty = Update(type=0, action=0, metadata={}, data=b"")
    assert encode_update(empty) == b""
    assert decode_update(b"") == empty


def test_map_entries_are_sorted_and_keep_empty_keys_and_values() -> None:
    u = Update(type=0, action=0, metadata={"b": "", "": "x"})
    assert encode_update(u) == bytes.fromhex("32 05 0a 00 12 01 78 32 05 0a 01 62 12 00")
    assert decode_update(encode_update(u)) == u


def test_negative_int32_takes_ten_bytes() -> None:
    raw = encode_update(Update(type=-1, action=0, metadata={}))
    assert raw == b"\x10" + b"\xff" * 9 + b"\x01"
    assert decode_update(raw).type == -1


def test_int32_fields_keep_the_low_32_bits_like_go() -> None:
    # varint 2**32 + 5 → int32(5); varint 2**31 → int32(-2**31)
    assert decode_update(bytes.fromhex("18 85 80 80 80 10")).action == 5
    assert decode_update(bytes.fromhex("18 80 80 80 80 08")).action == -(2**31)


@pytest.mark.parametrize(
    "update",
    [Update(expires=-1), Update(expires=2**64), Update(type=2**31), Update(action=-(2**31) - 1)],
)
def test_encode_rejects_out_of_range_numbers(update: Update) -> None:
    with pytest.raises(ValueError):
        encode_update(update)


def test_decode_skips_unknown_fields_of_every_wire_type() -> None:
    unknown = (
        bytes.fromhex("20 96 01")  # field 4 varint
        + bytes.fromhex("29") + bytes(8)  # field 5 fixed64
        + bytes.fromhex("42 03") + b"abc"  # field 8 length-delimited
        + bytes.fromhex("4d") + bytes(4)  # field 9 fixed32
        + bytes.fromhex("0a 02 01 02")  # field 1 (expires) with the wrong wire type: unknown
        + bytes.fromhex("80 80 80 01 00")  # field 262144 (4-byte tag) varint
    )  # fmt: skip
    entry = bytes.fromhex("32 0d 0a 01 6b 18 07 12 01 76 25 00 00 00 00")  # key, field 3, value, fixed32
    assert decode_update(unknown + GO_CREATE + entry) == Update(
        expires=EXPIRES, data=GO_JSON, metadata={"Content-Type": "application/json", "k": "v"}
    )


def test_decode_repeated_fields_last_scalar_wins_and_map_entries_accumulate() -> None:
    raw = (
        bytes.fromhex("08 01 08 02 10 01")
        + bytes.fromhex("32 06 0a 01 61 12 01 31")  # a=1
        + bytes.fromhex("32 06 0a 01 61 12 01 32")  # a=2 (replaces)
        + bytes.fromhex("32 03 0a 01 62")  # b with no value
        + bytes.fromhex("32 00")  # empty entry: "" = ""
        + bytes.fromhex("3a 01 78 3a 01 79")
    )
    assert decode_update(raw) == Update(
        expires=2, type=1, action=0, metadata={"a": "2", "b": "", "": ""}, data=b"y"
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x08", id="missing-varint"),
        pytest.param(b"\x08\x80", id="truncated-varint"),
        pytest.param(b"\x80", id="truncated-tag"),
        pytest.param(b"\x08" + b"\xff" * 10 + b"\x01", id="varint-11-bytes"),
        pytest.param(b"\x08" + b"\xff" * 9 + b"\x02", id="varint-overflows-64-bits"),
        pytest.param(b"\x3a\x05abc", id="length-past-end"),
        pytest.param(b"\x3a\xff\xff\xff\xff\x0f", id="huge-length"),
        pytest.param(b"\x29\x00\x00", id="truncated-fixed64"),
        pytest.param(b"\x2d\x00", id="truncated-fixed32"),
        pytest.param(b"\x23", id="wire-type-3-group-start"),
        pytest.param(b"\x24", id="wire-type-4-group-end"),
        pytest.param(b"\x26\x00", id="wire-type-6"),
        pytest.param(b"\x27\x00", id="wire-type-7"),
        pytest.param(b"\x00\x00", id="field-number-0"),
        pytest.param(b"\x80\x80\x80\x80\x10\x00", id="field-number-too-large"),
        pytest.param(bytes.fromhex("32 03 0a 01 ff"), id="map-key-not-utf8"),
        pytest.param(bytes.fromhex("32 06 0a 01 61 12 01 c3"), id="map-value-not-utf8"),
        pytest.param(bytes.fromhex("32 02 0a 05"), id="map-entry-truncated"),
        pytest.param(bytes.fromhex("32 01 0b"), id="map-entry-group"),
    ],
)
def test_decode_rejects_malformed_input(raw: bytes) -> None:
    with pytest.raises(GossipDecodeError):
        decode_update(raw)


def test_every_truncation_of_a_go_update_decodes_or_raises_decode_error() -> None:
    outcomes = set()
    for cut in range(len(GO_CREATE)):
        try:
            decode_update(GO_CREATE[:cut])
            outcomes.add("ok")
        except GossipDecodeError:
            outcomes.add("error")
    assert outcomes == {"ok", "error"}


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error_only(raw: bytes) -> None:
    try:
        u = decode_update(raw)
    except GossipDecodeError:
        return
    assert isinstance(u, Update)
    assert decode_update(encode_update(u)) == u


updates = st.builds(
    Update,
    expires=st.integers(0, 2**64 - 1),
    type=st.integers(-(2**31), 2**31 - 1),
    action=st.integers(-(2**31), 2**31 - 1),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    data=st.binary(max_size=32),
)


@settings(max_examples=200, deadline=None)
@given(updates)
def test_update_round_trip(u: Update) -> None:
    assert decode_update(encode_update(u)) == u


# --- Service JSON -------------------------------------------------------------------------------------------

FULL = Service(
    "svc",
    "v1",
    {"a": "b"},
    [Endpoint("E.Call", Value("Req", "Req", [Value("x", "int32")]), None, {"stream": "false"})],
    [MicroNode("svc-1", "10.0.0.1:80", {"k": "v"}), MicroNode("svc-2", "10.0.0.2:80")],
)


def test_service_to_json_uses_go_field_order_and_empty_collections() -> None:
    assert service_to_json(FULL) == (
        b'{"name":"svc","version":"v1","metadata":{"a":"b"},"endpoints":[{"name":"E.Call",'
        b'"request":{"name":"Req","type":"Req","values":[{"name":"x","type":"int32","values":[]}]},'
        b'"response":null,"metadata":{"stream":"false"}}],"nodes":[{"id":"svc-1","address":"10.0.0.1:80",'
        b'"metadata":{"k":"v"}},{"id":"svc-2","address":"10.0.0.2:80","metadata":{}}]}'
    )
    assert service_to_json(Service("x")) == (
        b'{"name":"x","version":"","metadata":{},"endpoints":[],"nodes":[]}'
    )


def test_observed_go_local_state_decodes() -> None:
    state = orjson.loads(
        b'{"go.a":[' + GO_JSON + b'],"go.b":[{"name":"go.b","version":"2","metadata":null,'
        b'"endpoints":null,"nodes":[{"id":"go.b-1","address":"10.0.0.2:9090","metadata":null}]}]}'
    )
    got = [service_from_json(s) for services in state.values() for s in services]
    assert got == [
        Service(
            "go.a", "1.0.0", {"k": "v"}, [], [MicroNode("go.a-node1", "10.0.0.1:8080", {"proto": "grpc"})]
        ),
        Service("go.b", "2", {}, [], [MicroNode("go.b-1", "10.0.0.2:9090", {})]),
    ]


def test_null_everywhere_is_the_zero_value() -> None:
    obj = {
        "name": None,
        "version": None,
        "metadata": {"k": None},
        "endpoints": [
            None,
            {"name": None, "request": None, "response": {"name": None, "type": None, "values": [None]}},
        ],
        "nodes": [None, {"id": None, "address": None, "metadata": None}],
    }
    assert service_from_json(obj) == Service(
        "", "", {"k": ""}, [Endpoint("", None, Value("", "", []), {})], [MicroNode("", "", {})]
    )


def test_missing_unknown_and_differently_cased_keys() -> None:
    assert service_from_json({}) == Service()
    assert service_from_json({"Name": "a", "VERSION": "1", "extra": [1], "nodes": [{"Id": "n", "x": 1}]}) == (
        Service("a", "1", nodes=[MicroNode("n")])
    )
    assert service_from_json({"Name": "first", "name": "last"}).name == "last"


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "svc",
        {"name": 1},
        {"version": True},
        {"metadata": []},
        {"metadata": {"k": 1}},
        {"endpoints": {}},
        {"endpoints": ["e"]},
        {"endpoints": [{"request": "x"}]},
        {"endpoints": [{"response": {"values": {}}}]},
        {"endpoints": [{"request": {"values": [1]}}]},
        {"endpoints": [{"metadata": "x"}]},
        {"nodes": "n"},
        {"nodes": [1]},
        {"nodes": [{"id": 5}]},
        {"nodes": [{"address": ["a"]}]},
        {"nodes": [{"metadata": {"a": {}}}]},
    ],
)
def test_wrong_json_types_raise_decode_error(obj: object) -> None:
    with pytest.raises(GossipDecodeError):
        service_from_json(obj)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"name": "leaf"}
    for _ in range(depth - 1):
        value = {"values": [value]}
    return {"endpoints": [{"request": value}]}


def test_value_depth_is_limited() -> None:
    deepest = service_from_json(_nested(MAX_VALUE_DEPTH))
    assert decode_service(service_to_json(deepest)) == deepest
    with pytest.raises(GossipDecodeError):
        service_from_json(_nested(MAX_VALUE_DEPTH + 1))
    with pytest.raises(GossipDecodeError):
        decode_service(b'{"endpoints":[{"request":' + b'{"values":[' * 100 + b"{}" + b"]}" * 100 + b"}]}")
    with pytest.raises(GossipDecodeError):
        decode_service(b'{"endpoints":[{"request":' + b'{"values":[' * 5000 + b"]}" * 5000 + b"}]}")


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b'{"name":"\\ud800"}'])
def test_decode_service_rejects_invalid_json(raw: bytes) -> None:
    with pytest.raises(GossipDecodeError):
        decode_service(raw)


text = st.text(max_size=6)
meta = st.dictionaries(text, text, max_size=3)
values = st.recursive(
    st.builds(Value, text, text),
    lambda kids: st.builds(Value, text, text, st.lists(kids, max_size=2)),
    max_leaves=6,
)
services = st.builds(
    Service,
    text,
    text,
    meta,
    st.lists(st.builds(Endpoint, text, st.none() | values, st.none() | values, meta), max_size=2),
    st.lists(st.builds(MicroNode, text, text, meta), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(services)
def test_service_json_round_trip(svc: Service) -> None:
    assert decode_service(service_to_json(svc)) == svc


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["name", "version", "metadata", "endpoints", "nodes", "id", "request", "values", "x"]
            ),
            kids,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_decodes_or_raises_decode_error_only(obj: object) -> None:
    try:
        svc = service_from_json(obj)
    except GossipDecodeError:
        return
    assert decode_service(service_to_json(svc)) == svc


def test_service_update_is_what_go_sends() -> None:
    svc = decode_service(GO_JSON)
    u = service_update(svc, ACTION_DELETE)
    assert (u.type, u.action, u.expires, u.metadata) == (1, 2, 0, {"Content-Type": "application/json"})
    assert decode_service(u.data) == svc
    created = service_update(svc, ACTION_CREATE, expires=EXPIRES)
    assert encode_update(created).startswith(
        b"\x08" + EXPIRES_VARINT + bytes.fromhex("10 01 18 01") + META_ENTRY
    )


# --- mapping to Instances -----------------------------------------------------------------------------------


def test_go_service_nodes_become_instances() -> None:
    svc = Service(
        "go.a",
        "1.0.0",
        {"k": "v", "proto": "http"},
        nodes=[MicroNode("n1", "10.0.0.1:8080", {"proto": "grpc"}), MicroNode("n2", "", {})],
    )
    n1 = Instance(zone="", env="", appid="go.a", hostname="n1", addrs=["10.0.0.1:8080"], version="1.0.0")
    n1.metadata = {"k": "v", "proto": "grpc"}
    n2 = Instance(zone="", env="", appid="go.a", hostname="n2", addrs=[], version="1.0.0")
    n2.metadata = {"k": "v", "proto": "http"}
    assert service_instances(svc) == [n1, n2]


@pytest.mark.parametrize(("raw", "status"), [("1", UP), ("2", WAITING), ("3", UP), ("x", UP), (" 2", UP)])
def test_reserved_node_metadata_fills_instance_fields(raw: str, status: int) -> None:
    node = MicroNode(
        "n1",
        "10.0.0.1:80",
        {"addrs": "http://a:1  grpc://b:2", "zone": "z", "env": "e", "region": "r", "status": raw, "w": "1"},
    )
    ins = node_instance(Service("app", "v", {"zone": "service-level", "s": "2"}), node)
    assert (ins.addrs, ins.zone, ins.env, ins.region, ins.status) == (
        ["http://a:1", "grpc://b:2"],
        "z",
        "e",
        "r",
        status,
    )
    assert ins.metadata == {"s": "2", "w": "1"}


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("10.0.0.1:8000", "10.0.0.1:8000"),
        ("http://10.0.0.1:8000", "10.0.0.1:8000"),
        ("grpc://[::1]:9000/path?q#f", "[::1]:9000"),
        ("http://h:1?x=1", "h:1"),
        ("host", "host"),
    ],
)
def test_host_port(addr: str, expected: str) -> None:
    assert host_port(addr) == expected


def test_instance_to_service_node_metadata() -> None:
    ins = Instance(
        region="sh", zone="", env="dev", appid="demo", hostname="h1", addrs=["http://10.0.0.1:8000"],
        version="v1", metadata={"weight": "10", "zone": "ignored"}, status=WAITING,
    )  # fmt: skip
    assert instance_to_service(ins) == Service(
        "demo",
        "v1",
        nodes=[
            MicroNode(
                "h1",
                "10.0.0.1:8000",
                {
                    "weight": "10",
                    "region": "sh",
                    "env": "dev",
                    "status": "2",
                    "addrs": "http://10.0.0.1:8000",
                },
            )
        ],
    )
    bare = Instance(zone="", env="", appid="a", hostname="h", addrs=["10.0.0.1:1"])
    assert instance_to_service(bare).nodes == [MicroNode("h", "10.0.0.1:1", {})]
    none = Instance(zone="", env="", appid="a", hostname="h")
    assert instance_to_service(none).nodes == [MicroNode("h", "", {"addrs": ""})]


word = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc", "Zl", "Zp")), min_size=1, max_size=8)
plain_meta = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in {"addrs", "zone", "env", "region", "status"}),
    st.text(max_size=6),
    max_size=3,
)
addr = st.one_of(word, st.builds(lambda s, w: f"{s}://{w}", st.sampled_from(["http", "grpc"]), word))
instances = st.builds(
    Instance,
    region=st.text(max_size=4),
    zone=st.text(max_size=4),
    env=st.text(max_size=4),
    appid=st.text(max_size=6),
    hostname=st.text(max_size=6),
    addrs=st.lists(addr, max_size=3),
    version=st.text(max_size=4),
    metadata=st.none() | plain_meta,
    status=st.sampled_from([UP, WAITING]),
    reg_timestamp=st.integers(0, 10),
)


@settings(max_examples=200, deadline=None)
@given(instances)
def test_instance_service_instance_round_trip(ins: Instance) -> None:
    svc = decode_service(service_to_json(instance_to_service(ins)))
    [back] = service_instances(svc)
    expected = ins.copy()
    expected.metadata = ins.metadata or {}
    expected.reg_timestamp = 0
    assert back == expected


def test_service_json_sorts_map_keys_like_go() -> None:
    from discoverd.core.gossip.micro import MicroNode, Service, service_to_json

    svc = Service(
        name="s",
        version="1",
        metadata={"b": "2", "a": "1"},
        nodes=[MicroNode(id="n", metadata={"z": "", "y": ""})],
    )
    assert service_to_json(svc) == (
        b'{"name":"s","version":"1","metadata":{"a":"1","b":"2"},"endpoints":[],'
        b'"nodes":[{"id":"n","address":"","metadata":{"y":"","z":""}}]}'
    )
