"""What a :class:`~discoverd.backends.redis.RedisRegistry` shares with its background loops.

The registry (the public calls) and :mod:`discoverd.backends.redis_session` (the pub/sub session, the
heartbeat and the reaper) work on one :class:`SharedState`: the registry creates it and hands it to the
runner explicitly; nothing else holds it. Its attributes are public and documented below; the few
operations both sides need (follow an app, apply changes, remember own writes, stop) are its methods.
Everything runs on one event loop, and no method awaits, so each call is atomic with respect to the
other tasks.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from discoverd.backends.redis_config import RedisConfig
from discoverd.backends.redis_state import NodeTable
from discoverd.backends.watch import WatchHub

#: Seconds during which messages about a field this object just wrote are taken as its own echoes.
OWN_GRACE: Final = 2.0
#: What :meth:`SharedState.request_stop` puts on :attr:`SharedState.requests` to wake the session.
WAKE: Final = ""


class RedisState(enum.Enum):
    """The connection state of a :class:`~discoverd.backends.redis.RedisRegistry`.

    * ``STATIC`` — no Redis at all (``RedisRegistry.static``); stays so until closed;
    * ``IDLE`` — not started yet (starts on first use);
    * ``CONNECTING`` — first connection attempt under way;
    * ``CONNECTED`` — the pub/sub connection is up, every followed app subscribed and read;
    * ``DISCONNECTED`` — an attempt failed or the connection broke; retrying with backoff;
    * ``CLOSED`` — after ``aclose`` / ``orphan``; never reopens.
    """

    STATIC = "static"
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


@dataclass(eq=False, repr=False, kw_only=True)
class SharedState:
    """The state of one Redis registry object that its background loops read and write.

    What is known (written by both sides):

    * ``config`` — the timings;
    * ``table`` — own registrations, the followed apps' nodes as read from Redis, static nodes;
    * ``hub`` — the watchers; every change of ``table`` is published to it (see :meth:`apply`);
    * ``state`` — the connection state; the registry sets ``CONNECTING``, the session the others.

    What is followed (the registry asks, the session does):

    * ``followed`` — app → an event set once the app was subscribed *and* read; an app is in it from
      the moment it is wanted (:meth:`want`);
    * ``follow_all`` / ``all_ready`` — every app is wanted (``watch()``) / that was done once;
    * ``requests`` — apps for the session to subscribe and read (``None`` = every app; :data:`WAKE` =
      nothing, look at ``stop``);
    * ``announce`` — apps whose first read produces events (apps born after a ``watch()``);
    * ``loading`` — app → changes that arrived while a read of it is in flight, applied after it.

    Coordination:

    * ``write_lock`` — held around every write of own fields (register, deregister, close, heartbeat),
      so a deregistration never interleaves with a heartbeat that would write the field again;
    * ``kick`` — set to run the heartbeat at once (after a reconnection, at stop);
    * ``stop`` — set once, at close: every loop ends.
    """

    config: RedisConfig
    state: RedisState
    table: NodeTable = field(default_factory=NodeTable)
    hub: WatchHub = field(init=False)
    followed: dict[str, asyncio.Event] = field(default_factory=dict)
    follow_all: bool = False
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)
    requests: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    announce: set[str] = field(default_factory=set)
    loading: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: (app, addr) -> (weight, until): own writes within their grace period (see note_own).
    _own_writes: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.hub = WatchHub(self.config.watch_queue)

    def want(self, app: str, *, announce: bool) -> asyncio.Event:
        """Follow ``app`` from now on: queue it for the session unless already followed. Returns the
        event set once it was read; with ``announce``, that first read produces events."""
        loaded = self.followed.get(app)
        if loaded is None:
            loaded = self.followed[app] = asyncio.Event()
            if announce:
                self.announce.add(app)
            self.requests.put_nowait(app)
        return loaded

    def want_all(self) -> asyncio.Event:
        """Follow every app from now on (once); returns :attr:`all_ready`."""
        if not self.follow_all:
            self.follow_all = True
            self.requests.put_nowait(None)
        return self.all_ready

    def apply(self, app: str, changes: Iterable[tuple[str, int]], *, silent: bool = False) -> None:
        """Apply ``(addr, weight)`` changes of ``app`` (weight 0 = removed) to the remote view and
        publish the resulting events (none with ``silent``) — or, while a read of ``app`` is in flight,
        only buffer them in :attr:`loading`."""
        buffered = self.loading.get(app)
        if buffered is not None:
            buffered.extend(changes)
            return
        for addr, weight in changes:
            self.table.set_remote(app, addr, weight)
        events = self.table.refresh(app)
        if not silent:
            self.hub.publish(events)

    def note_own(self, app: str, writes: Iterable[tuple[str, int]]) -> None:
        """Remember own ``(addr, weight)`` writes of ``app`` for :data:`OWN_GRACE` seconds: until then,
        messages and reads about those fields are stale echoes of what was already applied locally."""
        until = asyncio.get_running_loop().time() + OWN_GRACE
        for addr, weight in writes:
            self._own_writes[(app, addr)] = (weight, until)

    def own_weight(self, app: str, addr: str) -> int | None:
        """The weight this object last wrote for ``addr`` of ``app`` within the grace period, else
        ``None`` (and the expired entry is forgotten)."""
        entry = self._own_writes.get((app, addr))
        if entry is None:
            return None
        if asyncio.get_running_loop().time() > entry[1]:
            del self._own_writes[(app, addr)]
            return None
        return entry[0]

    def own_weights(self, app: str) -> dict[str, int]:
        """``addr -> weight`` of every own write of ``app`` still within the grace period (these are
        newer than anything a read in flight may have returned)."""
        addrs = [addr for (a, addr) in list(self._own_writes) if a == app]
        weights = {addr: self.own_weight(app, addr) for addr in addrs}
        return {addr: w for addr, w in weights.items() if w is not None}

    def request_stop(self) -> None:
        """Ask every background loop to end: set :attr:`stop`, wake the heartbeat and the session's
        request loop. Idempotent; the caller then awaits the runner task."""
        self.stop.set()
        self.kick.set()
        self.requests.put_nowait(WAKE)


__all__ = ["OWN_GRACE", "WAKE", "RedisState", "SharedState"]
