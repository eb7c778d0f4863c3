"""discoverd: service registration, discovery and client-side load balancing.

A registry server wire-compatible with bilibili/discovery, and the pieces to use it.
"""

from discoverd.config import ServerConfig, load_config
from discoverd.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    DiscoverdError,
    NotFound,
    NotModified,
    ProtocolError,
    ServerError,
    Unavailable,
)
from discoverd.model import ALL, INFRA_APPID, UP, WAITING, Instance, Status

__version__ = "0.1.0"

__all__ = [
    "ALL",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DiscoverdError",
    "INFRA_APPID",
    "Instance",
    "NotFound",
    "NotModified",
    "ProtocolError",
    "ServerConfig",
    "ServerError",
    "Status",
    "UP",
    "Unavailable",
    "WAITING",
    "__version__",
    "load_config",
]
