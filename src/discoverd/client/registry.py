"""``discoverd://`` — the registry interface over a discoverd (or bilibili/discovery) server.

``DiscoverdRegistry("discoverd://h1:7171,h2:7171?env=dev&zone=sh001&region=sh&hostname=me")``
runs an :class:`AsyncClient` (started on first use). ``discoverd+https://`` reaches the nodes over
HTTPS; ``token=`` (sent as ``Authorization: Bearer``) and ``tls_ca=`` (a PEM CA bundle path) set the
client's :class:`ClientConfig` fields of the same names. Mapping onto the protocol:

* ``register`` keeps the instance alive with heartbeats until ``deregister``/``aclose`` (``ttl`` is
  not needed: the server evicts silent instances); it is keyed by the instance's ``appid`` and
  ``hostname``, with the **client's** env/zone/region (as the Go clients do);
* ``get_service`` returns the UP instances, from the client's watched cache;
* ``list_services`` reads ``fetch/all`` for the client's env (``infra.discovery`` left out);
* ``watch(appid)`` diffs successive lists of the long poll; ``watch()`` (all apps) diffs
  ``fetch/all`` every ``all_interval`` seconds, the protocol having no "watch everything";
* ``caller()`` reads the client's watched cache directly (:class:`_ClientSource`): by default it
  prefers the client's zone and follows the server's zone weights, as ``client.caller()`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from discoverd.backends.base import Registry, RegistryClosed, Watcher
from discoverd.calling.caller import AsyncCaller
from discoverd.calling.source import InstanceSource
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.registration import AsyncRegistration
from discoverd.core.watched_apps import decode_info
from discoverd.errors import ConfigError, DiscoverdError, error_for_code
from discoverd.model import INFRA_APPID, Action, Event, Instance, diff_instances

SCHEMES = ("discoverd", "discoverd+https")
_IDENTITY = frozenset({"env", "zone", "region", "hostname"})
_SECURITY = frozenset({"token", "tls_ca"})


def parse_discoverd_url(url: str, config: ClientConfig | None = None) -> dict[str, Any]:
    """``discoverd[+https]://h:p[,h:p]?env=&zone=&region=&hostname=&token=&tls_ca=`` →
    :class:`AsyncClient` keyword args; ``config`` (default: the defaults) gets the URL's ``https``,
    ``token`` and ``tls_ca``. Raises :class:`ConfigError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"{url!r}: expected a discoverd:// or discoverd+https:// URL")
    nodes = [n for n in parts.netloc.split(",") if n]
    if not nodes:
        raise ConfigError(f"{url!r}: no registry node")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - _IDENTITY - _SECURITY
    if unknown:
        raise ConfigError(f"{url!r}: unknown parameter(s) {sorted(unknown)}")
    changes: dict[str, Any] = {k: v for k, v in query.items() if k in _SECURITY}
    if parts.scheme == "discoverd+https":
        changes["https"] = True
    base = config or ClientConfig()
    out: dict[str, Any] = {"nodes": nodes, **{k: v for k, v in query.items() if k in _IDENTITY}}
    out["config"] = base.replace(**changes) if changes else config
    return out


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
        super().__init__()
        if client is None:
            if url is None:
                raise ConfigError("DiscoverdRegistry needs a url or a client")
            client = AsyncClient(**parse_discoverd_url(url, config))
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.all_interval = all_interval
        self._regs: dict[tuple[str, str], AsyncRegistration] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        self._watches: set[_Watch] = set()

    def __repr__(self) -> str:
        return f"<DiscoverdRegistry {self.client!r}>"

    async def _ready(self) -> AsyncClient:
        if self._closed:
            raise RegistryClosed("registry is closed")
        async with self._lock:
            if not self.client.started:
                await self.client.start()
        return self.client

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        client = await self._ready()
        await self._settle()
        key = (instance.appid, instance.hostname)
        old = self._regs.pop(key, None)
        if old is not None:
            old.orphan()  # replaced below by a re-register with the new content
        reg = await client.register(
            instance.appid,
            instance.addrs,
            metadata=instance.metadata,
            status=instance.status,
            version=instance.version,
            hostname=instance.hostname,
        )
        self._regs[key] = reg
        self._echo(Event(Action.CREATE, reg.instance.copy()))

    async def deregister(self, instance: Instance) -> None:
        client = await self._ready()
        await self._settle()
        reg = self._regs.pop((instance.appid, instance.hostname), None)
        if reg is not None:
            await reg.close()
            self._echo(Event(Action.DELETE, reg.instance.copy()))
            return
        params = [("zone", client.zone), ("env", client.env), ("appid", instance.appid)]
        answer = await client.call("POST", "cancel", [*params, ("hostname", instance.hostname)])
        if answer.code == 0:
            gone = instance.copy()
            gone.zone, gone.env = client.zone, client.env
            self._echo(Event(Action.DELETE, gone))

    async def get_service(self, appid: str) -> list[Instance]:
        client = await self._ready()
        return [i.copy() for i in await client.fetch(appid)]

    async def _all(self) -> dict[str, list[Instance]]:
        client = await self._ready()
        answer = await client.call("GET", "fetch/all", [])
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

    def watch(self, appid: str | None = None) -> Watcher:
        """Changes of ``appid`` (or of every app) from now on; see :class:`_Watch`."""
        if self._closed:
            raise RegistryClosed("registry is closed")
        w = _Watch(appid, snapshot=self._snapshot, stream=self._stream, closed=self._watches.discard)
        self._watches.add(w)
        return w

    def caller(self, *, zone: str | None = None, **options: Any) -> AsyncCaller:
        """See :meth:`Registry.caller`; ``zone`` defaults to the client's, ``from_node`` to its
        hostname and ``tls_ca`` to its ``config.tls_ca`` (as for ``client.caller()``)."""
        options.setdefault("from_node", self.client.hostname)
        options.setdefault("tls_ca", self.client.config.tls_ca)
        return super().caller(zone=zone, **options)

    def instance_source(self, zone: str | None = None) -> InstanceSource:
        """The client's watched cache (started on first use), with the server's zone weights when
        ``zone`` is the client's own (``None``: the client's zone)."""
        return _ClientSource(self.client, self._ready, self.client.zone if zone is None else zone)

    async def _settle(self) -> None:
        """Wait until every open watch has its snapshot (called before each write)."""
        pending = [w.ready.wait() for w in self._watches if not w.ready.is_set()]
        if pending:
            await asyncio.gather(*pending)

    def _echo(self, event: Event) -> None:
        for w in list(self._watches):
            w.echo(event)

    async def _snapshot(self, appid: str | None) -> dict[str, Instance]:
        client = await self._ready()
        if appid is None:
            return _keyed(i for items in (await self._all()).values() for i in items)
        answer = await client.call("GET", "fetch", [("env", client.env), ("appid", appid), ("status", "1")])
        if answer.code != 0:
            return {}
        instances, _ = decode_info(answer.data)
        return _keyed(instances)

    async def _stream(self, appid: str | None) -> AsyncIterator[dict[str, Instance]]:
        """Successive full views: the long poll for one app, ``fetch/all`` at an interval for all."""
        client = await self._ready()
        if appid is not None:
            async for instances in client.watch(appid):
                yield _keyed(instances)
            return
        while not self._closed:
            await asyncio.sleep(self.all_interval)
            try:
                yield _keyed(i for items in (await self._all()).values() for i in items)
            except DiscoverdError:
                continue  # keep the last view while the registry is unreachable

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.close_callers()
        for w in list(self._watches):
            await w.aclose()
        for reg in list(self._regs.values()):
            await reg.close()
        self._regs.clear()
        if self._owns_client:
            await self.client.aclose()


class _ClientSource:
    """The :class:`~discoverd.calling.source.InstanceSource` of a :class:`DiscoverdRegistry`'s callers:
    its client's watched cache; ``ready()`` starts the client on first use (and raises once the
    registry is closed). Zone weights are the server's for the client's zone, so ``None`` for another."""

    def __init__(self, client: AsyncClient, ready: Callable[[], Awaitable[AsyncClient]], zone: str) -> None:
        self._client = client
        self._ready = ready
        self._zone = zone

    def __repr__(self) -> str:
        return f"<_ClientSource {self._client!r} zone={self._zone!r}>"

    @property
    def zone(self) -> str:
        return self._zone

    async def instances(self, appid: str) -> list[Instance]:
        client = await self._ready()
        return await client.instances(appid)

    async def subscribe(self, appid: str) -> AsyncIterator[list[Instance]]:
        client = await self._ready()
        async for instances in client.subscribe(appid):
            yield instances

    def zone_weights(self, appid: str) -> Mapping[str, int] | None:
        return self._client.zone_weights(appid) if self._zone == self._client.zone else None


def _key(ins: Instance) -> str:
    return f"{ins.appid}/{ins.zone}/{ins.hostname}"


def _keyed(instances: Iterable[Instance]) -> dict[str, Instance]:
    return {_key(i): i.copy() for i in instances}


class _Watch:
    """One watch iterator of a :class:`DiscoverdRegistry`.

    It keeps a model of the watched instances: a snapshot taken when it starts, then every full view
    of the stream (long poll / ``fetch/all``) diffed against the model. Writes made through the same
    registry wait until the snapshots of the watches created before them are taken (so a change made
    after ``watch()`` returned is never folded into its snapshot), and are echoed at once (folded
    into the model, so the stream does not repeat them).

    The registry passes its collaborators in: ``snapshot(appid)`` reads the first model,
    ``stream(appid)`` yields the successive full views, ``closed(watch)`` is told when it closes.
    """

    def __init__(
        self,
        appid: str | None,
        *,
        snapshot: Callable[[str | None], Awaitable[dict[str, Instance]]],
        stream: Callable[[str | None], AsyncIterator[dict[str, Instance]]],
        closed: Callable[[_Watch], None],
    ) -> None:
        self._appid = appid
        self._snapshot = snapshot
        self._stream = stream
        self._closed_cb = closed
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._model: dict[str, Instance] | None = None
        self.ready = asyncio.Event()
        """Set once the snapshot is taken (or failed)."""
        self._closed = False
        self._task = asyncio.ensure_future(self._run())  # owned: cancelled by aclose()

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> Event:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def _apply(self, event: Event) -> None:
        assert self._model is not None
        key = _key(event.instance)
        if event.action is Action.DELETE:
            if self._model.pop(key, None) is None:
                return
            self._queue.put_nowait(event)
            return
        old = self._model.get(key)
        self._model[key] = event.instance
        if old is None:
            self._queue.put_nowait(Event(Action.CREATE, event.instance.copy()))
        else:
            for change in diff_instances({key: old}, {key: event.instance}):
                self._queue.put_nowait(change)

    def echo(self, event: Event) -> None:
        if self._closed or self._model is None:
            return
        if self._appid is None or event.instance.appid == self._appid:
            self._apply(event)

    async def _run(self) -> None:
        try:
            try:
                self._model = await self._snapshot(self._appid)
            finally:
                self.ready.set()
            async for view in self._stream(self._appid):
                for change in diff_instances(self._model, view):
                    self._queue.put_nowait(change)
                self._model = view
        except DiscoverdError:
            pass
        finally:
            self._queue.put_nowait(None)

    async def aclose(self) -> None:
        """Stop this watch; pending events are dropped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closed_cb(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
