"""The parts of a running node that its views read: metrics, the dashboard, ``/discovery/nodes``.

:class:`NodeParts` is built once by the node (``server/node.py``) and handed to each view, so a view
names what it reads instead of reaching into the node. Read-only for the views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from discoverd.config import ServerConfig
from discoverd.core.registry_state import RegistryState
from discoverd.server.cluster import Membership
from discoverd.server.lifecycle import Lifecycle
from discoverd.server.parking import Parking
from discoverd.server.persistence import Persistence
from discoverd.server.replication import Replicator
from discoverd.server.stats import Counters
from discoverd.server.xds.stats import XdsView


@dataclass(frozen=True, slots=True, eq=False)
class NodeParts:
    config: ServerConfig
    """With ``advertise`` resolved to the bound address."""
    registry: RegistryState
    counters: Counters
    lifecycle: Lifecycle
    parking: Parking
    replicator: Replicator
    persistence: Persistence | None
    clock: Callable[[], int]
    membership: Membership
    xds: XdsView | None = None
    """The xDS server (``--xds``), or ``None``."""
