"""Where a caller's instances come from: the :class:`InstanceSource` protocol, and its registry adapter.

A caller (:class:`~discoverd.calling.caller.AsyncCaller`) resolves an appid to instances on every
call, so it needs a *locally watched* view, not a request per call. Anything that can keep such a
view implements :class:`InstanceSource`: :class:`~discoverd.client.async_client.AsyncClient` does (its
long poll keeps the view), and :class:`RegistrySource` turns any registry backend into one.

:class:`RegistrySource` needs only what :class:`WatchedRegistry` names (``get_service`` and ``watch``),
so this module depends on no backend. Per app, on the first :meth:`RegistrySource.instances`:

1. ``registry.watch(appid)`` is opened **first**, then ``registry.get_service(appid)`` is read, so no
   change between the two is missed (a change already in the read is applied again, harmlessly);
2. the view is handed to the source's one background task, which applies the watch's events to it;
3. when the watch fails or ends (an overflow, an outage the backend reports that way), the last view
   keeps being served while a new watch and a new read are tried after a capped, jittered backoff;
   the new read replaces the view. An error never empties a view.

Later calls read the view without any round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Final, Protocol

from discoverd.core.backoff import Backoff, Retry
from discoverd.core.balancing import instance_key
from discoverd.errors import DiscoverdError
from discoverd.model import UP, Action, Event, Instance

log = logging.getLogger("discoverd.calling")

#: Delays between attempts to watch and read an app again after its watch failed: 0.1 s doubling to 5 s.
RESYNC_BACKOFF: Final = Backoff(base=0.1, cap=5.0)


class InstanceSource(Protocol):
    """A locally watched view of the UP instances of apps, with the consumer's preferred zone.

    Contract shared by every method:

    * instances are those with status UP, of every zone (of the source's own environment, for sources
      that have one);
    * the returned lists and instances are read-only for the receiver (copy before changing them);
    * methods are safe to call from any task of the event loop that runs the source.
    """

    @property
    def zone(self) -> str:
        """The zone the consumer runs in; a caller prefers instances of this zone (``""``: none)."""
        ...

    async def instances(self, appid: str) -> Sequence[Instance]:
        """The current UP instances of ``appid`` (empty when it has none).

        The first call for an app starts watching it and may wait for the backend once; later calls
        read the local view without a round trip. While the backend is unreachable, the last good
        view is returned. Raises :class:`~discoverd.errors.DiscoverdError` only when no view exists
        yet and the backend cannot be asked.
        """
        ...

    def subscribe(self, appid: str) -> AsyncIterator[Sequence[Instance]]:
        """Yield the UP instances of ``appid`` once known, then after every change.

        Changes may be coalesced (a slow consumer sees the latest list, not every intermediate one).
        The iterator ends when the source closes; closing the iterator stops the subscription.
        """
        ...

    def zone_weights(self, appid: str) -> Mapping[str, int] | None:
        """How to split calls to ``appid`` across provider zones (zone → weight), if the source
        knows; ``None`` means "stay in :attr:`zone` while it has candidates, else use all zones"."""
        ...


class WatchedRegistry(Protocol):
    """What :class:`RegistrySource` needs of a registry (every
    :class:`~discoverd.backends.base.Registry` has it)."""

    async def get_service(self, appid: str) -> list[Instance]:
        """The current instances of ``appid`` (copies)."""
        ...

    def watch(self, appid: str | None = None) -> AsyncIterator[Event]:
        """Events of ``appid`` from the moment of the call on; the iterator has ``aclose()``."""
        ...


class _View:
    """The instances of one app as last known, and a version bumped when its UP list changes."""

    def __init__(self, instances: Iterable[Instance]) -> None:
        self._by_key = {instance_key(i): i for i in instances}
        self.up: list[Instance] = self._up()
        self.version = 1
        self._changed = asyncio.Event()

    def _up(self) -> list[Instance]:
        return [self._by_key[k] for k in sorted(self._by_key) if self._by_key[k].status == UP]

    def _refresh(self) -> None:
        up = self._up()
        if up != self.up:
            self.up = up
            self.version += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def apply(self, event: Event) -> None:
        key = instance_key(event.instance)
        if event.action is Action.DELETE:
            self._by_key.pop(key, None)
        else:
            self._by_key[key] = event.instance
        self._refresh()

    def replace(self, instances: Iterable[Instance]) -> None:
        self._by_key = {instance_key(i): i for i in instances}
        self._refresh()

    async def changed(self, seen: int) -> None:
        """Return once :attr:`version` differs from ``seen`` or :meth:`wake` was called."""
        if self.version == seen:
            await self._changed.wait()

    def wake(self) -> None:
        """Release every waiter of :meth:`changed` (the source is closing)."""
        self._changed.set()


class RegistrySource:
    """An :class:`InstanceSource` over a registry: a watched local view per app (module docstring).

    ``zone`` is the consumer's zone (``""``: no zone preference); a registry carries no scheduler
    weights, so :meth:`zone_weights` is ``None``. ``backoff`` paces the attempts to watch an app again.
    Task-safe in one event loop. Starts one background task on the first :meth:`instances`; whoever
    made the source calls :meth:`aclose` (idempotent: stops the task, closes the watches, ends the
    subscriptions; afterwards :meth:`instances` raises :class:`~discoverd.errors.DiscoverdError`).
    """

    def __init__(
        self, registry: WatchedRegistry, *, zone: str = "", backoff: Backoff = RESYNC_BACKOFF
    ) -> None:
        self._registry = registry
        self._zone = zone
        self._backoff = backoff
        self._views: dict[str, _View] = {}
        self._flights: dict[str, asyncio.Future[BaseException | None]] = {}
        self._handoff: asyncio.Queue[tuple[str, _View, AsyncIterator[Event]]] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        apps = sorted(self._views)
        return f"<RegistrySource over {self._registry!r} zone={self._zone!r} apps={apps} {state}>"

    @property
    def zone(self) -> str:
        return self._zone

    def zone_weights(self, appid: str) -> Mapping[str, int] | None:
        return None

    async def instances(self, appid: str) -> list[Instance]:
        """See :meth:`InstanceSource.instances`. Concurrent first calls for one app share one read
        (and its error)."""
        while True:
            if self._closed:
                raise DiscoverdError("the instance source is closed")
            view = self._views.get(appid)
            if view is not None:
                return list(view.up)
            flight = self._flights.get(appid)
            if flight is None:
                return list((await self._first_read(appid)).up)
            error = await asyncio.shield(flight)
            if error is not None:
                raise error

    async def _first_read(self, appid: str) -> _View:
        """Watch, then read; hand the view and its watch to the background task."""
        flight: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._flights[appid] = flight
        watch: AsyncIterator[Event] | None = None
        outcome: BaseException | None = None
        try:
            watch = self._registry.watch(appid)
            view = _View(await self._registry.get_service(appid))
            self._views[appid] = view
            self._start()
            self._handoff.put_nowait((appid, view, watch))
            watch = None
            return view
        except Exception as exc:
            outcome = exc
            raise
        finally:
            del self._flights[appid]
            flight.set_result(outcome)  # None after a cancellation: a joiner then reads by itself
            if watch is not None:
                await _aclose(watch)

    async def subscribe(self, appid: str) -> AsyncIterator[list[Instance]]:
        """See :meth:`InstanceSource.subscribe`; while the app cannot be read a first time, it is
        tried again with backoff."""
        retry = Retry(self._backoff)
        seen = 0
        while not self._closed:
            try:
                await self.instances(appid)
            except DiscoverdError as exc:
                log.debug("calling: %s not readable yet: %r", appid, exc)
                await asyncio.sleep(retry.failed())
                continue
            view = self._views[appid]
            if view.version != seen:
                seen = view.version
                yield list(view.up)
                continue
            await view.changed(seen)

    async def aclose(self) -> None:
        """Stop following every app and end the subscriptions. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        while not self._handoff.empty():
            await _aclose(self._handoff.get_nowait()[2])
        for view in self._views.values():
            view.wake()

    # -- the background task ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name=f"discoverd-registry-source-{id(self):x}"
            )

    async def _run(self) -> None:
        """Owns one TaskGroup with a follower per app; ends when cancelled by :meth:`aclose`."""
        async with asyncio.TaskGroup() as tg:
            while True:
                appid, view, watch = await self._handoff.get()
                tg.create_task(self._follow(appid, view, watch), name=f"discoverd-follow-{appid}")

    async def _follow(self, appid: str, view: _View, watch: AsyncIterator[Event]) -> None:
        """Apply ``watch`` to ``view``; when it stops, watch and read again (the view is kept meanwhile)."""
        retry = Retry(self._backoff)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            why = await _consume(watch, view, retry)
            log.info("calling: the watch of %s stopped (%s); serving the last view", appid, why)
            watch = await self._resync(appid, view, retry, loop.time() - started)

    async def _resync(self, appid: str, view: _View, retry: Retry, uptime: float) -> AsyncIterator[Event]:
        """A new watch of ``appid`` after a read that replaced ``view``; retried with backoff."""
        while True:
            await asyncio.sleep(retry.failed(uptime))
            uptime = 0.0
            try:
                watch = self._registry.watch(appid)
            except Exception as exc:
                log.debug("calling: watching %s again failed: %r", appid, exc)
                continue
            try:
                view.replace(await self._registry.get_service(appid))
            except Exception as exc:
                log.debug("calling: reading %s again failed: %r", appid, exc)
                await _aclose(watch)
                continue
            except BaseException:
                await _aclose(watch)
                raise
            return watch


async def _consume(watch: AsyncIterator[Event], view: _View, retry: Retry) -> str:
    """Apply the events of ``watch`` to ``view`` until it fails or ends; close it; say why it stopped."""
    try:
        async for event in watch:
            view.apply(event)
            retry.succeeded()
    except Exception as exc:
        return repr(exc)
    finally:
        await _aclose(watch)
    return "it ended"


async def _aclose(watch: AsyncIterator[Event]) -> None:
    """Close a watch iterator; a failure to close a broken watch is logged, not raised."""
    close = getattr(watch, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception as exc:
        log.debug("calling: closing a watch failed: %r", exc)


__all__ = ["RESYNC_BACKOFF", "InstanceSource", "RegistrySource", "WatchedRegistry"]
