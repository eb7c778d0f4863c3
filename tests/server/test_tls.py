"""HTTPS for a node and for its peers: a test CA, real TLS on loopback, replication over TLS with a
peer secret, and a wrong secret refused (-401) with nothing replicated."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from discoverd.config import ServerConfig
from discoverd.errors import ConfigError
from discoverd.server import tls
from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node
from tests.helpers import eventually

# -- a throw-away PKI -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of a test CA and of a server certificate for 127.0.0.1, 127.0.0.2 and localhost."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    """A second CA that did not sign the server certificate (an untrusted one)."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_pki(directory: Path) -> Pki:
    """Write a CA, a server certificate signed by it, its key, and an unrelated CA into ``directory``."""
    ca_key, ca_cert = _ca("discoverd test CA")
    _, other = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("127.0.0.2")),
        x509.DNSName("localhost"),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("discoverd test server"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(
        directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "other.pem"
    )
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.other_ca.write_bytes(other.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    pki.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_config(pki: Pki, **changes: Any) -> ServerConfig:
    base = {"tls_cert": str(pki.cert), "tls_key": str(pki.key), "tls_ca": str(pki.ca), "poll_hold": 2.0}
    return fast_config(**{**base, **changes})


def verifying(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


REG = {"zone": "sh001", "env": "dev", "appid": "svc", "status": "1", "addrs": "http://10.0.0.1:80"}


async def call(
    session: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None, **kw: Any
) -> Any:
    """POST ``params`` (GET without) to ``url``; the parsed JSON answer."""
    if params is None:
        async with session.get(url, **kw) as r:
            return orjson.loads(await r.read())
    async with session.post(url, data=params, **kw) as r:
        return orjson.loads(await r.read())


async def hosts(session: aiohttp.ClientSession, node: Node, ctx: ssl.SSLContext) -> list[str]:
    url = f"https://{node.address}/discovery/fetch?env=dev&appid=svc&status=3"
    doc = await call(session, url, ssl=ctx)
    if doc["code"] != 0:
        return []
    return sorted(i["hostname"] for zone in doc["data"]["instances"].values() for i in zone)


# -- contexts ----------------------------------------------------------------------------------------


def test_contexts_are_none_without_tls() -> None:
    c = fast_config()
    assert tls.server_context(c) is None and tls.client_context(c) is None
    assert tls.peer_scheme(c) == "http"


def test_contexts_require_tls_12_and_verify_peers(pki: Pki) -> None:
    c = tls_config(pki)
    server, client = tls.server_context(c), tls.client_context(c)
    assert server is not None and client is not None
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2 == client.minimum_version
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert tls.peer_scheme(c) == "https"


def test_unreadable_certificate_or_ca_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_cert"):
        tls.server_context(fast_config(tls_cert=str(tmp_path / "nope.pem"), tls_key=str(pki.key)))
    with pytest.raises(ConfigError, match="tls_cert"):
        tls.server_context(fast_config(tls_cert=str(pki.ca), tls_key=str(pki.key)))  # key mismatch
    with pytest.raises(ConfigError, match="tls_ca"):
        tls.client_context(tls_config(pki, tls_ca=str(tmp_path / "missing.pem")))


async def test_bad_certificate_fails_the_start_before_binding(pki: Pki, tmp_path: Path) -> None:
    node = Node(fast_config(tls_cert=str(tmp_path / "nope.pem"), tls_key=str(pki.key)))
    with pytest.raises(ConfigError, match="tls_cert"):
        await node.run()
    assert getattr(node, "http", None) is None  # nothing was built or bound


# -- a node serving HTTPS ------------------------------------------------------------------------------


async def test_node_serves_https_verified_by_the_test_ca(pki: Pki) -> None:
    async with running_node(tls_config(pki)) as node, aiohttp.ClientSession() as s:
        base = f"https://{node.address}/discovery"
        assert (await call(s, f"{base}/register", {**REG, "hostname": "h1"}, ssl=verifying(pki.ca)))[
            "code"
        ] == 0
        assert await hosts(s, node, verifying(pki.ca)) == ["h1"]
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await call(s, f"{base}/nodes", ssl=verifying(pki.other_ca))
        with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port is not served
            await call(s, f"http://{node.address}/discovery/nodes")


# -- peers over TLS -------------------------------------------------------------------------------------


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as st:
        yield st


async def test_two_nodes_replicate_over_tls_with_the_peer_secret(pki: Pki, stack: AsyncExitStack) -> None:
    a = await stack.enter_async_context(running_node(tls_config(pki, peer_secret="s3cret", hostname="A")))
    b = await stack.enter_async_context(
        running_node(tls_config(pki, peer_secret="s3cret", hostname="B", nodes=(a.address,)))
    )
    s = await stack.enter_async_context(aiohttp.ClientSession())
    ctx = verifying(pki.ca)
    assert b.replicator is not None
    assert b.replicator.scheme == "https"
    # A learns B from B's self-registration, itself replicated over TLS with the secret
    await eventually(lambda: b.address in a.replicator.own, what="A knows B")
    assert (await call(s, f"https://{a.address}/discovery/register", {**REG, "hostname": "on-a"}, ssl=ctx))[
        "code"
    ] == 0
    assert (await call(s, f"https://{b.address}/discovery/register", {**REG, "hostname": "on-b"}, ssl=ctx))[
        "code"
    ] == 0
    for node in (a, b):
        await _until_hosts(s, node, ctx, ["on-a", "on-b"])
    for node in (a, b):
        assert node.replicator is not None
        assert all(p["refused"] == 0 for p in node.replicator.stats().values())


async def _until_hosts(s: aiohttp.ClientSession, node: Node, ctx: ssl.SSLContext, want: list[str]) -> None:
    deadline = asyncio.get_running_loop().time() + 5.0
    while (got := await hosts(s, node, ctx)) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{node}: {got} != {want}"
        await asyncio.sleep(0.02)


async def test_wrong_peer_secret_is_refused_and_nothing_replicates(pki: Pki, stack: AsyncExitStack) -> None:
    a = await stack.enter_async_context(running_node(tls_config(pki, peer_secret="right", hostname="A")))
    b = await stack.enter_async_context(
        running_node(tls_config(pki, peer_secret="wrong", hostname="B", nodes=(a.address,)))
    )
    s = await stack.enter_async_context(aiohttp.ClientSession())
    ctx = verifying(pki.ca)
    assert b.replicator is not None
    rep = b.replicator
    # B's self-registration is sent to A first: refused
    await eventually(lambda: rep.stats()[a.address]["refused"] >= 1, what="A refuses B's secret")
    refused = rep.stats()[a.address]["refused"]
    assert (await call(s, f"https://{b.address}/discovery/register", {**REG, "hostname": "on-b"}, ssl=ctx))[
        "code"
    ] == 0
    await eventually(lambda: rep.stats()[a.address]["refused"] > refused, what="the register refused too")
    assert await hosts(s, a, ctx) == []
    assert a.registry.get("infra.discovery", "dev", "sh001", "B") is None
    assert rep.nodes()[1].status == 1  # A is LOST for B
    # a forged replicated write with the wrong secret gets the -401 envelope
    forged = {**REG, "hostname": "forged", "replication": "true"}
    for headers in ({"Authorization": "Bearer wrong"}, {}):
        async with s.post(
            f"https://{a.address}/discovery/register", data=forged, headers=headers, ssl=ctx
        ) as r:
            doc = orjson.loads(await r.read())
            assert r.status == 200 and r.headers["Kratos-Status-Code"] == "-401"
        assert doc["code"] == -401 and doc["message"].startswith("unauthorized: ")
    assert await hosts(s, a, ctx) == []
