"""The registry interface every backend implements (go-micro ``registry.Registry`` shape).

Contract (checked by ``tests/backends/test_contract.py`` against every backend):

* ``register(instance, ttl=None)`` — make ``instance`` visible under ``(appid, hostname)``; registering the
  same key again replaces it. With ``ttl`` (seconds) the registration lapses unless registered again
  within ``ttl``; backends with their own heartbeat (discoverd) keep it alive until ``deregister``.
* ``deregister(instance)`` — remove it (by ``appid`` + ``hostname``); unknown instances are ignored.
* ``get_service(appid)`` — the current instances of ``appid`` (copies; ``[]`` when none).
* ``list_services()`` — sorted appids with at least one instance.
* ``watch(appid=None)`` — an async iterator of :class:`~discoverd.model.Event` for one app or for all;
  it yields changes that happen after the iterator was created (``watch`` is a plain method that
  registers the watcher at once, not a lazy async generator that would miss early changes);
  closing it (``aclose()`` or leaving the ``async for``) stops it.
* ``aclose()`` — idempotent; afterwards every method raises :class:`RegistryClosed`.
* ``caller(**options)`` — a load-balancing :class:`~discoverd.calling.caller.AsyncCaller` over the
  registry's instances (a watched local view: :class:`~discoverd.calling.source.RegistrySource`), closed
  with the registry. Not abstract: a backend gets it by calling ``super().__init__()`` and awaiting
  :meth:`Registry.close_callers` in its ``aclose()``.

All methods are coroutine functions and task-safe within one event loop.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, Protocol, Self

from discoverd.calling.caller import AsyncCaller
from discoverd.calling.callers import CallerSet
from discoverd.calling.source import InstanceSource
from discoverd.errors import DiscoverdError
from discoverd.model import Event, Instance


class RegistryClosed(DiscoverdError):
    """The registry was closed with ``aclose()``."""


class WatchOverflow(DiscoverdError):
    """A watcher fell more than its queue bound behind; events after the queued ones were lost.
    Re-read with ``get_service`` and watch again."""


class Watcher(Protocol):
    """What :meth:`Registry.watch` returns: an async iterator of events that must be closed.

    ``async for`` yields each :class:`~discoverd.model.Event`; :meth:`aclose` stops it (idempotent).
    """

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...

    async def aclose(self) -> None:
        """Stop receiving events; a pending ``__anext__`` ends with ``StopAsyncIteration``."""
        ...


class Registry(abc.ABC):
    """A service registry backend. See the module docstring for the contract."""

    def __init__(self) -> None:
        self._callers = CallerSet(self)

    @abc.abstractmethod
    async def register(self, instance: Instance, ttl: float | None = None) -> None: ...

    @abc.abstractmethod
    async def deregister(self, instance: Instance) -> None: ...

    @abc.abstractmethod
    async def get_service(self, appid: str) -> list[Instance]: ...

    @abc.abstractmethod
    async def list_services(self) -> list[str]: ...

    @abc.abstractmethod
    def watch(self, appid: str | None = None) -> Watcher: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    def caller(self, *, zone: str | None = None, **options: Any) -> AsyncCaller:
        """A load-balancing caller over this registry, closed with it (or earlier by its ``aclose()``).

        ``options`` are :class:`~discoverd.calling.caller.AsyncCaller`'s (``balancer``, ``callees``,
        ``default``, ``route``, ``ejector``, ``from_app``, ``from_node``, ``tls_ca``, ``zone_affinity``).
        ``zone`` is the consumer's zone: instances of that zone are preferred while it has candidates
        (default: the backend's own notion of it, if it has one — else no zone preference). Each app is
        read once, then followed through :meth:`watch`; the last list is served while the backend is
        down. Synchronous; raises :class:`RegistryClosed` once the registry is closed.
        """
        if self._callers.closed:
            raise RegistryClosed("registry is closed")
        return self._callers.add(self.instance_source(zone), options)

    def instance_source(self, zone: str | None = None) -> InstanceSource:
        """Where this registry's callers read instances: by default a
        :class:`~discoverd.calling.source.RegistrySource` (``zone`` or ``""``), shared by every caller
        asking for the same zone. A backend that keeps such a view itself may return its own."""
        return self._callers.shared_source(zone or "")

    async def close_callers(self) -> None:
        """Close every caller made by :meth:`caller` and the views they read. Idempotent; a backend's
        ``aclose()`` awaits it."""
        await self._callers.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
