"""What the xDS server reports: plain counts for ``/metrics`` and the client list for the dashboard.

No third-party import here, so the metrics and dashboard modules may import these types cheaply.
Resource types are named by :data:`KINDS` (``listener``, ``cluster``, ``endpoints``): the label
values to export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from discoverd.core.events import Event

KINDS: Final = ("listener", "cluster", "endpoints")
"""The served resource types by short name, in the order they are sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class XdsStats:
    """Counts of the xDS server since it started. Counters only grow; ``streams`` is a gauge.

    Every mapping has one entry per :data:`KINDS` name.
    """

    streams: int
    """ADS streams open now."""
    streams_opened: int
    """ADS streams opened (accepted) since start."""
    refused: int
    """Streams refused for a missing or unknown token (read protection on)."""
    pushes: dict[str, int]
    """Responses sent, by type."""
    acks: dict[str, int]
    """Responses the client accepted, by type."""
    nacks: dict[str, int]
    """Responses the client rejected (``error_detail`` set), by type: a mapping the client cannot use."""
    encodings: int
    """Resources encoded (each change is encoded once, whatever the number of streams)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class XdsClient:
    """One open ADS stream, as the dashboard lists it."""

    node_id: str
    """The bootstrap's ``node.id`` (``""`` until the stream's first request)."""
    peer: str
    """The client's address as gRPC reports it (``ipv4:127.0.0.1:50111``)."""
    env: str
    """The env its assignments come from (``node.metadata.env``, else the server's)."""
    zone: str
    """``node.locality.zone`` (priority 0 for its own zone's endpoints)."""
    region: str
    watching: dict[str, tuple[str, ...]]
    """Resource names (appids) subscribed, by :data:`KINDS` name."""
    since: float
    """When the stream opened (seconds since the epoch)."""
    nacks: int
    """Responses this client rejected."""


class XdsView(Protocol):
    """What the node's views (metrics, dashboard) read of a running xDS server."""

    def stats(self) -> XdsStats:
        """Counts since the server started."""
        ...

    def clients(self) -> list[XdsClient]:
        """The open ADS streams."""
        ...


class XdsService(XdsView, Protocol):
    """What the node runs: a subscriber of the registry's content events with a lifecycle."""

    @property
    def kinds(self) -> tuple[type[Event], ...]: ...

    def on_event(self, event: Event) -> None:
        """Push the change to the streams watching the changed apps."""

    async def start(self) -> str:
        """Listen; returns the bound ``host:port``. Raises :class:`OSError` when it cannot."""
        ...

    async def aclose(self) -> None:
        """Stop serving and cancel every stream at once; idempotent."""
