"""Former home of ``InstanceSource``; it lives in :mod:`discoverd.calling.source` now.

Re-exported unchanged, with a :class:`DeprecationWarning`, so that imports of
 ``discoverd.client.source`` keep working.
"""

from discoverd.calling.source import InstanceSource
from discoverd.deprecation import warn_module

warn_module(__name__, "discoverd.calling.source")

__all__ = ["InstanceSource"]
