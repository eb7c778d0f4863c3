"""The in-process registry: the embedded default backend (``memory://``).

Registrations are keyed by ``(appid, hostname)`` and held in this process only.

**TTL.** ``register(instance, ttl=...)`` sets a deadline ``clock() + ttl``; registering again moves it.
A lapsed registration is removed with a ``delete`` event. There is no task per instance: deadlines sit in
one heap; every method first expires what has lapsed (so an injected fake clock drives expiry without any
waiting — see :meth:`MemoryRegistry.expire`), and one ``loop.call_at`` timer, armed for the earliest
deadline, expires registrations nobody reads. The timer is cancelled by :meth:`MemoryRegistry.aclose`.

**Watch.** :meth:`MemoryRegistry.watch` registers the watcher before returning, so it sees every change
made after the call and none before. Events are queued per watcher (bounded, ``watch_queue`` events)
and publishing never waits: a slow watcher never blocks a registration. When a watcher's queue is full,
the watcher *overflows*: it stops receiving events, the consumer still gets the events queued before the
overflow (a consistent prefix, in order), and then the iterator raises
:class:`~discoverd.backends.base.WatchOverflow`. The consumer must then re-read the state
(``get_service``) and watch again — dropping events silently would leave it believing in instances
that are gone.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from discoverd.backends.base import Registry, RegistryClosed
from discoverd.backends.watch import Watch, WatchHub
from discoverd.errors import BadRequest
from discoverd.model import Action, Event, Instance, diff_instances

#: Default bound of each watcher's event queue.
DEFAULT_WATCH_QUEUE = 1024


@dataclass(slots=True)
class _Record:
    instance: Instance
    deadline: float | None
    seq: int


class MemoryRegistry(Registry):
    """An in-process :class:`~discoverd.backends.base.Registry` with TTLs and bounded watch queues.

    * ``clock`` (``time.monotonic``) — seconds; inject a fake one to test TTLs without waiting;
    * ``watch_queue`` (1024) — events each watcher may fall behind before it overflows.

    Task-safe within one event loop (no method awaits while it changes state). Owns no task: only a
    timer handle, cancelled by :meth:`aclose` (idempotent; afterwards every method raises
    :class:`RegistryClosed` and open watch iterators end).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, watch_queue: int = DEFAULT_WATCH_QUEUE
    ) -> None:
        if watch_queue < 1:
            raise ValueError("watch_queue must be >= 1")
        super().__init__()
        self._clock = clock
        self._apps: dict[str, dict[str, _Record]] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._hub = WatchHub(watch_queue)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        size = sum(len(hosts) for hosts in self._apps.values())
        return f"<MemoryRegistry {state} apps={len(self._apps)} instances={size} watchers={self.watchers}>"

    @property
    def watchers(self) -> int:
        """The number of watch iterators currently receiving events."""
        return len(self._hub)

    async def __aenter__(self) -> MemoryRegistry:
        return self

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        """Add or replace ``(appid, hostname)`` (a copy is stored); emits ``create`` / ``update``.

        Registering identical content again emits nothing but still moves the TTL deadline. ``ttl=None``
        never lapses. Raises :class:`BadRequest` for an empty appid/hostname or a non-positive ttl.
        """
        self._check_open()
        _validate(instance, ttl)
        now = self._clock()
        self._expire(now)
        hosts = self._apps.setdefault(instance.appid, {})
        old = hosts.get(instance.hostname)
        rec = _Record(instance.copy(), None if ttl is None else now + ttl, next(self._seq))
        hosts[instance.hostname] = rec
        if rec.deadline is not None:
            heapq.heappush(self._heap, (rec.deadline, rec.seq, instance.appid, instance.hostname))
            self._arm(now)
        before = {} if old is None else {instance.hostname: old.instance}
        for ev in diff_instances(before, {instance.hostname: rec.instance}):
            self._publish(ev)

    async def deregister(self, instance: Instance) -> None:
        """Remove ``(appid, hostname)`` with a ``delete`` event; unknown instances are ignored."""
        self._check_open()
        self._expire(self._clock())
        self._remove(instance.appid, instance.hostname)

    async def get_service(self, appid: str) -> list[Instance]:
        """Copies of the instances of ``appid``, sorted by hostname (``[]`` when none)."""
        self._check_open()
        self._expire(self._clock())
        hosts = self._apps.get(appid, {})
        return [hosts[h].instance.copy() for h in sorted(hosts)]

    async def list_services(self) -> list[str]:
        """Sorted appids with at least one instance."""
        self._check_open()
        self._expire(self._clock())
        return sorted(self._apps)

    def watch(self, appid: str | None = None) -> Watch:
        """Events of ``appid`` (or of every app) from now on; see the module docstring for overflow."""
        self._check_open()
        self._expire(self._clock())
        return self._hub.watch(appid)

    def expire(self) -> int:
        """Remove the registrations whose TTL has lapsed at ``clock()`` now; returns how many.

        Every method does this first and a timer does it at the earliest deadline; call it to drive
        expiry from a fake clock.
        """
        self._check_open()
        return self._expire(self._clock())

    async def aclose(self) -> None:
        """Close the callers, forget everything, end every watch iterator, cancel the timer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.close_callers()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hub.close()
        self._apps.clear()
        self._heap.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryClosed("the memory registry is closed")

    def _remove(self, appid: str, hostname: str) -> None:
        hosts = self._apps.get(appid)
        rec = None if hosts is None else hosts.pop(hostname, None)
        if hosts is None or rec is None:
            return
        if not hosts:
            del self._apps[appid]
        self._publish(Event(Action.DELETE, rec.instance))

    def _expire(self, now: float) -> int:
        expired = 0
        while self._heap and self._heap[0][0] <= now:
            _, seq, appid, hostname = heapq.heappop(self._heap)
            rec = self._apps.get(appid, {}).get(hostname)
            if rec is not None and rec.seq == seq:  # else: re-registered or removed since
                self._remove(appid, hostname)
                expired += 1
        return expired

    def _arm(self, now: float) -> None:
        """Make sure the timer fires no later than the earliest deadline in the heap."""
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, due - now), self._on_timer)
        self._timer_due = due

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        if self._closed:
            return
        now = self._clock()
        self._expire(now)
        self._arm(now)

    def _publish(self, event: Event) -> None:
        self._hub.publish([event])


def _validate(instance: Instance, ttl: float | None) -> None:
    if not instance.appid or not instance.hostname:
        raise BadRequest("register: appid and hostname must not be empty")
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise BadRequest(f"register: ttl must be a positive number of seconds, got {ttl!r}")
