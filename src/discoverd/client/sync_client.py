"""The synchronous client: the same API as :class:`AsyncClient`, for threads and WSGI apps.

A facade, not a second implementation: one :class:`AsyncClient` runs on a private loop in a daemon
thread (:class:`~discoverd.client.portal.Portal`), so heartbeats and watches keep running between
calls. Thread-safe. Fork-safe: in a child process (gunicorn/uWSGI preforking) the first call finds
the parent's loop thread missing, starts a fresh portal and client, re-watches the apps and
re-registers the registrations that were active in the parent, so they stay alive even if the parent
exits (daemonising). Those inherited registrations still belong to the parent too: closing the
child's client orphans them (stops its heartbeat) instead of cancelling them for everyone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from discoverd.calling.caller import AsyncCaller, CallResult
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.portal import Portal
from discoverd.client.registration import AsyncRegistration, RegState
from discoverd.deprecation import Moved, Target
from discoverd.errors import DiscoverdError
from discoverd.model import UP, Instance

T = TypeVar("T")
Work = Callable[[AsyncClient], Coroutine[Any, Any, T]]
"""A coroutine function run on a :class:`Client`'s loop thread with its :class:`AsyncClient`."""


class MakesCallers(Protocol):
    """What a synchronous :class:`Caller` is made over: an :class:`AsyncClient` or a registry."""

    def caller(self, **options: Any) -> AsyncCaller: ...


M = TypeVar("M", bound=MakesCallers)
M_co = TypeVar("M_co", bound=MakesCallers, covariant=True)


class RunsOnPortal(Protocol[M_co]):
    """A synchronous facade that runs coroutine functions with its async object on its loop thread
    (:meth:`Client.run`, :meth:`~discoverd.client.sync_registry.SyncRegistry.run`)."""

    def run(self, work: Callable[[M_co], Coroutine[Any, Any, T]], timeout: float | None = None) -> T: ...


class _Forks:
    """How many times this process is a fork child of the process that imported this module."""

    count = 0

    @classmethod
    def after_fork_in_child(cls) -> None:
        cls.count += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Forks.after_fork_in_child)


def fork_generation() -> int:
    """How many forks separate this process from the one that imported this module (0 in it): a
    synchronous facade made in generation ``g`` runs in a fork child once this differs from ``g``."""
    return _Forks.count


@dataclass(slots=True)
class _Lease:
    """A registration made through a :class:`Client`: how to redo it in a fork child, and the current one."""

    spec: dict[str, Any]
    reg: AsyncRegistration
    inherited: bool = False


async def _sync(fn: Callable[[], T]) -> T:
    return fn()


