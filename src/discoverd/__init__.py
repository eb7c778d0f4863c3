"""discoverd: service registration, discovery and client-side load balancing.

A registry server wire-compatible with bilibili/discovery, a client SDK (async and sync), a
go-micro-style registry interface with interchangeable backends, and a registry cache.
"""

from discoverd.backends.base import Registry, RegistryClosed, WatchOverflow
from discoverd.backends.cache import CachedRegistry
from discoverd.backends.gossip.node import MemberlistNode
from discoverd.backends.gossip.registry import GossipRegistry
from discoverd.backends.memory import MemoryRegistry
from discoverd.backends.redis import RedisRegistry
from discoverd.calling.caller import AsyncCaller, CalleeConfig, CallFailed, CallResult, Route
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.open import open_registry
from discoverd.client.registration import Registration, RegState
from discoverd.client.registry import DiscoverdRegistry
from discoverd.client.sync_client import Caller, Client, SyncRegistration
from discoverd.client.sync_registry import SyncRegistry
from discoverd.config import ServerConfig, load_config
from discoverd.core.backoff import Backoff, Jitter
from discoverd.core.balancing import Balancer, NoInstance, make_balancer
from discoverd.core.cache import CacheStatus
from discoverd.core.ejection import Ejector
from discoverd.core.gossip.config import GossipConfig
from discoverd.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    DiscoverdError,
    GossipDecodeError,
    GossipError,
    GossipLabelError,
    NotFound,
    NotModified,
    ProtocolError,
    ServerError,
    Unavailable,
)
from discoverd.model import ALL, INFRA_APPID, UP, WAITING, Action, Event, Instance, Status

__version__ = "0.1.0"

__all__ = [
    "ALL",
    "Action",
    "AsyncCaller",
    "AsyncClient",
    "Backoff",
    "BadRequest",
    "Balancer",
    "CacheStatus",
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
    "DiscoverdRegistry",
    "DiscoverdTransport",
    "Ejector",
    "Event",
    "GossipConfig",
    "GossipDecodeError",
    "GossipError",
    "GossipLabelError",
    "GossipRegistry",
    "INFRA_APPID",
    "Instance",
    "Jitter",
    "MemberlistNode",
    "MemoryRegistry",
    "NoInstance",
    "NotFound",
    "NotModified",
    "ProtocolError",
    "RedisRegistry",
    "RegState",
    "Registration",
    "Registry",
    "RegistryClosed",
    "Route",
    "ServerConfig",
    "ServerError",
    "Status",
    "SyncRegistration",
    "SyncRegistry",
    "UP",
    "Unavailable",
    "WAITING",
    "WatchOverflow",
    "__version__",
    "load_config",
    "make_balancer",
    "open_registry",
]


def __getattr__(name: str) -> object:
    """``DiscoverdTransport`` needs the optional ``httpx`` package: imported on first use."""
    if name == "DiscoverdTransport":
        from discoverd.calling.httpx_transport import DiscoverdTransport

        return DiscoverdTransport
    raise AttributeError(f"module 'discoverd' has no attribute {name!r}")
