"""The synchronous client: the same API as :class:`AsyncClient`, for threads and WSGI apps.

A facade, not a second implementation: one :class:`AsyncClient` runs on a private loop in a daemon
thread (:class:`~discoverd.client._portal.Portal`), so heartbeats and watches keep running between
calls. Thread-safe. Fork-safe: in a child process (gunicorn/uWSGI preforking) the first call finds
the parent's loop thread missing, starts a fresh portal and client, re-watches the apps and
re-registers the registrations that were active in the parent, so they stay alive even if the parent
exits (daemonising). Those inherited registrations still belong to the parent too: closing the
child's client orphans them (stops its heartbeat) instead of cancelling them for everyone.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import AsyncIterator, Generator, Sequence
from typing import Any

from discoverd.client._portal import Portal
from discoverd.client.async_client import AsyncClient
from discoverd.client.caller import AsyncCaller, CallResult
from discoverd.client.config import ClientConfig
from discoverd.client.registration import Registration, RegState
from discoverd.errors import DiscoverdError
from discoverd.model import UP, Instance

_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SyncRegistration:
    """A :class:`Registration` driven from synchronous code."""

    def __init__(self, client: Client, reg: Registration, spec: dict[str, Any]) -> None:
        self._client = client
        self._reg = reg
        self._spec = spec
        self.inherited = False
        """True in a forked child for a registration made by the parent (see the module docstring)."""

    def __repr__(self) -> str:
        return f"<Sync{self._reg!r}>"

    @property
    def instance(self) -> Instance:
        return self._reg.instance

    @property
    def state(self) -> RegState:
        return self._reg.state

    def close(self) -> None:
        """Stop renewing and cancel on the registry. Idempotent."""
        self._client._ensure()
        self._client._portal.call(self._reg.close())

    def orphan(self) -> None:
        """Stop renewing without cancelling."""
        self._client._ensure()
        self._client._portal.call(_sync(self._reg.orphan))

    def set(self, *, status: int | None = None, metadata: dict[str, str] | None = None) -> None:
        self._client._ensure()
        self._client._portal.call(self._reg.set(status=status, metadata=metadata))


async def _sync(fn: Any) -> Any:
    return fn()


class Client:
    """Synchronous discovery client. Blocks in ``__init__`` until a node answered (bounded by
    ``config.start_timeout``; raises :class:`~discoverd.errors.Unavailable`). Close with ``close()``
    or a ``with`` block."""

    def __init__(
        self,
        nodes: Sequence[str] | str | None = None,
        *,
        env: str | None = None,
        zone: str | None = None,
        region: str | None = None,
        hostname: str | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self._kwargs: dict[str, Any] = {
            "nodes": nodes,
            "env": env,
            "zone": zone,
            "region": region,
            "hostname": hostname,
            "config": config,
        }
        self._lock = threading.Lock()
        self._forked = False
        self._closed = False
        self._watched: set[str] = set()
        self._regs: list[SyncRegistration] = []
        self._portal, self._async = self._boot()
        _clients.add(self)

    def __repr__(self) -> str:
        return f"<Client {self._async!r}>"

    def _boot(self) -> tuple[Portal, AsyncClient]:
        portal = Portal()
        try:
            client = portal.call(self._make())
        except BaseException:
            portal.stop()
            raise
        return portal, client

    async def _make(self) -> AsyncClient:
        client = AsyncClient(**self._kwargs)
        await client.start()
        return client

    def _ensure(self) -> None:
        """Restart on a fresh portal after a fork (see the module docstring)."""
        if self._closed:
            raise DiscoverdError("client is closed")
        if not self._forked:
            return
        with self._lock:
            if not self._forked:
                return
            self._forked = False
            self._portal, self._async = self._boot()
            for appid in self._watched:
                self._async._watch_app(appid)
            for sreg in self._regs:
                if sreg._reg.state is RegState.ACTIVE:
                    sreg._reg = self._portal.call(self._async.register(**sreg._spec))
                    sreg.inherited = True

    @property
    def env(self) -> str:
        return self._async.env

    @property
    def hostname(self) -> str:
        return self._async.hostname

    def register(
        self,
        appid: str,
        addrs: Sequence[str],
        *,
        metadata: dict[str, str] | None = None,
        status: int = UP,
        version: str = "",
        hostname: str | None = None,
    ) -> SyncRegistration:
        """See :meth:`AsyncClient.register`."""
        self._ensure()
        spec: dict[str, Any] = {
            "appid": appid,
            "addrs": list(addrs),
            "metadata": metadata,
            "status": status,
            "version": version,
            "hostname": hostname,
        }
        reg = self._portal.call(self._async.register(**spec))
        sreg = SyncRegistration(self, reg, spec)
        self._regs.append(sreg)
        return sreg

    def fetch(self, appid: str, *, zone: str | None = None, status: int = UP) -> list[Instance]:
        """See :meth:`AsyncClient.fetch`."""
        self._ensure()
        if status == UP:
            self._watched.add(appid)
        return self._portal.call(self._async.fetch(appid, zone=zone, status=status))

    def watch(self, appid: str, *, timeout: float | None = None) -> Generator[list[Instance], None, None]:
        """Yield the instance list of ``appid`` now and on every change (see :meth:`AsyncClient.watch`).

        ``timeout`` bounds each wait (``TimeoutError``); closing the generator stops the watch.
        """
        self._ensure()
        self._watched.add(appid)
        portal = self._portal
        agen: AsyncIterator[list[Instance]] = self._async.watch(appid)
        try:
            while True:
                try:
                    yield portal.call(_anext(agen), timeout)
                except StopAsyncIteration:
                    return
        finally:
            if portal.alive:
                portal.call(_aclose(agen))

    def caller(self, **kw: Any) -> Caller:
        """The synchronous twin of :meth:`AsyncClient.caller` (same core, run on the portal)."""
        self._ensure()
        return Caller(self, self._portal.call(_sync(lambda: self._async.caller(**kw))))

    def close(self) -> None:
        """Cancel active registrations, stop the client and its thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _clients.discard(self)
        if self._forked:
            return  # the parent's loop thread does not exist in this process
        try:
            for sreg in self._regs:
                if sreg.inherited:
                    self._portal.call(_sync(sreg._reg.orphan))
            self._portal.call(self._async.aclose(), 30)
        finally:
            self._portal.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Caller:
    """Synchronous :class:`~discoverd.client.caller.AsyncCaller`: the same calls, blocking."""

    def __init__(self, client: Client, caller: AsyncCaller) -> None:
        self._client = client
        self._caller = caller

    def __repr__(self) -> str:
        return f"<Sync{self._caller!r}>"

    def request(self, method: str, appid: str, path: str, **kw: Any) -> CallResult:
        return self._client._portal.call(self._caller.request(method, appid, path, **kw))

    def get(self, appid: str, path: str, **kw: Any) -> CallResult:
        return self.request("GET", appid, path, **kw)

    def post(self, appid: str, path: str, **kw: Any) -> CallResult:
        return self.request("POST", appid, path, **kw)

    def put(self, appid: str, path: str, **kw: Any) -> CallResult:
        return self.request("PUT", appid, path, **kw)

    def delete(self, appid: str, path: str, **kw: Any) -> CallResult:
        return self.request("DELETE", appid, path, **kw)

    def head(self, appid: str, path: str, **kw: Any) -> CallResult:
        return self.request("HEAD", appid, path, **kw)


async def _anext(agen: AsyncIterator[list[Instance]]) -> list[Instance]:
    return await agen.__anext__()


async def _aclose(agen: AsyncIterator[list[Instance]]) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        await close()
