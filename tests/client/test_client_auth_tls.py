"""The SDK against secured registries: tokens, HTTPS with a custom CA (in-process and a real
``discoverd serve`` process), ``discoverd+https://`` URLs, and the caller verifying callees with a CA."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from discoverd.calling.callee import CalleeConfig, CallFailed
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.open import open_registry
from discoverd.client.registry import DiscoverdRegistry, parse_discoverd_url
from discoverd.errors import ConfigError, ProtocolError, Unavailable
from discoverd.model import Instance
from discoverd.server.runner import Node
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.helpers import eventually
from tests.server.test_tls import Pki, make_pki

FAST = ClientConfig(request_timeout=2, start_timeout=3, backoff_base=0.05, backoff_cap=0.2)
TOKENS = ("adm", "svc-w:write:svc", "reader:read")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client(node: Node | str, config: ClientConfig, hostname: str = "me") -> AsyncClient:
    addr = node if isinstance(node, str) else node.address
    return AsyncClient([addr], env="dev", zone="sh001", hostname=hostname, config=config)


# -- configuration ------------------------------------------------------------------------------------


def test_client_config_security_fields() -> None:
    c = ClientConfig(token="s3cr3t", https=True, tls_ca="/x/ca.pem")
    assert "s3cr3t" not in repr(c) and "tls_ca='/x/ca.pem'" in repr(c)
    with pytest.raises(ConfigError, match="token"):
        ClientConfig(token="has space")
    with pytest.raises(ConfigError, match="request_timeout"):
        ClientConfig(request_timeout=0)


def test_https_urls_and_their_parameters(tmp_path: Path) -> None:
    kw = parse_discoverd_url("discoverd+https://h1:1,h2:2?env=prod&token=t0k&tls_ca=/ca.pem")
    assert kw["nodes"] == ["h1:1", "h2:2"] and kw["env"] == "prod"
    assert (kw["config"].https, kw["config"].token, kw["config"].tls_ca) == (True, "t0k", "/ca.pem")
    base = ClientConfig(request_timeout=3)
    assert parse_discoverd_url("discoverd+https://h:1", base)["config"].request_timeout == 3
    assert parse_discoverd_url("discoverd://h:1")["config"] is None
    assert parse_discoverd_url("discoverd://h:1?token=t")["config"].https is False
    for bad in ("discoverd+http://h:1", "https://h:1", "discoverd+https://h:1?tls=1"):
        with pytest.raises(ConfigError):
            parse_discoverd_url(bad)
    reg = open_registry("discoverd+https://h:1?token=t")
    assert isinstance(reg, DiscoverdRegistry) and reg.client.config.https
    with pytest.raises(ConfigError, match="tls_ca"):
        AsyncClient(["h:1"], config=ClientConfig(https=True, tls_ca=str(tmp_path / "missing.pem")))


# -- tokens ----------------------------------------------------------------------------------------------


@pytest.fixture
async def secured() -> AsyncIterator[Node]:
    async with running_node(fast_config(tokens=TOKENS, protect_reads=True, poll_hold=2.0)) as node:
        yield node


async def test_sdk_sends_its_token_on_every_request(secured: Node) -> None:
    app = secured
    async with client(secured, FAST.replace(token="svc-w", renew_interval=0.05)) as c:
        reg = await c.register("svc", ["http://10.0.0.1:80"])
        assert [i.hostname for i in await c.fetch("svc", status=3)] == ["me"]
        await reg.set(status=2)
        await eventually(lambda: app.counters.renews >= 2, what="heartbeats accepted")
        with pytest.raises(ProtocolError) as err:
            await c.register("other", ["http://10.0.0.1:81"])
        assert err.value.code == -403 and err.value.message.startswith("forbidden: ")
    assert app.registry.app("svc", "dev") is None  # cancelled on close


async def test_sdk_without_a_token_fails_start_at_once(secured: Node) -> None:
    started = time.monotonic()
    with pytest.raises(ProtocolError) as err:
        async with client(secured, FAST.replace(start_timeout=10)):
            pass
    assert err.value.code == -401 and time.monotonic() - started < 5
    async with client(secured, FAST.replace(token="reader")) as c:  # reads only
        with pytest.raises(ProtocolError) as err:
            await c.register("svc", ["http://10.0.0.1:80"])
        assert err.value.code == -403


# -- HTTPS -------------------------------------------------------------------------------------------------


async def test_register_and_watch_over_https_with_a_custom_ca(pki: Pki) -> None:
    config = fast_config(tls_cert=str(pki.cert), tls_key=str(pki.key), poll_hold=2.0)
    secure = FAST.replace(https=True, tls_ca=str(pki.ca))
    async with (
        running_node(config) as node,
        client(node, secure, "prov") as prov,
        client(node, secure) as cons,
    ):
        await prov.register("svc", ["http://10.0.0.1:80"])
        watch = cons.watch("svc")
        assert [i.hostname for i in await asyncio.wait_for(anext(watch), 5)] == ["prov"]
        await prov.register("svc", ["http://10.0.0.2:80"], hostname="prov2")
        assert sorted(i.hostname for i in await asyncio.wait_for(anext(watch), 5)) == ["prov", "prov2"]


@pytest.mark.parametrize("which", ["other CA", "system CAs", "plain http"])
async def test_untrusted_or_plain_connections_fail(pki: Pki, which: str) -> None:
    config = fast_config(tls_cert=str(pki.cert), tls_key=str(pki.key))
    settings = {
        "other CA": FAST.replace(https=True, tls_ca=str(pki.other_ca), start_timeout=1),
        "system CAs": FAST.replace(https=True, start_timeout=1),
        "plain http": FAST.replace(start_timeout=1),
    }[which]
    async with running_node(config) as node:
        with pytest.raises(Unavailable):
            async with client(node, settings):
                pass


def test_https_end_to_end_against_a_server_process(pki: Pki) -> None:
    args = [
        *("--env", "dev", "--zone", "sh001", "--hostname", "tls-proc"),
        *("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-ca", str(pki.ca)),
        *("--token", "adm", "--token", "svc-w:write:svc", "--protect-reads"),
    ]
    with ServerProcess(args) as proc:

        async def scenario() -> None:
            url = (
                f"discoverd+https://{proc.addr}?env=dev&zone=sh001&hostname=app1&token=svc-w&tls_ca={pki.ca}"
            )
            reg = open_registry(url)
            try:
                ins = Instance(
                    zone="sh001", env="dev", appid="svc", hostname="app1", addrs=["http://10.0.0.1:80"]
                )
                await reg.register(ins)
                assert [i.hostname for i in await reg.get_service("svc")] == ["app1"]
                with pytest.raises(ProtocolError):
                    await reg.register(
                        Instance(
                            zone="sh001", env="dev", appid="not-mine", hostname="app1", addrs=["http://x:1"]
                        )
                    )
            finally:
                await reg.aclose()
            anonymous = open_registry(f"discoverd+https://{proc.addr}?env=dev&zone=sh001&tls_ca={pki.ca}")
            with pytest.raises(ProtocolError) as err:
                await anonymous.get_service("svc")
            assert err.value.code == -401
            await anonymous.aclose()

        asyncio.run(scenario())


# -- the caller verifying callees ---------------------------------------------------------------------------


@pytest.fixture
async def https_callee(pki: Pki) -> AsyncIterator[int]:
    """An HTTPS backend on loopback with the test certificate; yields its port."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello over tls")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pki.cert), str(pki.key))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_caller_verifies_https_callees_with_a_custom_ca(pki: Pki, https_callee: int) -> None:
    async with running_node(fast_config()) as node, client(node, FAST, "prov") as prov:
        await prov.register("tls.app", [f"https://127.0.0.1:{https_callee}"])
        async with client(node, FAST) as plain, client(node, FAST.replace(tls_ca=str(pki.ca))) as with_ca:
            own_ca = plain.caller(default=CalleeConfig(https=True, tls_ca=str(pki.ca), max_attempts=1))
            assert (await own_ca.get("tls.app", "/hello")).text() == "hello over tls"
            inherited = with_ca.caller(default=CalleeConfig(https=True, max_attempts=1))
            assert (await inherited.get("tls.app", "/hello")).text() == "hello over tls"
            system = plain.caller(default=CalleeConfig(https=True, max_attempts=1))
            with pytest.raises(CallFailed, match=r"[Cc]ertificate"):
                await system.get("tls.app", "/hello")
            wrong = plain.caller(default=CalleeConfig(https=True, tls_ca=str(pki.other_ca), max_attempts=1))
            with pytest.raises(CallFailed, match=r"[Cc]ertificate"):
                await wrong.get("tls.app", "/hello")
