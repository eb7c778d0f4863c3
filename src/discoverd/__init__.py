"""discoverd: service registration, discovery and client-side load balancing.

The names below are the public API; everything else is importable from its module but may change.

* **Clients**: :class:`AsyncClient` / :class:`Client` (a discoverd or bilibili/discovery cluster),
  their :class:`ClientConfig`, and the registrations they return, :class:`AsyncRegistration` /
  :class:`Registration`.
* **Registry interface** (go-micro style): :class:`Registry`, :func:`open_registry` (``memory://``,
  ``discoverd://``, ``redis://``, ``gossip://``), :class:`SyncRegistry` for synchronous code and
  :class:`CachedRegistry` over any of them.
* **Model**: :class:`Instance`, its :class:`Status`, and the watch :class:`Event` with its
  :class:`Action`.
* **Calling**: :class:`AsyncCaller` / :class:`Caller`, :class:`CalleeConfig`, :class:`CallResult`,
  :class:`Balancer` and :func:`make_balancer`.
* **Errors**: :class:`DiscoverdError` and the ones a caller handles: :class:`ConfigError`,
  :class:`NotFound`, :class:`Conflict`, :class:`Unavailable`, :class:`NoInstance`,
  :class:`CallFailed`, :class:`RegistryClosed`.

``import discoverd`` imports none of these: each is imported on first use, so the import costs a
few milliseconds and loads no third-party library. ``__version__`` comes from the package metadata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from discoverd.deprecation import Moved, Target

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports each name on first use
    from discoverd.backends.base import Registry, RegistryClosed
    from discoverd.backends.cache import CachedRegistry
    from discoverd.calling.callee import CalleeConfig, CallFailed, CallResult
    from discoverd.calling.caller import AsyncCaller
    from discoverd.client.async_client import AsyncClient
    from discoverd.client.config import ClientConfig
    from discoverd.client.open import open_registry
    from discoverd.client.registration import AsyncRegistration
    from discoverd.client.sync_client import Caller, Client, Registration
    from discoverd.client.sync_registry import SyncRegistry
    from discoverd.core.balancing import Balancer, NoInstance, make_balancer
    from discoverd.errors import ConfigError, Conflict, DiscoverdError, NotFound, Unavailable
    from discoverd.model import Action, Event, Instance, Status

    __version__: str

#: Public name → the module that defines it.
_PUBLIC: Final = {
    "AsyncClient": "discoverd.client.async_client",
    "Client": "discoverd.client.sync_client",
    "ClientConfig": "discoverd.client.config",
    "AsyncRegistration": "discoverd.client.registration",
    "Registration": "discoverd.client.sync_client",
    "Registry": "discoverd.backends.base",
    "RegistryClosed": "discoverd.backends.base",
    "CachedRegistry": "discoverd.backends.cache",
    "SyncRegistry": "discoverd.client.sync_registry",
    "open_registry": "discoverd.client.open",
    "Instance": "discoverd.model",
    "Status": "discoverd.model",
    "Event": "discoverd.model",
    "Action": "discoverd.model",
    "AsyncCaller": "discoverd.calling.caller",
    "Caller": "discoverd.client.sync_client",
    "CalleeConfig": "discoverd.calling.callee",
    "CallResult": "discoverd.calling.callee",
    "CallFailed": "discoverd.calling.callee",
    "Balancer": "discoverd.core.balancing",
    "NoInstance": "discoverd.core.balancing",
    "make_balancer": "discoverd.core.balancing",
    "DiscoverdError": "discoverd.errors",
    "ConfigError": "discoverd.errors",
    "NotFound": "discoverd.errors",
    "Conflict": "discoverd.errors",
    "Unavailable": "discoverd.errors",
}


#: Names the package exported before its public API was narrowed: they work, with a warning.
_DEPRECATED: Final = Moved(
    "discoverd",
    {
        name: Target(module, attr, instead)
        for name, module, attr, instead in [
            ("ALL", "discoverd.model", "Status.ALL", "discoverd.Status.ALL"),
            ("UP", "discoverd.model", "Status.UP", "discoverd.Status.UP"),
            ("WAITING", "discoverd.model", "Status.WAITING", "discoverd.Status.WAITING"),
            ("INFRA_APPID", "discoverd.model", "INFRA_APPID", "discoverd.model.INFRA_APPID"),
            ("SyncRegistration", "discoverd.client.sync_client", "Registration", "discoverd.Registration"),
            ("Route", "discoverd.calling.callee", "CallRoute", "discoverd.calling.callee.CallRoute"),
            ("RegState", "discoverd.client.registration", "RegState", "discoverd.client.registration"),
            ("Backoff", "discoverd.core.backoff", "Backoff", "discoverd.core.backoff.Backoff"),
            ("Jitter", "discoverd.core.backoff", "Jitter", "discoverd.core.backoff.Jitter"),
            ("CacheStatus", "discoverd.core.cache", "CacheStatus", "discoverd.core.cache.CacheStatus"),
            ("Ejector", "discoverd.core.ejection", "Ejector", "discoverd.core.ejection.Ejector"),
            ("MemoryRegistry", "discoverd.backends.memory", "MemoryRegistry", "open_registry('memory://')"),
            ("RedisRegistry", "discoverd.backends.redis", "RedisRegistry", "open_registry('redis://…')"),
            (
                "GossipRegistry",
                "discoverd.backends.gossip.registry",
                "GossipRegistry",
                "open_registry('gossip://…')",
            ),
            (
                "DiscoverdRegistry",
                "discoverd.client.registry",
                "DiscoverdRegistry",
                "open_registry('discoverd://…')",
            ),
            (
                "MemberlistNode",
                "discoverd.backends.gossip.node",
                "MemberlistNode",
                "discoverd.backends.gossip.node",
            ),
            (
                "GossipConfig",
                "discoverd.core.gossip.config",
                "GossipConfig",
                "discoverd.core.gossip.config.GossipConfig",
            ),
            (
                "DiscoverdTransport",
                "discoverd.integrations.httpx",
                "DiscoverdTransport",
                "discoverd.integrations.httpx",
            ),
            ("ServerConfig", "discoverd.config", "ServerConfig", "discoverd.config.ServerConfig"),
            ("load_config", "discoverd.config", "load_config", "discoverd.config.load_config"),
            ("WatchOverflow", "discoverd.backends.base", "WatchOverflow", "discoverd.backends.base"),
            ("BadRequest", "discoverd.errors", "BadRequest", "discoverd.errors.BadRequest"),
            ("NotModified", "discoverd.errors", "NotModified", "discoverd.errors.NotModified"),
            ("ProtocolError", "discoverd.errors", "ProtocolError", "discoverd.errors.ProtocolError"),
            ("ServerError", "discoverd.errors", "ServerError", "discoverd.errors.ServerError"),
            ("GossipError", "discoverd.errors", "GossipError", "discoverd.errors.GossipError"),
            (
                "GossipDecodeError",
                "discoverd.errors",
                "GossipDecodeError",
                "discoverd.errors.GossipDecodeError",
            ),
            ("GossipLabelError", "discoverd.errors", "GossipLabelError", "discoverd.errors.GossipLabelError"),
        ]
    },
)

__all__ = [
    "Action",
    "AsyncCaller",
    "AsyncClient",
    "AsyncRegistration",
    "Balancer",
    "CachedRegistry",
    "CallFailed",
    "CallResult",
    "CalleeConfig",
    "Caller",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "DiscoverdError",
    "Event",
    "Instance",
    "NoInstance",
    "NotFound",
    "Registration",
    "Registry",
    "RegistryClosed",
    "Status",
    "SyncRegistry",
    "Unavailable",
    "__version__",
    "make_balancer",
    "open_registry",
]


def __getattr__(name: str) -> object:
    """Import a public name on first use (then it is a plain module attribute); resolve an old name
    with a :class:`DeprecationWarning`; read ``__version__`` from the package metadata."""
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import version

        globals()[name] = version("discoverd")
        return globals()[name]
    if name in _DEPRECATED:
        return _DEPRECATED.resolve(name)
    raise AttributeError(f"module 'discoverd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"__doc__", "__file__", "__name__", "__path__"})
