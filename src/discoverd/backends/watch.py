"""Watch iterators shared by the backends: a hub that fans events out to bounded per-watcher queues.

A watcher sees the events published after it was created, each as its own copy; publishing never
waits; a watcher more than ``maxsize`` events behind stops receiving, drains what it had, then raises
:class:`WatchOverflow`. A watcher dropped without ``aclose`` is forgotten when garbage-collected.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator

from discoverd.backends.base import WatchOverflow
from discoverd.model import Event


class WatchHub:
    """The open watchers of one registry; :meth:`publish` is synchronous and never blocks."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("watch_queue must be >= 1")
        self._maxsize = maxsize
        self._watchers: weakref.WeakSet[Watch] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self._watchers)

    def watch(self, appid: str | None) -> Watch:
        w = Watch(self, appid, self._maxsize)
        self._watchers.add(w)
        return w

    def publish(self, events: list[Event]) -> None:
        for ev in events:
            for w in list(self._watchers):
                if w.appid is None or w.appid == ev.instance.appid:
                    w._offer(Event(ev.action, ev.instance.copy()))

    def close(self) -> None:
        """End every watcher (their pending events are dropped)."""
        for w in list(self._watchers):
            w._finish(None, discard=True)
        self._watchers.clear()


class Watch(AsyncIterator[Event]):
    """One watcher: an async iterator of :class:`Event` for one app (or all); :meth:`aclose` stops it.

    Ends (``StopAsyncIteration``) after :meth:`aclose` or when the registry closes. One consumer task.
    """

    def __init__(self, hub: WatchHub, appid: str | None, maxsize: int) -> None:
        self._hub = hub
        self.appid = appid
        self._maxsize = maxsize
        self._pending: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._done = False
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "ended" if self._done else "open"
        return f"<Watch appid={self.appid!r} {state} pending={len(self._pending)}>"

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._done:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def aclose(self) -> None:
        """Stop watching; pending events are dropped. Idempotent."""
        self._finish(None, discard=True)

    def _offer(self, event: Event) -> None:
        if self._done:
            return
        if len(self._pending) >= self._maxsize:
            self._finish(WatchOverflow(f"watcher fell {self._maxsize} events behind; events were lost"))
            return
        self._pending.append(event)
        self._wakeup.set()

    def _finish(self, error: BaseException | None, *, discard: bool = False) -> None:
        if discard:
            self._pending.clear()
            self._error = None
        if self._done:
            return
        self._done = True
        self._error = error
        self._hub._watchers.discard(self)
        self._wakeup.set()
