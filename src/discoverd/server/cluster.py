"""Cluster wiring of a node: its peer set (configuration + ``infra.discovery``) and start-up sync.

* Peers: the configured own-zone ``nodes`` and other ``zones``, united with every registry node
  registered as ``infra.discovery`` in this env (spec §6.5) — so a node that joins later is
  replicated to as soon as its self-registration arrives, and a configured node is never forgotten
  (the Go server replaces the configured list with the registered one).
* Start-up sync (spec §6.5): ``fetch/all`` from every own-zone peer and one node per other zone; every
  answer is stored as-is; one success ends start-up protect.
"""

from __future__ import annotations

import asyncio
import logging

from discoverd.core.nodes import http_hostports
from discoverd.model import INFRA_APPID
from discoverd.server.app import ProtocolApp
from discoverd.server.replication import Replicator

log = logging.getLogger("discoverd.cluster")


def desired_peers(app: ProtocolApp) -> tuple[list[str], dict[str, list[str]]]:
    """(own-zone nodes, other zones' nodes) from the config and the registered ``infra.discovery``."""
    c = app.config
    own = list(dict.fromkeys(c.nodes))
    zones: dict[str, list[str]] = {z: list(nodes) for z, nodes in c.zones.items()}
    infra = app.registry.app(INFRA_APPID, c.env)
    if infra is not None:
        for zone, addr in http_hostports(infra.instances()):
            if zone == c.zone:
                if addr not in own:
                    own.append(addr)
            elif addr not in zones.setdefault(zone, []):
                zones[zone].append(addr)
    return own, zones


def refresh_peers(app: ProtocolApp) -> None:
    """Apply :func:`desired_peers` to the app's replicator."""
    if app.replicator is not None:
        own, zones = desired_peers(app)
        app.replicator.set_peers(own, zones)


async def sync_from_peers(app: ProtocolApp, replicator: Replicator, timeout: float) -> bool:
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
        now = app.clock()
        for key in app.registry.load(instances, now):
            app.changed(key)
    if synced:
        log.info(
            "start-up sync: %d of %d peer(s) answered; %d instance(s)",
            synced,
            len(targets),
            app.registry.size,
        )
    return synced > 0
