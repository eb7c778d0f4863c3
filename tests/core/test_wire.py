"""Byte-level tests of the answer encoders."""

from __future__ import annotations

import orjson

from discoverd.core import wire
from discoverd.core.registry_state import RegistryState
from discoverd.model import UP, WAITING, Instance

BIG = 1_795_319_716_414_967_023  # > 2**53: must survive exactly


def test_standard_envelope_shapes() -> None:
    assert wire.envelope(0) == b'{"code":0,"message":"0","ttl":1}'
    assert wire.envelope(-404, b"null") == b'{"code":-404,"message":"-404","ttl":1,"data":null}'
    assert wire.envelope(-400, message='a "b"') == b'{"code":-400,"message":"a \\"b\\"","ttl":1}'


def test_map_envelope_keys_sorted_without_ttl() -> None:
    body = wire.map_envelope(0, data=b"{}", missing=b"null")
    assert body == b'{"code":0,"data":{},"error":{"-404":null},"message":"0"}'
    assert wire.map_envelope(-404, message="x not found") == b'{"code":-404,"message":"x not found"}'


def test_instance_info_sorts_zones_and_metadata_and_keeps_int64() -> None:
    r = RegistryState()
    r.register(Instance(zone="zb", env="e", appid="a", hostname="h1", addrs=["x"]), BIG)
    r.register(
        Instance(zone="za", env="e", appid="a", hostname="h2", metadata={"z": "1", "a": "2"}, status=WAITING),
        BIG,
    )
    app = r.app("a", "e")
    assert app is not None
    raw = wire.instance_info(app, "", UP)
    assert raw.index(b'"za"') < raw.index(b'"zb"')
    doc = orjson.loads(raw)
    assert doc["instances"]["za"] == []  # filtered by status but present
    assert doc["instances"]["zb"][0]["reg_timestamp"] == BIG
    assert doc["latest_timestamp"] == BIG + 1
    all_raw = wire.instance_info(app, "za", UP | WAITING)
    assert b'"metadata":{"a":"2","z":"1"}' in all_raw
    assert list(orjson.loads(all_raw)["instances"]) == ["za"]


def test_instance_field_order_matches_go_struct() -> None:
    obj = wire.instance_obj(Instance(zone="z", env="e", appid="a", hostname="h"))
    assert list(obj) == [
        "region",
        "zone",
        "env",
        "appid",
        "hostname",
        "addrs",
        "version",
        "metadata",
        "status",
        "reg_timestamp",
        "up_timestamp",
        "renew_timestamp",
        "dirty_timestamp",
        "latest_timestamp",
    ]
    assert obj["metadata"] == {}
    assert (
        wire.instance_obj(Instance(zone="z", env="e", appid="a", hostname="h"), null_metadata=True)[
            "metadata"
        ]
        is None
    )


def test_fetch_all_groups_by_appid_across_envs() -> None:
    r = RegistryState()
    r.register(Instance(zone="z", env="e1", appid="a", hostname="h1"), BIG)
    r.register(Instance(zone="z", env="e2", appid="a", hostname="h2"), BIG)
    r.register(Instance(zone="z", env="e1", appid="b", hostname="h3"), BIG)
    doc = orjson.loads(wire.fetch_all(r.apps.values()))
    assert sorted(doc) == ["a", "b"]
    assert sorted(i["env"] for i in doc["a"]) == ["e1", "e2"]
    assert doc["b"][0]["metadata"] is None


def test_string_list_nil_is_null() -> None:
    assert wire.string_list([]) == b"null"
    assert wire.string_list(None) == b"null"
    assert wire.string_list(["a"]) == b'["a"]'


def test_fetch_body_is_the_envelope_cached_until_the_app_changes() -> None:
    r = RegistryState()
    r.register(Instance(zone="z", env="e", appid="a", hostname="h1", addrs=["x"]), BIG)
    app = r.apps[("a", "e")]
    body = wire.fetch_body(app, "", UP)
    assert body == wire.envelope(0, wire.instance_info(app, "", UP))
    assert wire.fetch_body(app, "", UP) is body  # encoded once per version
    r.renew("a", "e", "z", "h1", BIG + 5)  # renew timestamps are in the answer: the cache is dropped
    fresh = wire.fetch_body(app, "", UP)
    assert (
        fresh is not body and orjson.loads(fresh)["data"]["instances"]["z"][0]["renew_timestamp"] == BIG + 5
    )
