"""The callers made over one registry, and the watched views they share.

Every :class:`~discoverd.backends.base.Registry` holds one :class:`CallerSet`: ``registry.caller()``
adds a caller to it, and the registry's ``aclose()`` closes it, so callers (and their connections and
watches) live exactly as long as the registry that made them, as ``client.caller()`` callers live as
long as their client.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from discoverd.calling.caller import AsyncCaller
from discoverd.calling.source import InstanceSource, RegistrySource, WatchedRegistry
from discoverd.errors import DiscoverdError


def node_name() -> str:
    """This host's name as callers announce it in ``X-From-Node``: ``$HOSTNAME``, else the OS's."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


class CallerSet:
    """The callers of one registry and one :class:`RegistrySource` per zone they asked for.

    Task-safe in one event loop. :meth:`aclose` (idempotent) closes the callers, then the sources;
    afterwards :meth:`add` raises :class:`~discoverd.errors.DiscoverdError`.
    """

    def __init__(self, registry: WatchedRegistry) -> None:
        self._registry = registry
        self._sources: dict[str, RegistrySource] = {}
        self._callers: list[AsyncCaller] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<CallerSet callers={len(self._callers)} zones={sorted(self._sources)}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def shared_source(self, zone: str) -> RegistrySource:
        """The registry's watched view for consumers in ``zone`` (made on first use, then shared)."""
        source = self._sources.get(zone)
        if source is None:
            source = self._sources[zone] = RegistrySource(self._registry, zone=zone)
        return source

    def add(self, source: InstanceSource, options: dict[str, Any]) -> AsyncCaller:
        """A new caller over ``source`` with ``options`` (:class:`AsyncCaller`'s keyword arguments),
        closed with this set. Without ``zone_affinity`` in ``options``, the caller prefers the
        source's zone when it has one; ``from_node`` defaults to :func:`node_name`."""
        if self._closed:
            raise DiscoverdError("the registry is closed")
        options.setdefault("zone_affinity", bool(source.zone))
        options.setdefault("from_node", node_name())
        caller = AsyncCaller(source, **options)
        self._callers.append(caller)
        return caller

    async def aclose(self) -> None:
        """Close every caller, then every shared source. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for caller in self._callers:
            await caller.aclose()
        for source in self._sources.values():
            await source.aclose()


__all__ = ["CallerSet", "node_name"]
