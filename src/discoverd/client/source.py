"""Former home of ``InstanceSource``; it lives in :mod:`discoverd.calling.source` now.

Re-exported unchanged so that imports of ``discoverd.client.source`` keep working.
"""

from discoverd.calling.source import InstanceSource

__all__ = ["InstanceSource"]
