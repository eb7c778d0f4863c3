"""The rules of the registry cache (go-micro ``registry/cache``), with the clock passed in.

:class:`CacheState` holds one :class:`Entry` per appid and decides, for a read at time ``now``, what the
async shell (:class:`discoverd.backends.cache.CachedRegistry`) must do — a :class:`ReadPlan`:

* ``SERVE`` — answer from the entry: it is fresh, or the per-app minimum refresh interval has not elapsed
  since the last attempt (a failing backend is not hammered; the last good list is served, stale);
* ``FETCH`` — this caller fetches; it calls :meth:`CacheState.begin_fetch` and then exactly one of
  ``fetch_succeeded`` / ``fetch_failed`` / ``fetch_aborted`` (single flight: one fetch per app);
* ``JOIN`` — a fetch is in flight: wait for it and serve its outcome.

An entry is *fresh* when it was fetched successfully less than ``ttl`` ago, no write through the cache
invalidated it since, and the watch that keeps it current has not been re-established since (after a
watch gap, events may have been lost: the next read refetches). A failed fetch records the error and never
touches the cached list ("an error never empties a cached list").

Watch events are applied to cached apps only (an app nobody asked for is not cached). Events that arrive
while a fetch is in flight are applied *and* buffered; a successful fetch replays them over its snapshot,
so a snapshot taken before a change cannot undo it.

:class:`~discoverd.core.backoff.Backoff` and :class:`~discoverd.core.backoff.Retry` (re-exported here)
schedule watcher restarts.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from discoverd.core.backoff import Backoff, Jitter, Retry
from discoverd.errors import ConfigError
from discoverd.model import Action, Event, Instance


class ReadPlan(enum.Enum):
    """What a read must do next (see the module docstring)."""

    SERVE = "serve"
    FETCH = "fetch"
    JOIN = "join"


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """Timings of the cache.

    * ``ttl`` (60 s) — how long a fetched list is served without asking the backend again;
    * ``min_refresh`` (1 s) — minimum time between the end of one fetch attempt and the start of the next
      for the same app, whatever its outcome; writes through the cache lift it for their app.
    """

    ttl: float = 60.0
    min_refresh: float = 1.0

    def __post_init__(self) -> None:
        if not (self.ttl > 0 and math.isfinite(self.ttl)):
            raise ConfigError(f"cache ttl must be a positive number of seconds, got {self.ttl!r}")
        if not (self.min_refresh >= 0 and math.isfinite(self.min_refresh)):
            raise ConfigError(f"cache min_refresh must be >= 0 seconds, got {self.min_refresh!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheStatus:
    """The state of one app in the cache, as :meth:`CacheState.status` reports it.

    * ``cached`` — a fetch succeeded at least once: reads are answered from memory;
    * ``stale`` — the cached list is served although it is not fresh: the last refresh failed (``error``),
      its ttl passed, or a watch gap invalidated it and no refresh happened yet;
    * ``error`` — the error of the last fetch attempt, ``None`` once a fetch succeeds again;
    * ``fetched_at`` — clock time at which the last successful fetch started.
    """

    appid: str
    cached: bool = False
    stale: bool = False
    error: BaseException | None = None
    fetched_at: float | None = None


@dataclass(slots=True, kw_only=True)
class Entry:
    """The cached state of one app. Mutated only through :class:`CacheState`."""

    appid: str
    #: The cached instances by hostname (the registry key is ``(appid, hostname)``).
    instances: dict[str, Instance] = field(default_factory=dict)
    fetched_at: float | None = None
    attempted_at: float | None = None
    last_error: BaseException | None = None
    #: The traceback of ``last_error`` when it was recorded (re-raising must not grow it).
    error_traceback: TracebackType | None = None
    epoch: int = 0
    generation: int = 0
    synced_generation: int = 0
    inflight: bool = False
    flight_started: float = 0.0
    flight_epoch: int = 0
    flight_generation: int = 0
    buffered: list[Event] = field(default_factory=list)

    @property
    def cached(self) -> bool:
        """A fetch succeeded at least once."""
        return self.fetched_at is not None


class CacheState:
    """Every app's :class:`Entry` plus the watch epoch; pure bookkeeping, ``now`` passed in.

    Not thread-safe; the async shell calls it from one event loop without awaiting in between.
    """

    def __init__(self, policy: CachePolicy | None = None) -> None:
        self.policy = policy if policy is not None else CachePolicy()
        self.entries: dict[str, Entry] = {}
        #: Bumped each time a watch is (re-)established; entries fetched under an older epoch are not fresh.
        self.epoch = 0

    def __repr__(self) -> str:
        return f"<CacheState apps={len(self.entries)} epoch={self.epoch} {self.policy}>"

    def entry(self, appid: str) -> Entry:
        """The entry of ``appid``, created empty on first use."""
        e = self.entries.get(appid)
        if e is None:
            e = self.entries[appid] = Entry(appid=appid)
        return e

    def is_fresh(self, e: Entry, now: float) -> bool:
        """Fetched less than ``ttl`` ago, under the current watch, and not invalidated since."""
        return (
            e.fetched_at is not None
            and now < e.fetched_at + self.policy.ttl
            and e.epoch == self.epoch
            and e.synced_generation == e.generation
        )

    def may_refresh(self, e: Entry, now: float) -> bool:
        """The minimum refresh interval has elapsed since the last attempt ended (or there was none)."""
        return e.attempted_at is None or now >= e.attempted_at + self.policy.min_refresh

    def plan(self, appid: str, now: float) -> ReadPlan:
        """What a read of ``appid`` at ``now`` must do; creates the entry. Does not start a fetch."""
        e = self.entry(appid)
        if e.inflight:
            return ReadPlan.JOIN
        if self.is_fresh(e, now) or not self.may_refresh(e, now):
            return ReadPlan.SERVE
        return ReadPlan.FETCH

    def begin_fetch(self, appid: str, now: float) -> None:
        """Mark a fetch of ``appid`` in flight (after :meth:`plan` said ``FETCH``)."""
        e = self.entry(appid)
        if e.inflight:
            raise RuntimeError(f"a fetch of {appid!r} is already in flight")
        e.inflight = True
        e.flight_started = now
        e.flight_epoch = self.epoch
        e.flight_generation = e.generation
        e.buffered.clear()

    def fetch_succeeded(self, appid: str, instances: Iterable[Instance], now: float) -> None:
        """Store the fetched list (taking ownership), replay events buffered during the flight."""
        e = self._end_flight(appid, now)
        e.instances = {ins.hostname: ins for ins in instances}
        for ev in e.buffered:
            _apply(e.instances, ev)
        e.buffered.clear()
        e.fetched_at = e.flight_started
        e.epoch = e.flight_epoch
        e.synced_generation = e.flight_generation
        e.last_error = e.error_traceback = None

    def fetch_failed(self, appid: str, error: BaseException, now: float) -> None:
        """Record ``error``; the cached list (if any) is kept and served stale."""
        e = self._end_flight(appid, now)
        e.buffered.clear()  # already applied to the cached list
        e.last_error = error
        e.error_traceback = error.__traceback__

    def fetch_aborted(self, appid: str) -> None:
        """The fetching caller was cancelled: no outcome, no attempt recorded; the next read may fetch."""
        e = self.entry(appid)
        e.inflight = False
        e.buffered.clear()

    def _end_flight(self, appid: str, now: float) -> Entry:
        e = self.entry(appid)
        if not e.inflight:
            raise RuntimeError(f"no fetch of {appid!r} is in flight")
        e.inflight = False
        # A write during the flight lifts the min refresh again: the snapshot may predate it.
        e.attempted_at = now if e.generation == e.flight_generation else None
        return e

    def apply(self, event: Event) -> bool:
        """Apply a watch event to its app's entry (taking ownership of the instance).

        Returns whether the app is cached or being fetched (otherwise the event is ignored).
        """
        e = self.entries.get(event.instance.appid)
        if e is None or not (e.cached or e.inflight):
            return False
        _apply(e.instances, event)
        if e.inflight:
            e.buffered.append(event)
        return True

    def invalidate(self, appid: str) -> None:
        """A write went through the cache: the next read of ``appid`` refetches, min refresh lifted."""
        e = self.entries.get(appid)
        if e is not None:
            e.generation += 1
            e.attempted_at = None

    def watch_started(self) -> None:
        """A watch was (re-)established: entries fetched before it may have missed events."""
        self.epoch += 1

    def status(self, appid: str, now: float) -> CacheStatus:
        """The :class:`CacheStatus` of ``appid`` (all false / ``None`` for an app never read)."""
        e = self.entries.get(appid)
        if e is None:
            return CacheStatus(appid=appid)
        return CacheStatus(
            appid=appid,
            cached=e.cached,
            stale=e.cached and (e.last_error is not None or not self.is_fresh(e, now)),
            error=e.last_error,
            fetched_at=e.fetched_at,
        )


def _apply(instances: dict[str, Instance], event: Event) -> None:
    if event.action is Action.DELETE:
        instances.pop(event.instance.hostname, None)
    else:
        instances[event.instance.hostname] = event.instance


__all__ = ["Backoff", "CachePolicy", "CacheState", "CacheStatus", "Entry", "Jitter", "ReadPlan", "Retry"]
