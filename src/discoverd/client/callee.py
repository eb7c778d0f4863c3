"""Former home of the caller's data types; they live in :mod:`discoverd.calling.callee` now.

Re-exported unchanged so that imports of ``discoverd.client.callee`` keep working.
"""

from discoverd.calling.callee import (
    IDEMPOTENT,
    RELAYED_HEADERS,
    RETRY_STATUSES,
    CalleeConfig,
    CallFailed,
    CallResult,
    Route,
    RouteHook,
    base_url,
    relay_headers,
)

__all__ = [
    "IDEMPOTENT",
    "RELAYED_HEADERS",
    "RETRY_STATUSES",
    "CallFailed",
    "CallResult",
    "CalleeConfig",
    "Route",
    "RouteHook",
    "base_url",
    "relay_headers",
]