class Registration:
    """A :class:`AsyncRegistration` driven from synchronous code."""

    def __init__(self, client: Client, lease: _Lease) -> None:
        self._client = client
        self._lease = lease

    def __repr__(self) -> str:
        return f"<Sync{self._lease.reg!r}>"

    @property
    def inherited(self) -> bool:
        """True in a forked child for a registration made by the parent (see the module docstring)."""
        return self._lease.inherited

    @property
    def instance(self) -> Instance:
        return self._lease.reg.instance

    @property
    def state(self) -> RegState:
        return self._lease.reg.state

    def close(self) -> None:
        """Stop renewing and cancel on the registry. Idempotent."""
        self._client.run(lambda _: self._lease.reg.close())

    def orphan(self) -> None:
        """Stop renewing without cancelling."""
        self._client.run(lambda _: _sync(self._lease.reg.orphan))

    def set(self, *, status: int | None = None, metadata: dict[str, str] | None = None) -> None:
        """See :meth:`AsyncRegistration.set`."""
        self._client.run(lambda _: self._lease.reg.set(status=status, metadata=metadata))


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
        self._generation = fork_generation()
        self._closed = False
        self._watched: set[str] = set()
        self._leases: list[_Lease] = []
        self._portal, self._async = self._boot()

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

    @property
    def _forked(self) -> bool:
        """True in a fork child until the first call restarts the client there."""
        return self._generation != fork_generation()

    def _ensure(self) -> None:
        """Restart on a fresh portal after a fork (see the module docstring)."""
        if self._closed:
            raise DiscoverdError("client is closed")
        if not self._forked:
            return
        with self._lock:
            if not self._forked:
                return
            self._generation = fork_generation()
            self._portal, self._async = self._boot()
            for appid in self._watched:
                self._async.track(appid)
            for lease in self._leases:
                if lease.reg.state is RegState.ACTIVE:
                    lease.reg = self._portal.call(self._async.register(**lease.spec))
                    lease.inherited = True

    def run(self, work: Work[T], timeout: float | None = None) -> T:
        """Run ``work(async_client)`` on the client's loop thread and block for its result.

        The building block of the synchronous wrappers: ``work`` receives the running
        :class:`AsyncClient` (after a fork, the child's fresh one) and must not block the loop.
        Raises what ``work`` raises, :class:`TimeoutError` after ``timeout`` seconds, and
        :class:`DiscoverdError` once the client is closed.
        """
        self._ensure()
        return self._portal.call(work(self._async), timeout)

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
    ) -> Registration:
        """See :meth:`AsyncClient.register`."""
        spec: dict[str, Any] = {
            "appid": appid,
            "addrs": list(addrs),
            "metadata": metadata,
            "status": status,
            "version": version,
            "hostname": hostname,
        }
        lease = _Lease(spec, self.run(lambda client: client.register(**spec)))
        self._leases.append(lease)
        return Registration(self, lease)

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

    def caller(self, **kw: Any) -> Caller[AsyncClient]:
        """The synchronous twin of :meth:`AsyncClient.caller` (same core, run on the portal)."""
        return Caller(self, kw)

    def close(self) -> None:
        """Cancel active registrations, stop the client and its thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._forked:
            return  # the parent's loop thread does not exist in this process
        try:
            for lease in self._leases:
                if lease.inherited:
                    self._portal.call(_sync(lease.reg.orphan))
            self._portal.call(self._async.aclose(), 30)
        finally:
            self._portal.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Caller(Generic[M]):
    """Synchronous :class:`~discoverd.calling.caller.AsyncCaller`: the same calls, blocking.

    Made by :meth:`Client.caller` or :meth:`~discoverd.client.sync_registry.SyncRegistry.caller`
    (``owner``); ``options`` are those of the async object's ``caller()``; they are checked at once
    (``ConfigError``). The async caller lives on the owner's loop and is closed with it. In a fork
    child the caller is made again over the child's client or registry on first use. Thread-safe.
    """

    def __init__(self, owner: RunsOnPortal[M], options: dict[str, Any]) -> None:
        self._owner = owner
        self._options = options
        self._bound: tuple[M, AsyncCaller] | None = None
        owner.run(self._caller)

    def __repr__(self) -> str:
        inner = self._bound[1] if self._bound is not None else None
        return f"<Sync{inner!r}>"

    async def _caller(self, source: M) -> AsyncCaller:
        """The async caller over ``source`` (made again when ``source`` changed after a fork)."""
        if self._bound is None or self._bound[0] is not source:
            self._bound = (source, source.caller(**self._options))
        return self._bound[1]

    def request(self, method: str, appid: str, path: str, **kw: Any) -> CallResult:
        """See :meth:`AsyncCaller.request`."""

        async def call(source: M) -> CallResult:
            caller = await self._caller(source)
            return await caller.request(method, appid, path, **kw)

        return self._owner.run(call)

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


_MOVED = Moved(__name__, {"SyncRegistration": Target(__name__, "Registration", "discoverd.Registration")})


def __getattr__(name: str) -> object:
    """``SyncRegistration`` is the former name of :class:`Registration` (deprecated)."""
    return _MOVED.resolve(name)
