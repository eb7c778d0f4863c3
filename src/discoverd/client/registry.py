"""``discoverd://`` — the registry interface over a discoverd (or bilibili/discovery) server.

``DiscoverdRegistry("discoverd://h1:7171,h2:7171?env=dev&zone=sh001&region=sh&hostname=me")``
runs an :class:`AsyncClient` (started on first use). Mapping onto the protocol:

* ``register`` keeps the instance alive with heartbeats until ``deregister``/``aclose`` (``ttl`` is
  not needed: the server evicts silent instances); it is keyed by the instance's ``appid`` and
  ``hostname``, with the **client's** env/zone/region (as the Go clients do);
* ``get_service`` returns the UP instances, from the client's watched cache;
* ``list_services`` reads ``fetch/all`` for the client's env (``infra.discovery`` left out);
* ``watch(appid)`` diffs successive lists of the long poll; ``watch()`` (all apps) diffs
  ``fetch/all`` every ``all_interval`` seconds, the protocol having no "watch everything".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.registration import Registration
from discoverd.core.watch import decode_info
from discoverd.errors import ConfigError, DiscoverdError, error_for_code
from discoverd.model import INFRA_APPID, Event, Instance, diff_instances


def parse_discoverd_url(url: str) -> dict[str, Any]:
    """``discoverd://h:p[,h:p]?env=&zone=&region=&hostname=`` → :class:`AsyncClient` keyword args."""
    parts = urlsplit(url)
    if parts.scheme != "discoverd":
        raise ConfigError(f"{url!r}: expected a discoverd:// URL")
    nodes = [n for n in parts.netloc.split(",") if n]
    if not nodes:
        raise ConfigError(f"{url!r}: no registry node")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"env", "zone", "region", "hostname"}
    if unknown:
        raise ConfigError(f"{url!r}: unknown parameter(s) {sorted(unknown)}")
    return {"nodes": nodes, **query}


class DiscoverdRegistry(Registry):
    """The registry interface on a discoverd server cluster. Task-safe in one loop."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: AsyncClient | None = None,
        config: ClientConfig | None = None,
        all_interval: float = 1.0,
    ) -> None:
        if client is None:
            if url is None:
                raise ConfigError("DiscoverdRegistry needs a url or a client")
            client = AsyncClient(**parse_discoverd_url(url), config=config)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.all_interval = all_interval
        self._regs: dict[tuple[str, str], Registration] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<DiscoverdRegistry {self.client!r}>"

    async def _ready(self) -> AsyncClient:
        if self._closed:
            raise RegistryClosed("registry is closed")
        async with self._lock:
            if not self.client._started:
                await self.client.start()
        return self.client

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        client = await self._ready()
        key = (instance.appid, instance.hostname)
        old = self._regs.pop(key, None)
        if old is not None:
            old.orphan()  # replaced below by a re-register with the new content
            client._forget(old)
        self._regs[key] = await client.register(
            instance.appid,
            instance.addrs,
            metadata=instance.metadata,
            status=instance.status,
            version=instance.version,
            hostname=instance.hostname,
        )

    async def deregister(self, instance: Instance) -> None:
        client = await self._ready()
        reg = self._regs.pop((instance.appid, instance.hostname), None)
        if reg is not None:
            await reg.close()
            return
        params = [("zone", client.zone), ("env", client.env), ("appid", instance.appid)]
        await client._call("POST", "cancel", [*params, ("hostname", instance.hostname)])

    async def get_service(self, appid: str) -> list[Instance]:
        client = await self._ready()
        return [i.copy() for i in await client.fetch(appid)]

    async def _all(self) -> dict[str, list[Instance]]:
        client = await self._ready()
        answer = await client._call("GET", "fetch/all", [])
        if answer.code != 0:
            raise error_for_code(answer.code, answer.message)
        data = answer.data if isinstance(answer.data, dict) else {}
        out: dict[str, list[Instance]] = {}
        for appid, items in data.items():
            if appid == INFRA_APPID or not isinstance(items, list):
                continue
            mine = [i for i in map(Instance.from_wire, items) if i.env == client.env]
            if mine:
                out[appid] = mine
        return out

    async def list_services(self) -> list[str]:
        return sorted(await self._all())

    async def watch(self, appid: str | None = None) -> AsyncIterator[Event]:
        client = await self._ready()
        if appid is None:
            async for event in self._watch_all():
                yield event
            return
        before = await self._snapshot(client, appid)
        async for instances in client.watch(appid):
            if self._closed:
                return
            now = {i.hostname: i.copy() for i in instances}
            for event in diff_instances(before, now):
                yield event
            before = now

    async def _snapshot(self, client: AsyncClient, appid: str) -> dict[str, Instance]:
        answer = await client._call("GET", "fetch", [("env", client.env), ("appid", appid), ("status", "1")])
        if answer.code != 0:
            return {}
        instances, _ = decode_info(answer.data)
        return {i.hostname: i for i in instances}

    async def _watch_all(self) -> AsyncIterator[Event]:
        def flat(apps: dict[str, list[Instance]]) -> dict[str, Instance]:
            return {f"{i.appid}/{i.zone}/{i.hostname}": i for items in apps.values() for i in items}

        before = flat(await self._all())
        while not self._closed:
            await asyncio.sleep(self.all_interval)
            try:
                now = flat(await self._all())
            except DiscoverdError:
                continue  # keep the last view while the registry is unreachable
            for event in diff_instances(before, now):
                yield event
            before = now

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for reg in list(self._regs.values()):
            await reg.close()
        self._regs.clear()
        if self._owns_client:
            await self.client.aclose()
