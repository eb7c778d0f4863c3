"""What the framework integrations share: their options, the start-up of a client, addresses.

Private to :mod:`discoverd.integrations`; the public modules document the behaviour.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.sync_client import Client, Registration
from discoverd.errors import ConfigError

MASTER_REGISTERED = "DISCOVERD_MASTER_REGISTERED"
"""Environment variable the gunicorn hooks set in the master (to its pid) once it registered: the
workers inherit it, and the other integrations then default to discovery only."""

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
"""Hosts that mean "every interface": registered as :func:`advertised_host` instead."""


@dataclass(frozen=True, kw_only=True)
class IntegrationPlan:
    """The client to start and the instance to register (``register`` False: discovery only)."""

    appid: str
    addrs: tuple[str, ...]
    register: bool
    nodes: Sequence[str] | str | None
    env: str | None
    zone: str | None
    region: str | None
    hostname: str | None
    metadata: dict[str, str] | None
    version: str
    config: ClientConfig | None

    def client_args(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "env": self.env,
            "zone": self.zone,
            "region": self.region,
            "hostname": self.hostname,
            "config": self.config,
        }

    def register_args(self) -> dict[str, Any]:
        return {
            "appid": self.appid,
            "addrs": list(self.addrs),
            "metadata": self.metadata,
            "version": self.version,
        }

    def with_addrs(self, addrs: Iterable[str]) -> IntegrationPlan:
        return replace(self, addrs=tuple(addrs))

    def with_register(self, register: bool) -> IntegrationPlan:
        return replace(self, register=register)


def plan(
    *,
    appid: str | None,
    addrs: Iterable[str] | None,
    register: bool | None,
    nodes: Sequence[str] | str | None,
    env: str | None,
    zone: str | None,
    region: str | None,
    hostname: str | None,
    metadata: dict[str, str] | None,
    version: str,
    config: ClientConfig | None,
) -> IntegrationPlan:
    """Resolve the defaults: ``appid`` from ``$APP_ID``; ``register=None`` means "register unless a
    gunicorn master already registered this server" (:data:`MASTER_REGISTERED`)."""
    appid = appid or os.environ.get("APP_ID", "")
    if register is None:
        register = not master_registered()
    if register and not appid:
        raise ConfigError("registering needs an appid (appid=... or APP_ID)")
    return IntegrationPlan(
        appid=appid,
        addrs=tuple(addrs or ()),
        register=register,
        nodes=nodes,
        env=env,
        zone=zone,
        region=region,
        hostname=hostname,
        metadata=dict(metadata) if metadata is not None else None,
        version=version,
        config=config,
    )


def master_registered() -> bool:
    """True in a process whose gunicorn master registered the server (a worker, or the master)."""
    return bool(os.environ.get(MASTER_REGISTERED))


def require_addrs(p: IntegrationPlan) -> None:
    if p.register and not p.addrs:
        raise ConfigError(f"registering {p.appid} needs its addresses (addrs=['http://host:port'])")


async def start_async(p: IntegrationPlan) -> AsyncClient:
    """A started :class:`AsyncClient`, with ``p``'s instance registered when ``p.register`` and it
    has addresses; the client is closed again when either step fails."""
    client = AsyncClient(**p.client_args())
    await client.start()
    try:
        if p.register and p.addrs:
            await client.register(**p.register_args())
    except BaseException:
        await client.aclose()
        raise
    return client


def start_sync(p: IntegrationPlan) -> tuple[Client, Registration | None]:
    """The synchronous twin of :func:`start_async`, with the registration if one was made."""
    client = Client(**p.client_args())
    try:
        if p.register and p.addrs:
            return client, client.register(**p.register_args())
    except BaseException:
        client.close()
        raise
    return client, None


def urls(sockaddrs: Iterable[object], scheme: str = "http") -> list[str]:
    """``scheme://host:port`` for each TCP socket address (``(host, port, ...)`` tuples; anything
    else, such as a Unix socket path, is skipped), wildcard hosts replaced by
    :func:`advertised_host`, duplicates dropped, in order."""
    out: list[str] = []
    for sockaddr in sockaddrs:
        if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
            continue
        host, port = str(sockaddr[0]), int(sockaddr[1])
        host = advertised_host() if host in WILDCARDS else host
        url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        if url not in out:
            out.append(url)
    return out


def advertised_host() -> str:
    """The IPv4 address other machines reach this one at: the source address the kernel picks for
    the default route (a UDP socket "connected" to a TEST-NET address; nothing is sent), else the
    address of the host name, else loopback."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        host: str = probe.getsockname()[0]
        if host not in WILDCARDS:
            return host
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"
