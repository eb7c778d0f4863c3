"""Former home of the caller's data types; they live in :mod:`discoverd.calling.callee` now.

Re-exported unchanged, with a :class:`DeprecationWarning`, so that imports of
 ``discoverd.client.callee`` keep working.
"""

from discoverd.calling.callee import (
    IDEMPOTENT,
    RELAYED_HEADERS,
    RETRY_STATUSES,
    CalleeConfig,
    CallFailed,
    CallResult,
    CallRoute,
    RouteHook,
    base_url,
    relay_headers,
)
from discoverd.deprecation import warn_module

warn_module(__name__, "discoverd.calling.callee")

Route = CallRoute

__all__ = [
    "IDEMPOTENT",
    "RELAYED_HEADERS",
    "RETRY_STATUSES",
    "CallFailed",
    "CallResult",
    "CallRoute",
    "CalleeConfig",
    "Route",
    "RouteHook",
    "base_url",
    "relay_headers",
]
