"""Former home of the ``httpx`` transport; it lives in :mod:`discoverd.calling.httpx_transport` now.

Re-exported unchanged with a :class:`DeprecationWarning` (importing it still needs
 the optional ``httpx`` package).
"""

from discoverd.calling.httpx_transport import DiscoverdTransport
from discoverd.deprecation import warn_module

warn_module(__name__, "discoverd.integrations.httpx")

__all__ = ["DiscoverdTransport"]
