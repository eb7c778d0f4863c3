"""``InstanceSource``: what a load-balancing caller needs from wherever instances come from.

A caller (:class:`~discoverd.client.caller.AsyncCaller`) resolves an appid to instances on every
call, so it needs a *locally watched* view, not a request per call. Anything that can keep such a
view implements this protocol: :class:`~discoverd.client.async_client.AsyncClient` does (its long
poll keeps the view), and so can any registry backend or cache that watches its apps.

The protocol is structural (:class:`typing.Protocol`): implementers do not inherit from it. It uses
only :class:`~discoverd.model.Instance`, so it carries nothing specific to one registry's wire
protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from discoverd.model import Instance


class InstanceSource(Protocol):
    """A locally watched view of the UP instances of apps, with the consumer's preferred zone.

    Contract shared by every method:

    * instances are those with status UP, of every zone, of the source's own environment;
    * the returned lists and instances are read-only for the receiver (copy before changing them);
    * methods are safe to call from any task of the event loop that runs the source.
    """

    @property
    def zone(self) -> str:
        """The zone the consumer runs in; a caller prefers instances of this zone."""
        ...

    async def instances(self, appid: str) -> Sequence[Instance]:
        """The current UP instances of ``appid`` (empty when it has none).

        The first call for an app starts watching it and may wait for the backend once; later calls
        read the local view without a round trip. While the backend is unreachable, the last good
        view is returned. Raises :class:`~discoverd.errors.DiscoverdError` only when no view exists
        yet and the backend cannot be asked.
        """
        ...

    def subscribe(self, appid: str) -> AsyncIterator[Sequence[Instance]]:
        """Yield the UP instances of ``appid`` once known, then after every change.

        Changes may be coalesced (a slow consumer sees the latest list, not every intermediate one).
        The iterator ends when the source closes; closing the iterator stops the subscription.
        """
        ...

    def zone_weights(self, appid: str) -> Mapping[str, int] | None:
        """How to split calls to ``appid`` across provider zones (zone → weight), if the source
        knows; ``None`` means "stay in :attr:`zone` while it has candidates, else use all zones"."""
        ...
