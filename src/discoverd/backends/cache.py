"""A caching wrapper for any registry (go-micro ``registry/cache``, without its weaknesses).

:class:`CachedRegistry` is itself a :class:`~discoverd.backends.base.Registry`:

* ``get_service`` is answered from memory while the app's entry is fresh (``ttl``). On a miss or expiry it
  fetches from the wrapped registry — single flight: concurrent callers for one app share one fetch.
* One background watcher on ``registry.watch()`` applies events to the cached apps, so the cache follows
  changes without refetching. When the watch fails or ends it is re-opened after a capped exponential
  backoff with jitter; entries fetched before the new watch are refetched on their next read (events of
  the gap are lost).
* Stale on error: when a fetch fails, ``get_service`` returns the last good list (it never raises while one
  is cached) and records the error — see :meth:`CachedRegistry.status`. An error never empties a cached
  list. With nothing cached, the error is raised. A per-app minimum interval between fetch attempts
  (``min_refresh``) keeps a failing backend from being hammered.
* ``register`` / ``deregister`` / ``list_services`` / ``watch`` pass through; a write also makes the next
  read of its app refetch (read-your-writes without waiting for the watch event).

The rules live in :mod:`discoverd.core.cache`; this module does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from discoverd.backends.base import Registry, RegistryClosed, Watcher
from discoverd.core.cache import Backoff, CachePolicy, CacheState, CacheStatus, ReadPlan, Retry
from discoverd.errors import Unavailable
from discoverd.model import Event, Instance

log = logging.getLogger("discoverd.cache")

#: The watcher restart backoff used when none is given: 0.1 s doubling up to 30 s, full jitter.
DEFAULT_BACKOFF = Backoff()


class CachedRegistry(Registry):
    """A read cache in front of ``registry``; see the module docstring for the behaviour.

    * ``ttl`` (60 s) — how long a fetched list is served without asking ``registry``;
    * ``min_refresh`` (1 s) — minimum time between fetch attempts for one app;
    * ``backoff`` (:data:`DEFAULT_BACKOFF`) — delays between watcher restarts;
    * ``clock`` (``time.monotonic``) — seconds; ``sleep`` (``asyncio.sleep``) — awaited between watcher
      restarts; both injectable for tests;
    * ``own`` (``False``) — whether :meth:`aclose` also closes ``registry``. Without it the wrapped
      registry stays open, and watch iterators obtained through the cache (they are the wrapped
      registry's) end only when it closes.

    The watcher starts with the first ``get_service`` (or ``async with``) and runs in one task that owns
    an ``asyncio.TaskGroup``. Task-safe within one event loop.
    """

    def __init__(
        self,
        registry: Registry,
        ttl: float = 60.0,
        *,
        min_refresh: float = 1.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        own: bool = False,
    ) -> None:
        super().__init__()
        self.registry = registry
        self._state = CacheState(CachePolicy(ttl=ttl, min_refresh=min_refresh))
        self._backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._own = own
        self._flights: dict[str, asyncio.Future[bool]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._stopped = False
        self._closed = False
        self._watching = False
        self._watch_error: BaseException | None = None
        self._current: AsyncIterator[Event] | None = None  # the open watch, closed by whoever ends it

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._stopped:
            state = "stopped"
        else:
            state = "watching" if self._watching else "not watching"
        return f"<CachedRegistry over {self.registry!r} apps={len(self._state.entries)} {state}>"

    @property
    def watching(self) -> bool:
        """A watch on the wrapped registry is open and being applied right now."""
        return self._watching

    @property
    def watch_error(self) -> BaseException | None:
        """Why the watcher is down (it is retrying), ``None`` while it is healthy or not started."""
        return self._watch_error

    def status(self, appid: str) -> CacheStatus:
        """Whether ``appid`` is cached, whether its list is stale, and the last fetch error. Never blocks."""
        return self._state.status(appid, self._clock())

    async def get_service(self, appid: str) -> list[Instance]:
        """Copies of the instances of ``appid``: cached while fresh, else fetched (single flight).

        When the fetch fails and a list is cached, returns that stale list (see :meth:`status`);
        otherwise raises the wrapped registry's error (callers joining the failed fetch, and callers
        within ``min_refresh`` of it, get the same error).
        """
        self._check_open()
        self._start_watcher()
        while True:
            now = self._clock()
            plan = self._state.plan(appid, now)
            if plan is ReadPlan.FETCH:
                return await self._fetch(appid, now)
            if plan is ReadPlan.JOIN and not await asyncio.shield(self._flights[appid]):
                continue  # the fetching caller was cancelled: plan again
            return self._serve(appid)

    async def _fetch(self, appid: str, now: float) -> list[Instance]:
        flight: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._flights[appid] = flight
        self._state.begin_fetch(appid, now)
        finished = False
        try:
            instances = await self.registry.get_service(appid)
        except Exception as err:
            self._state.fetch_failed(appid, err, self._clock())
            finished = True
            log.warning("cache: fetching %r failed: %r", appid, err)
        else:
            self._state.fetch_succeeded(appid, instances, self._clock())
            finished = True
        finally:
            del self._flights[appid]
            if not finished:
                self._state.fetch_aborted(appid)
            flight.set_result(finished)
        return self._serve(appid)

    def _serve(self, appid: str) -> list[Instance]:
        e = self._state.entry(appid)
        if e.cached:
            return [ins.copy() for ins in e.instances.values()]
        if e.last_error is None:  # pragma: no cover - plan() never serves an entry never attempted
            raise RuntimeError(f"cache: nothing to serve for {appid!r}")
        raise e.last_error.with_traceback(e.error_traceback)

    async def register(self, instance: Instance, ttl: float | None = None) -> None:
        """Pass through; the next read of ``instance.appid`` refetches."""
        self._check_open()
        await self.registry.register(instance, ttl)
        self._state.invalidate(instance.appid)

    async def deregister(self, instance: Instance) -> None:
        """Pass through; the next read of ``instance.appid`` refetches."""
        self._check_open()
        await self.registry.deregister(instance)
        self._state.invalidate(instance.appid)

    async def list_services(self) -> list[str]:
        """Pass through (not cached)."""
        self._check_open()
        return await self.registry.list_services()

    def watch(self, appid: str | None = None) -> Watcher:
        """Pass through: the wrapped registry's watch iterator."""
        self._check_open()
        return self.registry.watch(appid)

    async def __aenter__(self) -> CachedRegistry:
        """Start the watcher now rather than on the first ``get_service``."""
        self._check_open()
        self._start_watcher()
        return self

    def stop(self) -> None:
        """Stop the watcher for good; synchronous, idempotent, does not wait.

        The cache keeps serving, driven by ``ttl`` alone. :meth:`aclose` waits for the watcher to end.
        """
        self._stopped = True
        self._stop.set()

    async def aclose(self) -> None:
        """Close the callers, stop the watcher and wait for it; close the wrapped registry if ``own``.
        Idempotent.

        Afterwards every method raises :class:`RegistryClosed`.
        """
        if self._closed:
            return
        self._closed = True
        await self.close_callers()
        self.stop()
        if self._runner is not None:
            await self._runner
        if self._own:
            await self.registry.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryClosed("the cached registry is closed")

    def _start_watcher(self) -> None:
        """Open the first watch here (so it precedes the first fetch) and start the watcher task."""
        if self._runner is not None or self._stopped:
            return
        first = self._open_watch()
        self._runner = asyncio.get_running_loop().create_task(
            self._supervise(first), name=f"discoverd-cache-watcher-{id(self):x}"
        )

    async def _supervise(self, first: AsyncIterator[Event] | None) -> None:
        """The watcher's task: owns the TaskGroup of the watch loop; ends on :meth:`stop`."""
        try:
            async with asyncio.TaskGroup() as tg:
                loop = tg.create_task(self._watch_loop(first))
                stop = tg.create_task(self._stop.wait())
                await asyncio.wait({loop, stop}, return_when=asyncio.FIRST_COMPLETED)
                loop.cancel()
                stop.cancel()
        finally:
            self._watching = False
            if self._current is not None:  # stopped before the loop got to consume it
                await _aclose(self._current)
                self._current = None

    async def _watch_loop(self, first: AsyncIterator[Event] | None) -> None:
        retry = Retry(self._backoff)
        it = first
        while True:
            uptime = 0.0
            if it is not None:
                started = self._clock()
                self._watch_error = await self._consume(it, retry)
                uptime = self._clock() - started
            if isinstance(self._watch_error, RegistryClosed):
                log.info("cache: the wrapped registry is closed; watcher stops")
                return
            delay = retry.failed(uptime)
            log.warning("cache: watch failed (%r); restarting in %.3f s", self._watch_error, delay)
            await self._sleep(delay)
            it = self._open_watch()

    def _open_watch(self) -> AsyncIterator[Event] | None:
        try:
            it = self.registry.watch()
        except Exception as err:
            self._watch_error = err
            return None
        self._state.watch_started()
        self._watch_error = None
        self._watching = True
        self._current = it
        return it

    async def _consume(self, it: AsyncIterator[Event], retry: Retry) -> BaseException:
        """Apply events until the watch fails or ends; returns why it stopped."""
        try:
            async for event in it:
                retry.succeeded()
                self._state.apply(event)
        except Exception as err:
            return err
        finally:
            self._watching = False
            self._current = None
            await _aclose(it)
        return Unavailable("the registry watch ended")


async def _aclose(it: AsyncIterator[Event]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as err:  # closing a broken watch may fail too; nothing left to do about it
        log.debug("cache: closing a watch failed: %r", err)
