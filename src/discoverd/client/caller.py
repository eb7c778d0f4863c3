"""Former home of the load-balancing caller; it lives in :mod:`discoverd.calling.caller` now.

Re-exported unchanged so that imports of ``discoverd.client.caller`` keep working.
"""

from discoverd.calling.caller import (
    IDEMPOTENT,
    RELAYED_HEADERS,
    RETRY_STATUSES,
    AsyncCaller,
    CalleeConfig,
    CallFailed,
    CallResult,
    Route,
    RouteHook,
    relay_headers,
)

__all__ = [
    "IDEMPOTENT",
    "RELAYED_HEADERS",
    "RETRY_STATUSES",
    "AsyncCaller",
    "CallFailed",
    "CallResult",
    "CalleeConfig",
    "Route",
    "RouteHook",
    "relay_headers",
]
