"""The registry state machine (spec §2, §3, §5): apps, instances, versions and eviction.

Synchronous and I/O-free: every mutating method takes ``now`` (int nanoseconds) and returns what
changed, so that the caller can wake pollers and replicate. Not thread-safe: one event loop owns it.

Keys: ``(appid, env)`` → zone → hostname → :class:`~discoverd.model.Instance`. Each ``(appid, env)`` has
one strictly increasing ``latest`` version (``max(ts, previous + 1)`` on every change).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from discoverd.core.guard import Guard
from discoverd.errors import BadRequest
from discoverd.model import UP, Instance

AppKey = tuple[str, str]
"""``(appid, env)``."""


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


@dataclass(slots=True)
class RenewResult:
    """Outcome of :meth:`Registry.renew`: the wire code and the stored instance, if any.

    ``instance`` is the registry's own object: encode or copy it at once, never keep or mutate it.

    ``code`` is 0, -404 (unknown, or the caller's copy is newer) or -409 (the stored copy is newer).
    """

    code: int
    instance: Instance | None


class Registry:
    """All registered instances of one node, with the renew guard (spec §5.2)."""

    def __init__(self, guard: Guard | None = None, *, rng: random.Random | None = None) -> None:
        self.apps: dict[AppKey, App] = {}
        self.guard = guard if guard is not None else Guard()
        self.size = 0
        self._rng = rng if rng is not None else random.Random()
        self._interned: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Registry(apps={len(self.apps)}, instances={self.size}, guard={self.guard!r})"

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

    def register(self, ins: Instance, now: int, *, keep_timestamps: bool = False) -> App:
        """Register ``ins`` (which the registry takes ownership of) and return its app, bumped.

        Normal registers stamp ``reg/up/renew/latest = now`` and ``dirty = ins.dirty_timestamp or now``.
        ``keep_timestamps`` stores the instance exactly as given (start-up sync, snapshot restore).
        An existing hostname is replaced iff the incoming dirty timestamp is ≥ the stored one, keeping
        the stored ``up_timestamp``; the app version is bumped either way (spec §2.4).
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
        if old is None:
            hosts[ins.hostname] = ins
            self.size += 1
            self.guard.instance_added()
        elif ins.dirty_timestamp >= old.dirty_timestamp:
            if not keep_timestamps:
                ins.up_timestamp = old.up_timestamp
            hosts[ins.hostname] = ins
        app.bump(ins.latest_timestamp if keep_timestamps else now)
        return app

    def renew(
        self,
        appid: str,
        env: str,
        zone: str,
        hostname: str,
        now: int,
        *,
        peer_dirty: int | None = None,
    ) -> RenewResult:
        """Heartbeat: set ``renew_timestamp = now`` and count it for the guard. Never bumps versions.

        With ``peer_dirty`` (a replicated renew), compare the caller's dirty timestamp: newer → -404
        (the caller pushes a register), older → -409 with the stored copy, equal → 0.
        """
        ins = self.get(appid, env, zone, hostname)
        if ins is None:
            return RenewResult(-404, None)
        ins.renew_timestamp = now
        self.guard.renewed()
        app = self.apps[(appid, env)]
        app.cache.clear()
        code = 0
        if peer_dirty is not None:
            if peer_dirty > ins.dirty_timestamp:
                code = -404
            elif peer_dirty < ins.dirty_timestamp:
                code = -409
        return RenewResult(code, ins)

    def cancel(
        self, appid: str, env: str, zone: str, hostname: str, now: int, *, latest: int = 0
    ) -> Instance | None:
        """Remove an instance (explicit cancel); returns it, or ``None`` when unknown.

        The app version becomes ``max(latest, previous + 1)``; the guard's expected count drops.
        """
        removed = self._remove(appid, env, zone, hostname, latest)
        if removed is not None:
            self.guard.instance_cancelled()
        return removed

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
        changes: list[tuple[str, int | None, dict[str, str] | None]],
        set_timestamp: int,
    ) -> App:
        """Apply ``(hostname, status, metadata)`` changes atomically; raises :class:`BadRequest`.

        Unknown app, zone or hostname → nothing changes. Status sets ``up_timestamp`` when UP;
        metadata merges into the stored map; dirty and instance latest become ``set_timestamp``.
        Unlike the Go server, the app version is bumped so pollers see the change (spec §11.11).
        """
        app = self.apps.get((appid, env))
        hosts = None if app is None else app.zones.get(zone)
        if app is None or hosts is None:
            raise BadRequest(f"set: no instance of {appid} in env {env} zone {zone}")
        for hostname, _, _ in changes:
            if hostname not in hosts:
                raise BadRequest(f"set: hostname {hostname} not found")
        for hostname, status, meta in changes:
            ins = hosts[hostname]
            if status is not None:
                ins.status = status
                if status == UP:
                    ins.up_timestamp = set_timestamp
            if meta is not None:
                ins.metadata = {**(ins.metadata or {}), **meta}
            ins.dirty_timestamp = ins.latest_timestamp = set_timestamp
        app.parts.clear()
        app.bump(set_timestamp)
        return app

    # -- eviction ----------------------------------------------------------------------------

    def expired(self, now: int, max_age: int) -> list[Instance]:
        """Instances whose last renew is older than ``max_age`` nanoseconds."""
        return [i for i in self.all_instances() if now - i.renew_timestamp > max_age]

    def evict(self, now: int, evict_after: int, ceiling: int, share: float) -> list[Instance]:
        """One eviction pass (spec §5.2): returns the removed instances.

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
        return removed

    def load(self, instances: Iterable[Instance], now: int) -> set[AppKey]:
        """Store instances exactly as given (start-up sync, snapshot restore); returns changed apps."""
        changed: set[AppKey] = set()
        for ins in instances:
            changed.add(self.register(ins, now, keep_timestamps=True).key)
        return changed
