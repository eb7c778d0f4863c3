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

All methods are coroutine functions and task-safe within one event loop.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Self

from discoverd.errors import DiscoverdError
from discoverd.model import Event, Instance


class RegistryClosed(DiscoverdError):
    """The registry was closed with ``aclose()``."""


class WatchOverflow(DiscoverdError):
    """A watcher fell more than its queue bound behind; events after the queued ones were lost.
    Re-read with ``get_service`` and watch again."""


class Registry(abc.ABC):
    """A service registry backend. See the module docstring for the contract."""

    @abc.abstractmethod
    async def register(self, instance: Instance, ttl: float | None = None) -> None: ...

    @abc.abstractmethod
    async def deregister(self, instance: Instance) -> None: ...

    @abc.abstractmethod
    async def get_service(self, appid: str) -> list[Instance]: ...

    @abc.abstractmethod
    async def list_services(self) -> list[str]: ...

    @abc.abstractmethod
    def watch(self, appid: str | None = None) -> AsyncIterator[Event]: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
