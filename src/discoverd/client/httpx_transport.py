"""Former home of the ``httpx`` transport; it lives in :mod:`discoverd.calling.httpx_transport` now.

Re-exported unchanged (importing it still needs the optional ``httpx`` package).
"""

from discoverd.calling.httpx_transport import DiscoverdTransport

__all__ = ["DiscoverdTransport"]
