"""Former home of the load-balancing caller; it lives in :mod:`discoverd.calling.caller` now.

Re-exported unchanged, with a :class:`DeprecationWarning`, so that imports of
 ``discoverd.client.caller`` keep working.
"""

from discoverd.calling.caller import (
    IDEMPOTENT,
    RELAYED_HEADERS,
    RETRY_STATUSES,
    AsyncCaller,
    CalleeConfig,
    CallFailed,
    CallResult,
    CallRoute,
    RouteHook,
    relay_headers,
)
from discoverd.deprecation import warn_module

warn_module(__name__, "discoverd.calling.caller")

Route = CallRoute

__all__ = [
    "IDEMPOTENT",
    "RELAYED_HEADERS",
    "RETRY_STATUSES",
    "AsyncCaller",
    "CallFailed",
    "CallResult",
    "CallRoute",
    "CalleeConfig",
    "Route",
    "RouteHook",
    "relay_headers",
]
