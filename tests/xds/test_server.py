"""The gRPC side of the xDS server: lifecycle, TLS, read protection, NACKs, lazy imports."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from discoverd.core.registry_state import RegistryState
from discoverd.errors import ConfigError
from discoverd.grpc import CALL_CREDS_VAR, bootstrap
from discoverd.model import Instance
from discoverd.server.xds.protos import ENDPOINTS, LISTENER
from discoverd.server.xds.server import State, XdsServer
from discoverd.testing import fast_config
from tests.server.test_tls import Pki, make_pki
from tests.xds.harness import RawAds, backends, xds_client


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("xds-pki"))


async def test_aclose_cancels_open_streams_at_once() -> None:
    xds = XdsServer(fast_config(), RegistryState(), addr="127.0.0.1:0")
    address = await xds.start()
    clients = [RawAds(address) for _ in range(20)]
    for c in clients:
        await c.__aenter__()
        await c.send(LISTENER, "app", node_id="n")
        await c.recv()
    assert xds.stats().streams == 20
    started = time.monotonic()
    await xds.aclose()
    assert time.monotonic() - started < 1.0
    assert xds.stats().streams == 0 and xds.state is State.CLOSED
    for c in clients:
        with pytest.raises(grpc.aio.AioRpcError):
            await c.recv()
        await c.__aexit__()
    await xds.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await xds.start()


async def test_a_busy_port_is_an_os_error() -> None:
    first = XdsServer(fast_config(), RegistryState(), addr="127.0.0.1:0")
    address = await first.start()
    try:
        with pytest.raises(OSError, match="cannot listen"):
            await XdsServer(fast_config(), RegistryState(), addr=address).start()
    finally:
        await first.aclose()
    with pytest.raises(ConfigError):
        XdsServer(fast_config(), RegistryState())  # no address at all


async def test_read_protection_needs_a_bearer_token() -> None:
    config = fast_config(tokens=("sekret:read", "admin-token"), protect_reads=True)
    xds = XdsServer(config, RegistryState(), addr="127.0.0.1:0")
    address = await xds.start()
    try:
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "sekret"),)):
            async with RawAds(address, metadata=metadata) as c:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await c.send(LISTENER, "app", node_id="n")
                    await c.recv()
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for token in ("sekret", "admin-token"):
            async with RawAds(address, metadata=(("authorization", f"Bearer {token}"),)) as c:
                await c.send(LISTENER, "app", node_id="n")
                assert (await c.recv()).type_url == LISTENER
        assert xds.stats().refused == 3
    finally:
        await xds.aclose()


async def test_tokens_without_read_protection_leave_xds_open() -> None:
    xds = XdsServer(fast_config(tokens=("sekret",)), RegistryState(), addr="127.0.0.1:0")
    try:
        async with RawAds(await xds.start()) as c:
            await c.send(LISTENER, "app", node_id="n")
            assert (await c.recv()).type_url == LISTENER
    finally:
        await xds.aclose()


async def test_a_nack_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    registry = RegistryState()
    xds = XdsServer(fast_config(), registry, addr="127.0.0.1:0")
    xds.on_event(registry.register(Instance(zone="z1", env="dev", appid="app", hostname="h"), 1))
    try:
        async with RawAds(await xds.start()) as c:
            await c.send(ENDPOINTS, "app", node_id="picky")
            sent = await c.recv()
            with caplog.at_level(logging.WARNING, logger="discoverd.xds"):
                await c.send(ENDPOINTS, "app", nonce=sent.nonce, error="no thanks")
                await c.send(ENDPOINTS, "app", nonce=sent.nonce)  # then an ACK of the same response
                deadline = time.monotonic() + 5
                while xds.stats().acks["endpoints"] == 0:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
            assert xds.stats().nacks == {"listener": 0, "cluster": 0, "endpoints": 1}
            assert "picky" in caplog.text and "no thanks" in caplog.text
    finally:
        await xds.aclose()


async def test_tls_with_the_nodes_certificate_for_raw_and_grpcio_clients(pki: Pki) -> None:
    config = fast_config(tls_cert=str(pki.cert), tls_key=str(pki.key), tls_ca=str(pki.ca))
    registry = RegistryState()
    xds = XdsServer(config, registry, addr="127.0.0.1:0")
    address = await xds.start()
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        async with RawAds(address, credentials=creds) as c:
            await c.send(LISTENER, "app", node_id="n")
            assert (await c.recv()).type_url == LISTENER
        async with RawAds(address) as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await plain.send(LISTENER, "app", node_id="n")
                await plain.recv()
        async with backends("secure") as bs:
            instance = Instance(
                zone="z1", env="dev", appid="app", hostname="secure", addrs=[bs["secure"].addr]
            )
            xds.on_event(registry.register(instance, 1))
            async with xds_client(bootstrap(address, env="dev", zone="z1", ca_file=str(pki.ca))) as client:
                assert await client.calls("app", 3) == ["secure"] * 3
    finally:
        await xds.aclose()


def test_a_bad_certificate_is_a_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.pem")
    xds = XdsServer(fast_config(tls_cert=missing, tls_key=missing), RegistryState(), addr="127.0.0.1:0")
    with pytest.raises(ConfigError):
        asyncio.run(xds.start())


LAZY = """
import asyncio, sys
import discoverd, discoverd.cli, discoverd.grpc
from discoverd.testing import fast_config, running_node

async def main():
    async with running_node(fast_config()):
        pass

asyncio.run(main())
assert discoverd.cli.main(["xds-bootstrap", "--xds", "h:1", "--env", "e", "--zone", "z"]) == 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "envoy", "xds", "udpa", "google"))
print("LOADED", loaded)
"""


def test_nothing_of_grpc_is_imported_unless_the_xds_server_is_used() -> None:
    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=60, check=True)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


def jwt_shaped(expires: float) -> str:
    """A token grpcio accepts as a JWT (it reads ``exp``); discoverd compares it as an opaque token."""

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': int(expires)})}.c2ln"


async def test_a_grpcio_client_presents_the_token_of_its_bootstrap(pki: Pki, tmp_path: Path) -> None:
    token = jwt_shaped(time.time() + 3600)
    (tmp_path / "token").write_text(token)
    config = fast_config(
        tls_cert=str(pki.cert), tls_key=str(pki.key), tokens=(f"{token}:read",), protect_reads=True
    )
    registry = RegistryState()
    xds = XdsServer(config, registry, addr="127.0.0.1:0")
    address = await xds.start()
    try:
        async with backends("guarded") as bs:
            instance = Instance(
                zone="z1", env="dev", appid="app", hostname="guarded", addrs=[bs["guarded"].addr]
            )
            xds.on_event(registry.register(instance, 1))
            boot = bootstrap(
                address, env="dev", zone="z1", ca_file=str(pki.ca), token_file=str(tmp_path / "token")
            )
            async with xds_client(boot, env={CALL_CREDS_VAR: "true"}) as client:
                assert await client.calls("app", 3) == ["guarded"] * 3
        assert xds.stats().refused == 0
    finally:
        await xds.aclose()
