"""The replication peer set of a node (spec §6.5), as a pure function of configuration and registry.

Peers are the configured own-zone ``nodes`` and other ``zones``, united with every registry node
registered as ``infra.discovery`` in the node's env: a node that joins later is replicated to as
soon as its self-registration arrives, and a configured node is never forgotten (the Go server
replaces the configured list with the registered one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from discoverd.core.events import PeersChanged, PeerSet
from discoverd.core.nodes import http_hostports
from discoverd.model import Instance


def desired_peers(
    *,
    me: str,
    zone: str,
    nodes: Sequence[str],
    zones: Mapping[str, Sequence[str]],
    infra: Iterable[Instance],
) -> PeerSet:
    """The peer set of node ``me`` in ``zone``: ``nodes`` and ``zones`` from the configuration plus the
    ``http://`` addresses of the ``infra`` instances (this env's ``infra.discovery``), in that order,
    without duplicates, without ``me``, and without zones that have no node."""
    own = list(dict.fromkeys(nodes))
    others: dict[str, list[str]] = {z: list(dict.fromkeys(addrs)) for z, addrs in zones.items()}
    for their_zone, addr in http_hostports(infra):
        if their_zone == zone:
            if addr not in own:
                own.append(addr)
        elif addr not in others.setdefault(their_zone, []):
            others[their_zone].append(addr)
    return PeerSet(
        own=tuple(a for a in own if a != me),
        zones=tuple((z, tuple(addrs)) for z, addrs in sorted(others.items()) if addrs and z != zone),
    )


def peers_changed(before: PeerSet | None, after: PeerSet) -> PeersChanged | None:
    """The event for a new peer set, or ``None`` when it is the same as ``before``."""
    return None if after == before else PeersChanged(after)
