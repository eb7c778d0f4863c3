"""The registry state machine (spec §2, §3, §5): apps, instances, versions and eviction.

Synchronous and I/O-free: every mutating method takes ``now`` (int nanoseconds) and returns the
typed event of what changed (:mod:`discoverd.core.events`), or ``None`` when nothing did; the server
publishes it to the long polls, replication, snapshots and the rest. Not thread-safe: one event loop
owns it.

Keys: ``(appid, env)`` → zone → hostname → :class:`~discoverd.model.Instance`. Each ``(appid, env)`` has
one strictly increasing ``latest`` version (``max(ts, previous + 1)`` on every change).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from discoverd.core.events import (
    AppKey,
    Cancelled,
    Evicted,
    InstancesSet,
    Loaded,
    Registered,
    Renewed,
    SetChange,
    Source,
)
from discoverd.core.guard import Guard
from discoverd.model import UP, Instance

__all__ = ["App", "AppKey", "RegistryState"]


@dataclass(slots=True, eq=False)
class App:
    """Every instance of one ``(appid, env)``, by zone then hostname, and the app's version.

    ``cache`` holds encoded answers for the current content; it is emptied on every change
    (including renews, whose timestamps appear in fetch answers).
    """

    appid: str
    env: str
    zones: dict[str, dict[str, Instance]] = field(default_factory=dict)
    latest: int = 0
    cache: dict[object, bytes] = field(default_factory=dict)
    parts: dict[tuple[str, str], tuple[Instance, bytes, bytes]] = field(default_factory=dict)
    """Per-instance JSON split around ``renew_timestamp`` (renew answers); see :func:`wire.renewed`."""

    @property
    def key(self) -> AppKey:
        return (self.appid, self.env)

    def bump(self, ts: int) -> None:
        """Advance ``latest`` to ``max(ts, latest + 1)`` and drop cached answers."""
        self.latest = ts if ts > self.latest else self.latest + 1
        self.cache.clear()

    def instances(self) -> Iterator[Instance]:
        for hosts in self.zones.values():
            yield from hosts.values()

    def __len__(self) -> int:
        return sum(len(h) for h in self.zones.values())

    def __repr__(self) -> str:
        return f"App({self.appid!r}, {self.env!r}, zones={list(self.zones)}, latest={self.latest})"


class RegistryState:
    """All registered instances of one node, with the renew guard (spec §5.2)."""

    def __init__(self, guard: Guard | None = None, *, rng: random.Random | None = None) -> None:
        self.apps: dict[AppKey, App] = {}
        self.guard = guard if guard is not None else Guard()
        self.size = 0
        self._rng = rng if rng is not None else random.Random()
        self._interned: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RegistryState(apps={len(self.apps)}, instances={self.size}, guard={self.guard!r})"

    # -- reads -------------------------------------------------------------------------------

    def app(self, appid: str, env: str) -> App | None:
        """The app, or ``None`` when no instance of it is registered."""
        return self.apps.get((appid, env))

    def get(self, appid: str, env: str, zone: str, hostname: str) -> Instance | None:
        """The stored instance (not a copy: read it, do not keep or mutate it)."""
        app = self.apps.get((appid, env))
        if app is None:
            return None
        hosts = app.zones.get(zone)
        return None if hosts is None else hosts.get(hostname)

    def all_instances(self) -> Iterator[Instance]:
        for app in self.apps.values():
            yield from app.instances()

    # -- writes ------------------------------------------------------------------------------

    def _intern(self, s: str) -> str:
        return self._interned.setdefault(s, s)

    def register(
        self, ins: Instance, now: int, *, keep_timestamps: bool = False, source: Source = Source.CLIENT
    ) -> Registered:
        """Register ``ins`` (which the registry takes ownership of); its app's version moves.

        Normal registers stamp ``reg/up/renew/latest = now`` and ``dirty = ins.dirty_timestamp or now``.
        ``keep_timestamps`` stores the instance exactly as given (start-up sync, snapshot restore).
        An existing hostname is replaced iff the incoming dirty timestamp is ≥ the stored one, keeping
        the stored ``up_timestamp``; the app version is bumped either way (spec §2.4). The event holds
        the instance stored afterwards.
        """
        if not keep_timestamps:
            ins.reg_timestamp = ins.up_timestamp = ins.renew_timestamp = now
            ins.latest_timestamp = now
            if ins.dirty_timestamp <= 0:
                ins.dirty_timestamp = now
        ins.appid, ins.env = self._intern(ins.appid), self._intern(ins.env)
        ins.zone, ins.region = self._intern(ins.zone), self._intern(ins.region)
        key = (ins.appid, ins.env)
        app = self.apps.get(key)
        if app is None:
            app = self.apps[key] = App(ins.appid, ins.env)
        hosts = app.zones.setdefault(ins.zone, {})
        old = hosts.get(ins.hostname)
        stored = ins
        if old is None:
            hosts[ins.hostname] = ins
            self.size += 1
            self.guard.instance_added()
        elif ins.dirty_timestamp >= old.dirty_timestamp:
            if not keep_timestamps:
                ins.up_timestamp = old.up_timestamp
            hosts[ins.hostname] = ins
        else:
            stored = old
        app.bump(ins.latest_timestamp if keep_timestamps else now)
        return Registered(stored, source, old is None)

    def renew(
        self,
        appid: str,
        env: str,
        zone: str,
        hostname: str,
        now: int,
        *,
        peer_dirty: int | None = None,
        source: Source = Source.CLIENT,
    ) -> Renewed | None:
        """Heartbeat: set ``renew_timestamp = now`` and count it for the guard. Never bumps versions.

        ``None`` when the instance is unknown (the protocol answers -404). With ``peer_dirty`` (a
        replicated renew), the event's code compares the caller's dirty timestamp: newer → -404 (the
        caller pushes a register), older → -409 (the caller adopts our copy), equal → 0.
        """
        app = self.apps.get((appid, env))  # one lookup: renew is the hot path
        hosts = None if app is None else app.zones.get(zone)
        ins = None if hosts is None else hosts.get(hostname)
        if ins is None or app is None:
            return None
        ins.renew_timestamp = now
        self.guard.renewed()
        app.cache.clear()
        code = 0
        if peer_dirty is not None:
            if peer_dirty > ins.dirty_timestamp:
                code = -404
            elif peer_dirty < ins.dirty_timestamp:
                code = -409
        return Renewed(ins, source, code)

    def cancel(
        self,
        appid: str,
        env: str,
        zone: str,
        hostname: str,
        now: int,
        *,
        latest: int = 0,
        source: Source = Source.CLIENT,
    ) -> Cancelled | None:
        """Remove an instance (explicit cancel), or ``None`` when unknown.

        The app version becomes ``max(latest, previous + 1)``; the guard's expected count drops.
        """
        removed = self._remove(appid, env, zone, hostname, latest)
        if removed is None:
            return None
        self.guard.instance_cancelled()
        return Cancelled(removed, source)

    def _remove(self, appid: str, env: str, zone: str, hostname: str, latest: int) -> Instance | None:
        app = self.apps.get((appid, env))
        hosts = None if app is None else app.zones.get(zone)
        if app is None or hosts is None or hostname not in hosts:
            return None
        ins = hosts.pop(hostname)
        app.parts.pop((zone, hostname), None)
        self.size -= 1
        if not hosts:
            del app.zones[zone]
        app.bump(latest)
        ins.latest_timestamp = app.latest
        if not app.zones:
            del self.apps[(appid, env)]
        return ins

    def apply_set(
        self,
        appid: str,
        env: str,
        zone: str,
        changes: Sequence[SetChange],
        set_timestamp: int,
        *,
        region: str = "",
        source: Source = Source.CLIENT,
    ) -> InstancesSet:
        """Apply status/metadata ``changes`` atomically: all of them, or none.

        Unknown app, zone or hostname → nothing changes and the event's ``refused`` says why (it is
        still published: replication forwards refused sets, as the Go server does). Status sets
        ``up_timestamp`` when UP; metadata merges into the stored map; dirty and instance latest
        become ``set_timestamp``. Unlike the Go server, the app version is bumped so pollers see the
        change (spec §11.11).
        """
        refused = self._set_refusal(appid, env, zone, changes)
        event = InstancesSet(appid, env, zone, region, tuple(changes), set_timestamp, source, refused)
        if refused:
            return event
        app = self.apps[(appid, env)]
        hosts = app.zones[zone]
        for change in changes:
            ins = hosts[change.hostname]
            if change.status is not None:
                ins.status = change.status
                if change.status == UP:
                    ins.up_timestamp = set_timestamp
            if change.metadata is not None:
                ins.metadata = {**(ins.metadata or {}), **change.metadata}
            ins.dirty_timestamp = ins.latest_timestamp = set_timestamp
        app.parts.clear()
        app.bump(set_timestamp)
        return event

    def _set_refusal(self, appid: str, env: str, zone: str, changes: Sequence[SetChange]) -> str:
        app = self.apps.get((appid, env))
        hosts = None if app is None else app.zones.get(zone)
        if app is None or hosts is None:
            return f"set: no instance of {appid} in env {env} zone {zone}"
        for change in changes:
            if change.hostname not in hosts:
                return f"set: hostname {change.hostname} not found"
        return ""

    # -- eviction ----------------------------------------------------------------------------

    def expired(self, now: int, max_age: int) -> list[Instance]:
        """Instances whose last renew is older than ``max_age`` nanoseconds."""
        return [i for i in self.all_instances() if now - i.renew_timestamp > max_age]

    def evict(self, now: int, evict_after: int, ceiling: int, share: float) -> Evicted | None:
        """One eviction pass (spec §5.2): the removed instances, or ``None`` when none was.

        Candidates are silent for more than ``evict_after`` (or ``ceiling`` while the guard protects);
        at most ``size - floor(size * share)`` of them are removed, chosen uniformly at random.
        Evictions do not lower the guard's expected count (the periodic recount does).
        """
        limit = ceiling if self.guard.protecting else evict_after
        candidates = self.expired(now, limit)
        cap = self.size - int(self.size * share)
        if len(candidates) > cap:
            candidates = self._rng.sample(candidates, cap)
        removed = []
        for ins in candidates:
            gone = self._remove(ins.appid, ins.env, ins.zone, ins.hostname, now)
            if gone is not None:
                removed.append(gone)
        return Evicted(tuple(removed)) if removed else None

    def load(self, instances: Iterable[Instance], now: int, *, source: Source = Source.SYNC) -> Loaded:
        """Store instances exactly as given (start-up sync, snapshot restore)."""
        changed: set[AppKey] = set()
        count = 0
        for ins in instances:
            stored = self.register(ins, now, keep_timestamps=True, source=source).instance
            changed.add((stored.appid, stored.env))
            count += 1
        return Loaded(frozenset(changed), count, source)
