"""Cluster wiring of a node: its peer set (configuration + ``infra.discovery``) and start-up sync.

* :class:`Membership` is the subscriber that keeps the peer set: whenever this env's
  ``infra.discovery`` changes it recomputes :func:`~discoverd.core.cluster.desired_peers` and
  publishes :class:`~discoverd.core.events.PeersChanged` when the set moved (the replicator follows).
* :func:`sync_from_peers` (spec §6.5): ``fetch/all`` from every own-zone peer and one node per other
  zone; every answer is stored as-is (:class:`~discoverd.core.events.Loaded`); one success ends
  start-up protect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import ClassVar

from discoverd.config import ServerConfig
from discoverd.core.cluster import desired_peers, peers_changed
from discoverd.core.events import CONTENT, Event, PeerSet, Source, changed_apps
from discoverd.core.registry import Registry
from discoverd.model import INFRA_APPID
from discoverd.server.replication import Replicator

log = logging.getLogger("discoverd.cluster")


class Membership:
    """Subscriber: the node's replication peer set, recomputed when ``infra.discovery`` changes."""

    kinds: ClassVar[tuple[type[Event], ...]] = CONTENT

    def __init__(self, config: ServerConfig, registry: Registry, publish: Callable[[Event], None]) -> None:
        self.config = config
        self.registry = registry
        self.publish = publish
        self.infra = (INFRA_APPID, config.env)
        self.peers = PeerSet((), ())
        """The last peer set published (none at first: a single node publishes nothing)."""

    def __repr__(self) -> str:
        return f"<Membership {self.peers!r}>"

    def on_event(self, event: Event) -> None:
        if self.infra in changed_apps(event):
            self.refresh()

    def refresh(self) -> None:
        """Recompute the peer set; publish :class:`PeersChanged` when it moved."""
        c = self.config
        infra = self.registry.app(*self.infra)
        after = desired_peers(
            me=c.advertise,
            zone=c.zone,
            nodes=c.nodes,
            zones=c.zones,
            infra=() if infra is None else infra.instances(),
        )
        event = peers_changed(self.peers, after)
        self.peers = after
        if event is not None:
            self.publish(event)


async def sync_from_peers(
    replicator: Replicator,
    registry: Registry,
    *,
    clock: Callable[[], int],
    publish: Callable[[Event], None],
    timeout: float,
) -> bool:
    """Load every peer's registry (bounded by ``timeout``); True when at least one answered."""
    targets = replicator.sync_targets()
    if not targets:
        return False
    done, pending = await asyncio.wait(
        [asyncio.ensure_future(replicator.fetch_all(addr)) for addr in targets], timeout=timeout
    )
    for task in pending:
        task.cancel()
    synced = 0
    for task in done:
        instances = task.result()
        if instances is None:
            continue
        synced += 1
        publish(registry.load(instances, clock(), source=Source.SYNC))
    if synced:
        log.info(
            "start-up sync: %d of %d peer(s) answered; %d instance(s)",
            synced,
            len(targets),
            registry.size,
        )
    return synced > 0
