"""Every endpoint's success and failure shapes, field by field, over real HTTP on loopback."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import pytest

from discoverd.server.runner import Node
from tests.helpers import Wire

INSTANCE_FIELDS = [
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


@pytest.fixture
def wire(node: Node, http: aiohttp.ClientSession) -> Wire:
    return Wire(http, node.address)


def full_register(**over: str) -> list[tuple[str, str]]:
    params = {
        "region": "sh",
        "zone": "sh001",
        "env": "dev",
        "appid": "main.account",
        "hostname": "host-1",
        "status": "1",
        "version": "v1.2",
        "metadata": '{"weight":"10","color":"red"}',
        **over,
    }
    return [*params.items(), ("addrs", "http://10.0.0.1:8000"), ("addrs", "grpc://10.0.0.1:9000")]


def assert_ok(body: Any, resp: aiohttp.ClientResponse) -> None:
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.headers["kratos-status-code"] == "0"
    assert body == {"code": 0, "message": "0", "ttl": 1}


# -- register ----------------------------------------------------------------------------------


async def test_register_success_shape_and_stored_instance(wire: Wire, node: Node) -> None:
    body, resp = await wire.post("register", full_register())
    assert_ok(body, resp)
    data, resp = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "1"})
    assert data["code"] == 0 and data["message"] == "0" and data["ttl"] == 1
    info = data["data"]
    assert list(info) == ["instances", "latest_timestamp"]
    (ins,) = info["instances"]["sh001"]
    assert list(ins) == INSTANCE_FIELDS
    assert ins["region"] == "sh" and ins["zone"] == "sh001" and ins["env"] == "dev"
    assert ins["appid"] == "main.account" and ins["hostname"] == "host-1"
    assert ins["addrs"] == ["http://10.0.0.1:8000", "grpc://10.0.0.1:9000"]
    assert ins["version"] == "v1.2"
    assert ins["metadata"] == {"color": "red", "weight": "10"}
    assert ins["status"] == 1
    ts = ins["reg_timestamp"]
    assert isinstance(ts, int) and ts > 1_600_000_000 * 10**9
    assert ins["up_timestamp"] == ins["renew_timestamp"] == ins["dirty_timestamp"] == ts
    assert ins["latest_timestamp"] == ts
    assert info["latest_timestamp"] >= ts


async def test_register_comma_joined_addrs_are_split(wire: Wire) -> None:
    params = [(k, v) for k, v in full_register() if k != "addrs"]
    params.append(("addrs", "http://10.0.0.1:8000,grpc://10.0.0.1:9000,"))
    await wire.post("register", params)
    data, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "1"})
    assert data["data"]["instances"]["sh001"][0]["addrs"] == ["http://10.0.0.1:8000", "grpc://10.0.0.1:9000"]


async def test_register_params_in_query_string_without_body(wire: Wire, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{wire.base}/register", params=full_register()) as r:
        assert (await r.json())["code"] == 0


async def test_register_body_value_wins_over_query(wire: Wire, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{wire.base}/register?version=fromquery", data=full_register(version="frombody")
    ) as r:
        assert (await r.json())["code"] == 0
    data, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "1"})
    assert data["data"]["instances"]["sh001"][0]["version"] == "frombody"


@pytest.mark.parametrize(
    ("missing", "field", "tag"),
    [
        ("zone", "Zone", "required"),
        ("env", "Env", "required"),
        ("appid", "AppID", "required"),
        ("hostname", "Hostname", "required"),
        ("status", "Status", "required"),
        ("addrs", "Addrs", "gt"),
    ],
)
async def test_register_validation_messages(wire: Wire, missing: str, field: str, tag: str) -> None:
    params = [(k, v) for k, v in full_register() if k != missing]
    body, resp = await wire.post("register", params)
    msg = f"Key: 'ArgRegister.{field}' Error:Field validation for '{field}' failed on the '{tag}' tag"
    assert body == {"code": -400, "message": msg, "ttl": 1}
    assert resp.status == 200
    assert "kratos-status-code" not in resp.headers


async def test_register_several_failures_are_joined(wire: Wire) -> None:
    body, _ = await wire.post("register", {"env": "dev"})
    lines = body["message"].split("\n")
    assert [line.split("'")[1] for line in lines] == [
        "ArgRegister.Zone",
        "ArgRegister.AppID",
        "ArgRegister.Hostname",
        "ArgRegister.Status",
        "ArgRegister.Addrs",
    ]


@pytest.mark.parametrize("status", ["3", "7"])
async def test_register_status_above_two_is_400(wire: Wire, node: Node, status: str) -> None:
    body, resp = await wire.post("register", full_register(status=status))
    assert body["code"] == -400 and "status" in body["message"]
    assert resp.headers["kratos-status-code"] == "-400"
    assert node.registry.app("main.account", "dev") is None


@pytest.mark.parametrize("status", ["-1", "+1", "x", "1.0", "99999999999"])
async def test_register_unparsable_status(wire: Wire, status: str) -> None:
    body, _ = await wire.post("register", full_register(status=status))
    assert body["code"] == -400
    assert body["message"].startswith('strconv.ParseUint: parsing "')


async def test_register_invalid_metadata_json(wire: Wire, node: Node) -> None:
    body, resp = await wire.post("register", full_register(metadata="{not json"))
    assert body["code"] == -400 and body["ttl"] == 1
    assert resp.headers["kratos-status-code"] == "-400"
    assert node.registry.size == 1  # only infra.discovery


@pytest.mark.parametrize(
    ("meta", "fetched", "in_all"),
    [
        ('{"weight":10,"color":"red"}', {"weight": "", "color": "red"}, {"weight": "", "color": "red"}),
        ("[1,2]", {}, None),
        ("null", {}, None),
        ("", {}, None),
    ],
)
async def test_register_metadata_rules(wire: Wire, meta: str, fetched: Any, in_all: Any) -> None:
    await wire.post("register", full_register(metadata=meta))
    data, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "3"})
    assert data["data"]["instances"]["sh001"][0]["metadata"] == fetched
    every, _ = await wire.get("fetch/all", {})
    assert every["data"]["main.account"][0]["metadata"] == in_all


# -- renew ---------------------------------------------------------------------------------------


async def test_renew_success_returns_instance(wire: Wire) -> None:
    await wire.post("register", full_register())
    body, resp = await wire.post(
        "renew", {"zone": "sh001", "env": "dev", "appid": "main.account", "hostname": "host-1"}
    )
    assert resp.headers["kratos-status-code"] == "0"
    assert body["code"] == 0 and body["message"] == "0" and body["ttl"] == 1
    assert list(body["data"]) == INSTANCE_FIELDS
    assert body["data"]["renew_timestamp"] > body["data"]["reg_timestamp"]


async def test_renew_unknown_app_has_null_data(wire: Wire) -> None:
    body, resp = await wire.post("renew", {"zone": "sh001", "env": "dev", "appid": "nope", "hostname": "h"})
    assert body == {"code": -404, "message": "-404", "ttl": 1, "data": None}
    assert resp.headers["kratos-status-code"] == "-404"


async def test_renew_unknown_hostname_has_zero_instance(wire: Wire) -> None:
    await wire.post("register", full_register())
    body, _ = await wire.post(
        "renew", {"zone": "sh001", "env": "dev", "appid": "main.account", "hostname": "other"}
    )
    assert body["code"] == -404
    assert body["data"]["hostname"] == "" and body["data"]["addrs"] is None
    assert body["data"]["metadata"] is None and body["data"]["reg_timestamp"] == 0


async def test_replicated_renew_dirty_comparison(wire: Wire) -> None:
    await wire.post("register", full_register())
    data, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "1"})
    dirty = data["data"]["instances"]["sh001"][0]["dirty_timestamp"]
    base = {
        "zone": "sh001",
        "env": "dev",
        "appid": "main.account",
        "hostname": "host-1",
        "replication": "true",
    }
    newer, _ = await wire.post("renew", {**base, "dirty_timestamp": str(dirty + 1)})
    older, resp = await wire.post("renew", {**base, "dirty_timestamp": str(dirty - 1)})
    same, _ = await wire.post("renew", {**base, "dirty_timestamp": str(dirty)})
    assert newer["code"] == -404
    assert older["code"] == -409 and older["data"]["dirty_timestamp"] == dirty
    assert resp.headers["kratos-status-code"] == "-409"
    assert same["code"] == 0


async def test_renew_validation(wire: Wire) -> None:
    body, _ = await wire.post("renew", {"zone": "sh001", "env": "dev", "appid": "a"})
    assert (
        body["message"]
        == "Key: 'ArgRenew.Hostname' Error:Field validation for 'Hostname' failed on the 'required' tag"
    )


# -- cancel --------------------------------------------------------------------------------------


async def test_cancel_success_and_then_404(wire: Wire) -> None:
    await wire.post("register", full_register())
    key = {"zone": "sh001", "env": "dev", "appid": "main.account", "hostname": "host-1"}
    body, resp = await wire.post("cancel", key)
    assert_ok(body, resp)
    body, resp = await wire.post("cancel", key)
    assert body == {"code": -404, "message": "-404", "ttl": 1}
    assert resp.headers["kratos-status-code"] == "-404"
    data, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "1"})
    assert data == {"code": -404, "message": "-404", "ttl": 1, "data": None}


# -- fetch / fetchs / fetch/all ---------------------------------------------------------------------


async def test_fetch_status_bitmask_and_zone_filter(wire: Wire) -> None:
    await wire.post("register", full_register(hostname="up"))
    await wire.post("register", full_register(hostname="waiting", status="2"))
    await wire.post("register", full_register(hostname="far", zone="sh002"))
    q = {"env": "dev", "appid": "main.account"}

    async def hosts(**extra: str) -> dict[str, list[str]]:
        data, _ = await wire.get("fetch", {**q, **extra})
        assert data["code"] == 0
        return {z: sorted(i["hostname"] for i in v) for z, v in data["data"]["instances"].items()}

    assert await hosts(status="1") == {"sh001": ["up"], "sh002": ["far"]}
    assert await hosts(status="2") == {"sh001": ["waiting"], "sh002": []}
    assert await hosts(status="3") == {"sh001": ["up", "waiting"], "sh002": ["far"]}
    assert await hosts(status="4") == {"sh001": [], "sh002": []}
    assert await hosts(status="1", zone="sh002") == {"sh002": ["far"]}


async def test_fetch_absent_zone_is_404_with_empty_info(wire: Wire) -> None:
    await wire.post("register", full_register())
    data, resp = await wire.get(
        "fetch", {"env": "dev", "appid": "main.account", "status": "1", "zone": "nope"}
    )
    assert data["code"] == -404 and data["message"] == "-404"
    assert data["data"]["instances"] == {} and data["data"]["latest_timestamp"] > 0
    assert resp.headers["kratos-status-code"] == "-404"


async def test_fetch_validation(wire: Wire) -> None:
    body, _ = await wire.get("fetch", {"env": "dev", "appid": "a"})
    assert (
        body["message"]
        == "Key: 'ArgFetch.Status' Error:Field validation for 'Status' failed on the 'required' tag"
    )


async def test_fetchs_returns_only_found_apps(wire: Wire) -> None:
    await wire.post("register", full_register())
    data, _ = await wire.get(
        "fetchs", [("env", "dev"), ("status", "1"), ("appid", "main.account"), ("appid", "missing")]
    )
    assert data["code"] == 0 and data["ttl"] == 1 and "error" not in data
    assert list(data["data"]) == ["main.account"]
    assert data["data"]["main.account"]["instances"]["sh001"][0]["hostname"] == "host-1"
    empty, _ = await wire.get("fetchs", [("env", "dev"), ("status", "1"), ("appid", "missing")])
    assert empty["data"] == {}
    bad, _ = await wire.get("fetchs", [("env", "dev"), ("status", "1")])
    assert (
        bad["message"] == "Key: 'ArgFetchs.AppID' Error:Field validation for 'AppID' failed on the 'gt' tag"
    )


async def test_fetch_all_contains_self_registration(wire: Wire, node: Node) -> None:
    await wire.post("register", full_register())
    data, _ = await wire.get("fetch/all", {})
    assert data["code"] == 0
    (me,) = data["data"]["infra.discovery"]
    assert me["addrs"] == [f"http://{node.address}"]
    assert (me["zone"], me["env"], me["region"], me["hostname"]) == ("sh001", "dev", "sh", "node-test")
    assert me["version"] == "" and me["status"] == 1
    assert data["data"]["main.account"][0]["hostname"] == "host-1"


# -- set ------------------------------------------------------------------------------------------


async def test_set_status_and_metadata(wire: Wire) -> None:
    await wire.post("register", full_register())
    await wire.post("register", full_register(hostname="host-2"))
    body, resp = await wire.post(
        "set",
        [
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "main.account"),
            ("hostname", "host-1"),
            ("hostname", "host-2"),
            ("status", "2"),
            ("status", "1"),
            ("metadata", '{"weight":"20"}'),
            ("metadata", '{"extra":"x"}'),
            ("set_timestamp", "1234"),
        ],
    )
    assert_ok(body, resp)
    data, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "3"})
    by_host = {i["hostname"]: i for i in data["data"]["instances"]["sh001"]}
    assert by_host["host-1"]["status"] == 2
    assert by_host["host-1"]["metadata"] == {"color": "red", "weight": "20"}
    assert by_host["host-2"]["metadata"] == {"color": "red", "extra": "x", "weight": "10"}
    assert by_host["host-1"]["dirty_timestamp"] == 1234 == by_host["host-2"]["up_timestamp"]


@pytest.mark.parametrize(
    "params",
    [
        [("hostname", "host-1"), ("status", "3")],
        [("hostname", "host-1"), ("hostname", "host-2"), ("status", "2")],
        [("hostname", "host-1"), ("metadata", "{bad")],
        [("hostname", "host-1"), ("metadata", '{"w":1}')],
        [("hostname", "host-1"), ("hostname", "ghost"), ("status", "2"), ("status", "2")],
        [("status", "2")],
    ],
)
async def test_set_errors_change_nothing(wire: Wire, params: list[tuple[str, str]]) -> None:
    await wire.post("register", full_register())
    await wire.post("register", full_register(hostname="host-2"))
    before, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "3"})
    body, resp = await wire.post(
        "set", [("zone", "sh001"), ("env", "dev"), ("appid", "main.account"), *params]
    )
    assert body["code"] == -400 and body["ttl"] == 1
    assert resp.headers["kratos-status-code"] == "-400"
    after, _ = await wire.get("fetch", {"env": "dev", "appid": "main.account", "status": "3"})
    assert after == before


async def test_set_unknown_zone_is_400(wire: Wire) -> None:
    await wire.post("register", full_register())
    body, _ = await wire.post(
        "set",
        {"zone": "elsewhere", "env": "dev", "appid": "main.account", "hostname": "host-1", "status": "2"},
    )
    assert body["code"] == -400


# -- nodes, routing ---------------------------------------------------------------------------------


async def test_nodes_lists_itself_up(wire: Wire, node: Node) -> None:
    data, resp = await wire.get("nodes", {})
    assert data == {
        "code": 0,
        "message": "0",
        "ttl": 1,
        "data": [{"addr": node.address, "status": 0, "zone": "sh001"}],
    }
    assert resp.headers["kratos-status-code"] == "0"


async def test_unknown_path_is_plain_404(node: Node, http: aiohttp.ClientSession) -> None:
    async with http.get(f"http://{node.address}/discovery/nothing") as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("text/plain")
        assert await r.text() == "404 page not found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "register"),
        ("GET", "renew"),
        ("GET", "cancel"),
        ("GET", "set"),
        ("POST", "fetch"),
        ("POST", "polls"),
    ],
)
async def test_wrong_method_is_plain_405(
    node: Node, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    async with http.request(method, f"http://{node.address}/discovery/{path}") as r:
        assert r.status == 405
        assert r.headers["Content-Type"].startswith("text/plain")


async def test_body_over_one_mib_is_refused(node: Node, http: aiohttp.ClientSession) -> None:
    body = io.BytesIO(b"zone=" + b"x" * (1 << 20))
    async with http.post(
        f"http://{node.address}/discovery/register",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 413
    assert node.registry.size == 1


async def test_binary_body_and_bad_escapes_are_400(wire: Wire, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{wire.base}/register",
        data=b"\xff\xfe\x00zone=%zz",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        body = await r.json()
        assert r.status == 200 and body["code"] == -400
    async with http.get(f"{wire.base}/fetch?env=%ff%fe&appid=a&status=1") as r:
        assert (await r.json())["code"] == -400
