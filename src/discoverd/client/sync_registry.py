"""The synchronous registry: any backend of :func:`~discoverd.client.open.open_registry`, for threads.

    with SyncRegistry("redis://127.0.0.1:6379/15") as registry:
        caller = registry.caller()
        print(caller.get("pay", "/v1/orders/42").json())

A facade, not a second implementation, built like :class:`~discoverd.client.sync_client.Client`: one
:class:`~discoverd.backends.base.Registry` runs on a private loop in a daemon thread
(:class:`~discoverd.client.portal.Portal`), so its background work (watches, Redis heartbeats, gossip)
keeps running between calls. Thread-safe.

Fork-safe for reading and calling: in a fork child the first call opens the registry again from its
URL on a fresh portal (the parent's loop thread does not exist there), and callers are made again over
it. Registrations made in the parent stay the parent's (the parent keeps them alive); the child
registers its own, and closing the child's facade does not touch the parent's.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any, TypeVar

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.client.open import open_registry
from discoverd.client.portal import Portal
from discoverd.client.sync_client import Caller, fork_generation
from discoverd.model import Event, Instance

T = TypeVar("T")


async def _open(url: str) -> Registry:
    return open_registry(url)  # made on the portal's loop: some backends bind to the running loop


async def _watch(registry: Registry, appid: str | None) -> AsyncIterator[Event]:
    return registry.watch(appid)  # registered at once, on the loop that delivers its events


class SyncRegistry:
    """A registry of any backend (``url`` as for :func:`~discoverd.client.open.open_registry`, default
    ``memory://``) driven from synchronous code. Raises :class:`~discoverd.errors.ConfigError` for a
    bad URL. Close with :meth:`close` or a ``with`` block; afterwards calls raise
    :class:`~discoverd.backends.base.RegistryClosed`."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._generation = fork_generation()
        self._closed = False
        self._portal, self._async = self._boot()

    def __repr__(self) -> str:
        return f"<SyncRegistry {self._async!r}>"

    def _boot(self) -> tuple[Portal, Registry]:
        portal = Portal("discoverd-registry")
        try:
            registry = portal.call(_open(self.url))
        except BaseException:
            portal.stop()
            raise
        return portal, registry

    @property
    def _forked(self) -> bool:
        return self._generation != fork_generation()

    def _ensure(self) -> None:
        """Refuse once closed; open the registry again on a fresh portal in a fork child."""
        if self._closed:
            raise RegistryClosed("registry is closed")
        if not self._forked:
            return
        with self._lock:
            if self._forked:
                self._generation = fork_generation()
                self._portal, self._async = self._boot()

    def run(self, work: Callable[[Registry], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        """Run ``work(registry)`` on the loop thread and block for its result (the building block of
        the other methods; ``work`` must not block the loop). Raises what ``work`` raises, and
        :class:`TimeoutError` after ``timeout`` seconds."""
        self._ensure()
        return self._portal.call(work(self._async), timeout)

    def register(self, instance: Instance, ttl: float | None = None) -> None:
        """See :meth:`Registry.register <discoverd.backends.base.Registry.register>`."""
        self.run(lambda registry: registry.register(instance, ttl))

    def deregister(self, instance: Instance) -> None:
        """See :meth:`Registry.deregister <discoverd.backends.base.Registry.deregister>`."""
        self.run(lambda registry: registry.deregister(instance))

    def get_service(self, appid: str) -> list[Instance]:
        """See :meth:`Registry.get_service <discoverd.backends.base.Registry.get_service>`."""
        return self.run(lambda registry: registry.get_service(appid))

    def list_services(self) -> list[str]:
        """See :meth:`Registry.list_services <discoverd.backends.base.Registry.list_services>`."""
        return self.run(lambda registry: registry.list_services())

    def watch(
        self, appid: str | None = None, *, timeout: float | None = None
    ) -> Generator[Event, None, None]:
        """The registry's events of ``appid`` (or of every app) from the call on (the watch is opened
        here, not at the first ``next``); ``timeout`` bounds each wait (``TimeoutError``); closing the
        generator closes the watch."""
        it = self.run(lambda registry: _watch(registry, appid))
        return _events(self._portal, it, timeout)

    def caller(self, **options: Any) -> Caller[Registry]:
        """A synchronous caller over this registry (:meth:`Registry.caller
        <discoverd.backends.base.Registry.caller>` on the loop thread, closed with the registry)."""
        return Caller(self, options)

    def close(self) -> None:
        """Close the registry (its callers, watches, and — per backend — its registrations) and stop
        the loop thread. Idempotent; in a fork child it only marks this facade closed."""
        if self._closed:
            return
        self._closed = True
        if self._forked:
            return
        try:
            self._portal.call(self._async.aclose(), 30)
        finally:
            self._portal.stop()

    def __enter__(self) -> SyncRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _events(portal: Portal, it: AsyncIterator[Event], timeout: float | None) -> Generator[Event, None, None]:
    try:
        while True:
            try:
                yield portal.call(_anext(it), timeout)
            except StopAsyncIteration:
                return
    finally:
        if portal.alive:
            portal.call(_aclose(it))


async def _anext(it: AsyncIterator[Event]) -> Event:
    return await anext(it)


async def _aclose(it: AsyncIterator[Event]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


__all__ = ["SyncRegistry"]
