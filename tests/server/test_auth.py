"""Access tokens and the peer secret: specs, roles, appid scopes, -401/-403 envelopes, read protection,
the ``token`` parameter, and the gate the request pipeline asks."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from discoverd.core.params import Form
from discoverd.errors import ConfigError
from discoverd.server import auth
from discoverd.server.auth import Gate, Grant, Role, load_grants, parse_spec
from discoverd.server.http import HttpConnection, HttpRequest, HttpServer
from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node

TOKENS = ("adm-tok", "w-tok:write:svc,other", "wany-tok:write", "r-tok:read")
KEY = {"zone": "sh001", "env": "dev", "hostname": "h1"}


def reg(appid: str = "svc", **extra: str) -> dict[str, str]:
    return {**KEY, "appid": appid, "status": "1", "addrs": "http://10.0.0.1:80", **extra}


class Client:
    """Posts/gets against one node; returns ``(code, message, Kratos-Status-Code header)``."""

    def __init__(self, session: aiohttp.ClientSession, node: Node) -> None:
        self.session = session
        self.base = f"http://{node.address}/discovery"

    async def post(
        self, path: str, params: dict[str, str], token: str | None = None, query: str = ""
    ) -> tuple[int, str, str]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.post(f"{self.base}/{path}{query}", data=params, headers=headers) as r:
            return self._decode(r.status, await r.read(), r.headers.get("Kratos-Status-Code", ""))

    async def get(self, path: str, params: dict[str, str], token: str | None = None) -> tuple[int, str, str]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.get(f"{self.base}/{path}", params=params, headers=headers) as r:
            return self._decode(r.status, await r.read(), r.headers.get("Kratos-Status-Code", ""))

    @staticmethod
    def _decode(status: int, body: bytes, header: str) -> tuple[int, str, str]:
        assert status == 200
        doc = orjson.loads(body)
        return doc["code"], doc["message"], header


async def _client(config: Any) -> AsyncIterator[tuple[Node, Client]]:
    async with running_node(config) as node, aiohttp.ClientSession() as s:
        yield node, Client(s, node)


@pytest.fixture
async def secured() -> AsyncIterator[tuple[Node, Client]]:
    async for pair in _client(fast_config(tokens=TOKENS, poll_hold=2.0)):
        yield pair


@pytest.fixture
async def locked() -> AsyncIterator[tuple[Node, Client]]:
    """Tokens, reads protected, and a peer secret."""
    config = fast_config(tokens=TOKENS, protect_reads=True, peer_secret="peer-s", poll_hold=2.0)
    async for pair in _client(config):
        yield pair


def size(node: Node) -> int:
    return node.registry.size


# -- specs -----------------------------------------------------------------------------------------


def test_specs_parse_roles_and_scopes() -> None:
    assert parse_spec("abc") == Grant(b"abc", Role.ADMIN)
    assert parse_spec(" abc:read ") == Grant(b"abc", Role.READ)
    assert parse_spec("abc:WRITE:a.b, c.d") == Grant(b"abc", Role.WRITE, frozenset({"a.b", "c.d"}))
    assert parse_spec("abc:write:") == Grant(b"abc", Role.WRITE)
    assert "abc" not in repr(parse_spec("abc:write:x"))  # the secret never shows


@pytest.mark.parametrize(
    "spec",
    [
        "",
        ":admin",
        "SECRETX SECRETY",
        "SECRETX:owner",
        "SECRETX:read:svc",
        "SECRETX:admin:svc",
        "SECRETX:write:,",
        "SECRETX:write:a:b",
        "SECRETé",
    ],
)
def test_bad_specs_are_config_errors_that_never_echo_the_token(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(spec)
    assert "SECRET" not in str(err.value)


def test_tokens_file_adds_to_tokens(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("# operators\nfile-adm\n\n  w2:write:svc  \n")
    grants = load_grants(fast_config(tokens=("cli:read",), tokens_file=str(f)))
    assert [(g.token, g.role) for g in grants] == [
        (b"cli", Role.READ),
        (b"file-adm", Role.ADMIN),
        (b"w2", Role.WRITE),
    ]
    with pytest.raises(ConfigError, match="twice"):
        load_grants(fast_config(tokens=("w2",), tokens_file=str(f)))
    with pytest.raises(ConfigError, match="peer secret"):
        load_grants(fast_config(tokens=("same",), peer_secret="same"))
    with pytest.raises(ConfigError, match="tokens_file"):
        load_grants(fast_config(tokens_file=str(tmp_path / "missing")))


async def test_bad_spec_fails_the_start_before_binding() -> None:
    node = Node(fast_config(tokens=("tok:owner",)))
    with pytest.raises(ConfigError, match="unknown role"):
        await node.run()
    assert getattr(node, "http", None) is None  # nothing was built or bound


# -- writes ------------------------------------------------------------------------------------------


async def test_write_without_token_is_refused_401_in_the_envelope(secured: tuple[Node, Client]) -> None:
    node, c = secured
    for token in (None, "", "nope"):
        code, message, header = await c.post("register", reg(), token)
        assert (code, header) == (-401, "-401") and message.startswith("unauthorized: ")
    for path in ("renew", "cancel", "set"):
        assert (await c.post(path, {**KEY, "appid": "svc", "status": "1"}))[0] == -401
    assert size(node) == 1  # only the node's own infra.discovery


async def test_roles_and_appid_scopes(secured: tuple[Node, Client]) -> None:
    node, c = secured
    code, message, header = await c.post("register", reg(), "r-tok")
    assert (code, header) == (-403, "-403") and message.startswith("forbidden: ")
    assert (await c.post("register", reg("svc"), "w-tok"))[0] == 0
    assert (await c.post("register", reg("other", hostname="h2"), "w-tok"))[0] == 0
    code, message, _ = await c.post("register", reg("evil"), "w-tok")
    assert code == -403 and "'evil'" in message
    assert (await c.post("register", reg("infra.discovery"), "w-tok"))[0] == -403
    assert (await c.post("register", reg("evil"), "wany-tok"))[0] == 0  # write without a scope
    assert (await c.post("register", reg("evil2"), "adm-tok"))[0] == 0
    assert (await c.post("renew", {**KEY, "appid": "svc"}, "w-tok"))[0] == 0
    assert (await c.post("set", {**KEY, "appid": "svc", "status": "2"}, "w-tok"))[0] == 0
    assert (await c.post("cancel", {**KEY, "appid": "evil"}, "w-tok"))[0] == -403
    assert (await c.post("cancel", {**KEY, "appid": "svc"}, "w-tok"))[0] == 0
    assert node.registry.get("evil", "dev", "sh001", "h1") is not None


async def test_token_parameter_in_body_or_query_is_ignored_by_the_binder(
    secured: tuple[Node, Client],
) -> None:
    node, c = secured
    assert (await c.post("register", reg(token="w-tok")))[0] == 0
    assert (await c.post("register", reg(hostname="h2"), query="?token=w-tok"))[0] == 0
    assert (await c.post("register", reg(hostname="h3", token="r-tok")))[0] == -403
    stored = node.registry.get("svc", "dev", "sh001", "h1")
    assert stored is not None and stored.metadata in (None, {})
    async with c.session.post(
        f"{c.base}/register", data=reg(hostname="h4"), headers={"authorization": "bearer w-tok"}
    ) as r:
        assert orjson.loads(await r.read())["code"] == 0  # the scheme is case-insensitive


async def test_token_parameter_is_harmless_without_auth(node: Node, http: aiohttp.ClientSession) -> None:
    async with http.post(f"http://{node.address}/discovery/register", data=reg(token="x")) as r:
        assert orjson.loads(await r.read())["code"] == 0


async def test_reads_stay_open_without_protect_reads(secured: tuple[Node, Client]) -> None:
    _, c = secured
    assert (await c.get("fetch", {"env": "dev", "appid": "infra.discovery", "status": "1"}))[0] == 0
    assert (await c.get("nodes", {}))[0] == 0


async def test_replicated_writes_need_admin_without_a_peer_secret(secured: tuple[Node, Client]) -> None:
    node, c = secured
    for spelling in ("true", "True", "1", "t"):  # every spelling the binder reads as true
        code, message, _ = await c.post("register", reg(replication=spelling), "w-tok")
        assert code == -403 and "admin" in message
    assert (await c.post("register", reg(replication="true"), "adm-tok"))[0] == 0
    assert size(node) == 2


# -- reads and the peer secret ----------------------------------------------------------------------


async def test_protected_reads(locked: tuple[Node, Client]) -> None:
    _, c = locked
    fetch = {"env": "dev", "appid": "infra.discovery", "status": "1"}
    for path, params in (("fetch", fetch), ("fetch/all", {}), ("nodes", {}), ("polls", {})):
        code, message, header = await c.get(path, params)
        assert (code, header) == (-401, "-401") and message.startswith("unauthorized: "), path
    assert (await c.get("fetch", fetch, "r-tok"))[0] == 0
    assert (await c.get("fetch", {**fetch, "token": "r-tok"}))[0] == 0
    assert (await c.get("fetch/all", {"token": "w-tok"}))[0] == 0  # unbound endpoint: query read by the gate
    assert (await c.get("nodes", {"token": "nope"}))[0] == -401


async def test_metrics_are_a_protected_read(
    locked: tuple[Node, Client], secured: tuple[Node, Client]
) -> None:
    node, c = locked
    url = f"http://{node.address}/metrics"
    async with c.session.get(url) as r:
        assert orjson.loads(await r.read())["code"] == -401
    async with c.session.get(url, headers={"Authorization": "Bearer r-tok"}) as r:
        assert r.status == 200 and b"discoverd_instances" in await r.read()
    open_node, oc = secured  # tokens without --protect-reads: scrapes stay open like every read
    async with oc.session.get(f"http://{open_node.address}/metrics") as r:
        assert r.status == 200 and b"discoverd_instances" in await r.read()


async def test_peer_secret_is_for_peers_only(locked: tuple[Node, Client]) -> None:
    node, c = locked
    assert (await c.post("register", reg(replication="true"), "peer-s"))[0] == 0
    assert (await c.post("register", reg(hostname="h2", from_zone="true"), "peer-s"))[0] == 0
    assert (await c.get("fetch/all", {}, "peer-s"))[0] == 0  # the start-up sync read
    assert (await c.post("register", reg(hostname="h3"), "peer-s"))[0] == -401  # not a client token
    assert (await c.get("fetch", {"env": "dev", "appid": "svc", "status": "1"}, "peer-s"))[0] == -401
    code, message, _ = await c.post("register", reg(hostname="h4", replication="true"), "adm-tok")
    assert code == -401 and "peer secret" in message
    code, message, _ = await c.post("register", reg(hostname="h5", from_zone="true"), "w-tok")
    assert code == -401 and "peer secret" in message  # a client token does not pass as another zone
    assert size(node) == 3  # infra.discovery, h1, h2


async def test_peer_secret_alone_leaves_clients_open() -> None:
    async for node, c in _client(fast_config(peer_secret="peer-s")):
        assert (await c.post("register", reg()))[0] == 0
        assert (await c.post("register", reg(hostname="h2", replication="true")))[0] == -401
        assert (await c.post("register", reg(hostname="h2", replication="true"), "peer-s"))[0] == 0
        assert (await c.post("register", reg(hostname="h3", from_zone="true")))[0] == -401
        assert (await c.post("register", reg(hostname="h3", from_zone="true"), "peer-s"))[0] == 0
        assert size(node) == 4


# -- the authorize contract (dashboard) ---------------------------------------------------------------


def request(path: str, token: str = "", query: bytes = b"") -> HttpRequest:
    conn = HttpConnection(HttpServer(lambda _r: None))
    headers = {b"authorization": b"Bearer " + token.encode()} if token else {}
    return HttpRequest(conn, "GET", path, query, headers, b"", True)


def refusal_code(answer: bytes | None) -> int | None:
    if answer is None:
        return None
    return int(orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["code"])


async def test_dashboard_paths_are_reads_and_admin_actions_need_admin() -> None:
    open_reads = Gate(map(parse_spec, TOKENS))
    locked = Gate(map(parse_spec, TOKENS), protect_reads=True)
    state, action = "/dashboard/state", "/dashboard/admin/set"
    assert open_reads(request(state), Form(), state) is None
    assert refusal_code(locked(request(state), Form(), state)) == -401
    assert locked(request(state, "r-tok"), Form(), state) is None
    assert locked(request(state, query=b"x=1&token=r-tok"), Form(), state) is None
    for gate in (open_reads, locked):
        assert refusal_code(gate(request(action), Form(), action)) == -401
        assert refusal_code(gate(request(action, "w-tok"), Form(), action)) == -403
        assert refusal_code(gate(request(action, "wany-tok"), Form(), action)) == -403
        assert gate(request(action, "adm-tok"), Form(), action) is None
    peer_only = Gate([], peer_secret="s")
    assert peer_only(request(action), Form(), action) is None  # no tokens: nothing to check


async def test_gate_cost_stays_small() -> None:
    gate = Gate(map(parse_spec, [f"t{i}:write:svc" for i in range(1000)]))
    req, form = request("/discovery/renew", "t500"), Form({"appid": ["svc"], "zone": ["z"]})
    assert gate(req, form, "/discovery/renew") is None
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        gate(req, form, "/discovery/renew")
    per_call = (time.perf_counter() - started) / n
    assert per_call < 20e-6, f"{per_call * 1e6:.1f} µs per check"


async def test_install_logs_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="discoverd.auth")
    async with running_node(fast_config(protect_reads=True)) as node:
        assert node.gate is None
    assert "protect_reads has no effect without tokens" in caplog.text
    caplog.clear()
    async with running_node(fast_config(tokens=TOKENS)) as node:
        assert isinstance(node.gate, Gate)
    assert "authentication on: 4 token(s)" in caplog.text and "adm-tok" not in caplog.text
    assert auth.UNAUTHORIZED == -401 and auth.FORBIDDEN == -403
