"""Cluster wiring of a node: its peer set (configuration + ``infra.discovery``) and start-up sync.

* :class:`Membership` is the subscriber that keeps the peer set: it hands each registry change to
  :class:`~discoverd.core.cluster.PeerAdmission` (who counts as a peer, the caps, arrival order; O(1)
  per change) and publishes :class:`~discoverd.core.events.PeersChanged` when the admitted set
  moved (the replicator follows). Registrations ignored for replication (beyond the caps, or not
  authenticated as a peer while a peer secret is set) are counted in :attr:`Membership.ignored` and
  logged at most once per minute, aggregated.
* :func:`sync_from_peers` (spec §6.5): ``fetch/all`` from every own-zone peer and one node per other
  zone; every answer is stored as-is (:class:`~discoverd.core.events.Loaded`); one success ends
  start-up protect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import ClassVar

from discoverd.config import ServerConfig
from discoverd.core.cluster import PeerAdmission, PeerSetChange, peers_changed
from discoverd.core.events import CONTENT, Event, Loaded, PeerSet, Source
from discoverd.core.registry_state import RegistryState
from discoverd.core.throttle import Report, Throttle
from discoverd.model import INFRA_APPID, Instance
from discoverd.server.replication import Replicator

log = logging.getLogger("discoverd.cluster")

LOG_INTERVAL = 60.0
"""Seconds between two summary lines about ignored ``infra.discovery`` registrations."""


class Membership:
    """Subscriber: the node's replication peer set, following ``infra.discovery`` of its env.

    ``clock`` (monotonic seconds) paces the log lines about ignored registrations only.
    """

    kinds: ClassVar[tuple[type[Event], ...]] = CONTENT

    def __init__(
        self,
        config: ServerConfig,
        registry: RegistryState,
        publish: Callable[[Event], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry
        self.publish = publish
        self.clock = clock
        self.infra = (INFRA_APPID, config.env)
        self.admission = PeerAdmission(
            me=config.advertise,
            zone=config.zone,
            env=config.env,
            nodes=config.nodes,
            zones=config.zones,
            max_per_zone=config.max_peers_per_zone,
            max_zones=config.max_peer_zones,
            secret=bool(config.peer_secret),
        )
        self.peers = PeerSet((), ())
        """The last peer set published (none at first: a single node publishes nothing)."""
        self._throttle = Throttle(LOG_INTERVAL)

    def __repr__(self) -> str:
        return f"<Membership {self.peers!r} ignored={self.ignored}>"

    @property
    def ignored(self) -> int:
        """``infra.discovery`` registrations ignored for replication since the start (still stored):
        addresses beyond ``max_peers_per_zone``/``max_peer_zones``, plus registrations that did not
        arrive authenticated as a peer while a peer secret is set."""
        return self.admission.ignored + self.admission.untrusted

    def on_event(self, event: Event) -> None:
        if type(event) is Loaded:
            if self.infra not in event.apps:
                return
            done = self.admission.loaded(self._infra_instances(), event.source)
        else:
            done = self.admission.apply(event)
        if done.ignored or done.untrusted:
            self._note(done)
        if done.changed:
            self.refresh()

    def refresh(self) -> None:
        """Publish :class:`~discoverd.core.events.PeersChanged` when the admitted set differs from the
        last one published."""
        event = peers_changed(self.peers, self.admission.peers())
        if event is not None:
            self.peers = event.peers
            self.publish(event)

    def _infra_instances(self) -> Iterator[Instance]:
        app = self.registry.app(*self.infra)
        return iter(()) if app is None else app.instances()

    def _note(self, done: PeerSetChange) -> None:
        kind = "untrusted" if done.untrusted else "capped"
        report = self._throttle.hit(kind, self.clock(), done.example)
        if report is not None:
            _log_ignored(kind, report, self.config)


def _log_ignored(kind: str, report: Report, c: ServerConfig) -> None:
    if kind == "untrusted":
        what = "not registered by a peer (no peer secret): stored, not replicated to"
    else:
        what = f"beyond max_peers_per_zone={c.max_peers_per_zone} / max_peer_zones={c.max_peer_zones}"
    if report.first:
        log.warning("infra.discovery registration %s ignored as a replication peer: %s", report.detail, what)
    else:
        log.warning(
            "%d more infra.discovery registration(s) ignored as replication peers in the last %.0f s "
            "(last: %s): %s",
            report.count,
            report.span,
            report.detail,
            what,
        )


async def sync_from_peers(
    replicator: Replicator,
    registry: RegistryState,
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
