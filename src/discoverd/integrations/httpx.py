"""An ``httpx`` transport that routes ``http://appid/path`` requests through a discoverd caller.

Needs the ``httpx`` extra (``pip install 'discoverd[httpx]'``). See
:class:`~discoverd.calling.httpx_transport.DiscoverdTransport` for the contract.
"""

from discoverd.calling.httpx_transport import DiscoverdTransport

__all__ = ["DiscoverdTransport"]
