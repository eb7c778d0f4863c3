"""The replication peer set of a node (spec §6.5), kept incrementally and bounded.

Peers are the configured own-zone ``nodes`` and other ``zones`` (always), united with the ``http://``
addresses of this env's ``infra.discovery`` registrations: a node that joins later is replicated to
as soon as its self-registration arrives, and a configured node is never forgotten (the Go server
replaces the configured list with the registered one).

Who counts (:func:`counts_as_peer`): without a peer secret, every registration. With one, only those
that arrived authenticated as a peer — the node's own (``NODE``), replicated (``PEER``), cross-zone
forwards (``ZONE``; the gate requires the secret on both flags), a peer's copy adopted in a repair
(``REPAIR``) — and the start-up sources (``SYNC``, ``SNAPSHOT``). A client's registration of
``infra.discovery`` is stored like any other instance but never becomes a peer; the replicator does
not forward it either (:func:`forwardable`), so it does not become one on the other nodes.

Caps: at most ``max_per_zone`` registered addresses in each zone (configured addresses come on top
and do not use up the cap), and at most ``max_zones`` other zones taken from registrations
(configured zones come on top). Candidates are admitted in arrival order; one beyond a cap waits,
and is admitted when an admitted one leaves (:class:`CappedOrder`). So a flood of fake
registrations costs O(1) each and at most ``max_per_zone × (1 + max_zones)`` replication targets.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from discoverd.core.events import (
    Cancelled,
    Event,
    Evicted,
    PeersChanged,
    PeerSet,
    Registered,
    Renewed,
    Source,
)
from discoverd.model import INFRA_APPID, Instance

PEER_SOURCES = frozenset({Source.NODE, Source.PEER, Source.ZONE, Source.REPAIR, Source.SYNC, Source.SNAPSHOT})
"""Sources of ``infra.discovery`` registrations that count as peers when a peer secret is set."""

UNCAPPED = sys.maxsize


def counts_as_peer(source: Source, *, secret: bool) -> bool:
    """Whether an ``infra.discovery`` registration from ``source`` may name a replication peer."""
    return not secret or source in PEER_SOURCES


def forwardable(event: Registered | Renewed, *, secret: bool) -> bool:
    """False for a client's write of ``infra.discovery`` while a peer secret is set: not replicated,
    so it cannot become a peer on the other nodes either."""
    return not secret or event.source is not Source.CLIENT or event.instance.appid != INFRA_APPID


def peer_addrs(ins: Instance) -> list[str]:
    """``host:port`` of every ``http://`` address of a discovery instance."""
    return [a[len("http://") :].split("/", 1)[0] for a in ins.addrs if a.startswith("http://")]


class CappedOrder:
    """Keys in arrival order: the first ``cap`` are admitted, later ones wait. O(1) per operation.

    Invariant: every admitted key arrived before every waiting key, so the admitted keys are always
    the first ``cap`` present, in arrival order; when an admitted key leaves, the oldest waiting key
    takes its place."""

    __slots__ = ("admitted", "cap", "waiting")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.admitted: dict[str, None] = {}
        self.waiting: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"CappedOrder(cap={self.cap}, admitted={list(self.admitted)}, waiting={len(self.waiting)})"

    def __len__(self) -> int:
        return len(self.admitted) + len(self.waiting)

    def add(self, key: str) -> bool:
        """Append ``key`` (not present yet); True when it was admitted."""
        if len(self.admitted) < self.cap:
            self.admitted[key] = None
            return True
        self.waiting[key] = None
        return False

    def remove(self, key: str) -> bool:
        """Remove ``key`` (present); True when the admitted keys changed."""
        if key in self.waiting:
            del self.waiting[key]
            return False
        del self.admitted[key]
        if self.waiting:
            promoted, _ = self.waiting.popitem(last=False)
            self.admitted[promoted] = None
        return True


class PeerSetChange(NamedTuple):
    """What one registry change did to the peer set."""

    changed: bool
    """The admitted set changed: publish :meth:`PeerAdmission.peers`."""
    ignored: int = 0
    """Addresses this change offered that were not admitted (beyond a cap)."""
    untrusted: bool = False
    """An ``infra.discovery`` registration that did not arrive authenticated as a peer."""
    example: str = ""
    """``zone/host:port`` (or ``zone/hostname`` when untrusted) of one of them, for the log."""


NOTHING = PeerSetChange(False)


class PeerAdmission:
    """The admitted replication peers of one node, updated per registry change. Pure; one loop.

    Cost: O(addresses of the instance) per registration, cancel or eviction, plus O(admitted peers)
    for :meth:`peers` when the admitted set changed. Memory: one entry per ``infra.discovery``
    instance of the env (the registry holds it anyway) and one per distinct address.
    """

    def __init__(
        self,
        *,
        me: str,
        zone: str,
        env: str,
        nodes: Sequence[str],
        zones: Mapping[str, Sequence[str]],
        max_per_zone: int = UNCAPPED,
        max_zones: int = UNCAPPED,
        secret: bool = False,
    ) -> None:
        self.me, self.zone, self.env, self.secret = me, zone, env, secret
        self.max_per_zone = max_per_zone
        self.own = tuple(dict.fromkeys(a for a in nodes if a != me))
        self.configured = {
            z: tuple(dict.fromkeys(a for a in addrs if a != me)) for z, addrs in zones.items() if z != zone
        }
        self._entries: dict[tuple[str, str], tuple[Instance, tuple[str, ...]]] = {}
        """``(zone, hostname)`` → the stored instance last seen and the addresses it offers."""
        self._refs: dict[tuple[str, str], int] = {}
        """``(zone, host:port)`` → how many instances offer it."""
        self._registered: dict[str, CappedOrder] = {}
        """Zone → the registered candidate addresses (not configured, not this node)."""
        self._zones = CappedOrder(max_zones)
        """Other zones with a candidate and not configured."""
        self.ignored = 0
        """Addresses not admitted on arrival (beyond a cap), since the start."""
        self.untrusted = 0
        """Registrations that did not count as peers (a peer secret is set), since the start."""

    def __repr__(self) -> str:
        return f"<PeerAdmission {self.peers()!r} ignored={self.ignored} untrusted={self.untrusted}>"

    # -- registry changes ------------------------------------------------------------------------

    def apply(self, event: Event) -> PeerSetChange:
        """Follow a registration, cancel or eviction (any other event: nothing)."""
        if type(event) is Registered:
            ins = event.instance
            if ins.appid == INFRA_APPID and ins.env == self.env:
                return self.registered(ins, event.source)
        elif type(event) is Cancelled:
            return self.removed(event.instance)
        elif type(event) is Evicted:
            changed = False
            for ins in event.instances:
                changed = self.removed(ins).changed or changed
            return PeerSetChange(changed)
        return NOTHING

    def registered(self, ins: Instance, source: Source) -> PeerSetChange:
        """``ins`` is the stored ``infra.discovery`` copy after a registration from ``source``."""
        key = (ins.zone, ins.hostname)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ins:
            return NOTHING  # the incoming copy lost (older dirty timestamp): nothing moved
        if counts_as_peer(source, secret=self.secret):
            return self._offer(key, ins, peer_addrs(ins))
        self.untrusted += 1
        changed = self._offer(key, ins, ()).changed
        return PeerSetChange(changed, 0, True, f"{ins.zone}/{ins.hostname}")

    def removed(self, ins: Instance) -> PeerSetChange:
        """An instance left the registry (cancel or eviction)."""
        if ins.appid != INFRA_APPID or ins.env != self.env:
            return NOTHING
        return self._offer((ins.zone, ins.hostname), None, ())

    def loaded(self, instances: Iterable[Instance], source: Source) -> PeerSetChange:
        """After a bulk load (start-up sync, snapshot): ``instances`` is the env's whole
        ``infra.discovery`` app; each copy not seen yet counts as a registration from ``source``."""
        changed, ignored, example = False, 0, ""
        for ins in instances:
            done = self.registered(ins, source)
            changed = changed or done.changed
            ignored += done.ignored
            example = example or done.example
        return PeerSetChange(changed, ignored, False, example)

    # -- the admitted set ------------------------------------------------------------------------

    def peers(self) -> PeerSet:
        """Configured peers first, then the admitted registered ones in arrival order; zones by name."""
        own_registered = self._registered.get(self.zone)
        own = self.own + (tuple(own_registered.admitted) if own_registered else ())
        zones = {z: addrs + self._admitted_in(z) for z, addrs in self.configured.items()}
        for z in self._zones.admitted:
            zones[z] = self._admitted_in(z)
        return PeerSet(own, tuple((z, addrs) for z, addrs in sorted(zones.items()) if addrs))

    def _admitted_in(self, zone: str) -> tuple[str, ...]:
        order = self._registered.get(zone)
        return tuple(order.admitted) if order else ()

    def _zone_admitted(self, zone: str) -> bool:
        return zone == self.zone or zone in self.configured or zone in self._zones.admitted

    # -- bookkeeping -------------------------------------------------------------------------------

    def _offer(self, key: tuple[str, str], ins: Instance | None, addrs: Iterable[str]) -> PeerSetChange:
        """Make ``addrs`` the addresses instance ``key`` offers (``ins``: its stored copy, ``None``
        when it left). Old addresses go first, then new ones queue; a zone that keeps a candidate
        throughout keeps its place."""
        zone = key[0]
        configured = self.own if zone == self.zone else self.configured.get(zone, ())
        new = tuple(dict.fromkeys(a for a in addrs if a != self.me and a not in configured))
        old = self._entries.pop(key, (None, ()))[1]
        if ins is not None:
            self._entries[key] = (ins, new)
        changed, ignored, example = False, 0, ""
        for addr in old:
            if addr not in new:
                changed = self._unref(zone, addr) or changed
        for addr in new:
            if addr not in old:
                admitted = self._ref(zone, addr)
                changed = changed or admitted is True
                if admitted is False:
                    ignored += 1
                    example = example or f"{zone}/{addr}"
        if old and not self._registered[zone]:
            self._forget_zone(zone)
        self.ignored += ignored
        return PeerSetChange(changed, ignored, False, example)

    def _ref(self, zone: str, addr: str) -> bool | None:
        """Count one more offer of ``addr``: True admitted, False beyond a cap, None already known."""
        n = self._refs.get((zone, addr), 0)
        self._refs[(zone, addr)] = n + 1
        if n:
            return None
        order = self._registered.get(zone)
        if order is None:
            order = self._registered[zone] = CappedOrder(self.max_per_zone)
            if not (zone == self.zone or zone in self.configured):
                self._zones.add(zone)
        return order.add(addr) and self._zone_admitted(zone)

    def _unref(self, zone: str, addr: str) -> bool:
        """Count one offer of ``addr`` less; True when the admitted set changed. A zone left without
        candidates stays until :meth:`_forget_zone`."""
        n = self._refs.pop((zone, addr)) - 1
        if n:
            self._refs[(zone, addr)] = n
            return False
        return self._registered[zone].remove(addr) and self._zone_admitted(zone)

    def _forget_zone(self, zone: str) -> None:
        """``zone`` has no registered candidate left: the oldest waiting zone takes its place (if it
        was admitted, its last address was too, so the change is already reported)."""
        del self._registered[zone]
        if zone != self.zone and zone not in self.configured:
            self._zones.remove(zone)


def desired_peers(
    *,
    me: str,
    zone: str,
    nodes: Sequence[str],
    zones: Mapping[str, Sequence[str]],
    infra: Iterable[Instance],
    max_per_zone: int = UNCAPPED,
    max_zones: int = UNCAPPED,
) -> PeerSet:
    """The peer set of node ``me`` in ``zone`` from scratch: ``nodes`` and ``zones`` from the
    configuration plus the ``http://`` addresses of the ``infra`` instances (all counted as peers),
    in that order, without duplicates, without ``me``, without zones that have no node, within the
    caps. The reference for what :class:`PeerAdmission` keeps incrementally."""
    admission = PeerAdmission(
        me=me, zone=zone, env="", nodes=nodes, zones=zones, max_per_zone=max_per_zone, max_zones=max_zones
    )
    for ins in infra:
        admission.registered(ins, Source.NODE)
    return admission.peers()


def peers_changed(before: PeerSet | None, after: PeerSet) -> PeersChanged | None:
    """The event for a new peer set, or ``None`` when it is the same as ``before``."""
    return None if after == before else PeersChanged(after)
