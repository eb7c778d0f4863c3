"""The event dispatcher of a node: delivers the core's typed events to the subscribers.

A subscriber is any object with a ``kinds`` tuple (the event types it wants) and an
``on_event(event)`` method (:class:`Subscriber`). The node subscribes its parts once, at assembly,
in this order, which is the order every event is delivered in (``server/node.py``):

1. stats — the event counters behind ``/metrics``;
2. snapshots — notes that the registry changed since the last save;
3. cluster — recomputes the peer set when this env's ``infra.discovery`` changed;
4. replication — queues the node's writes for its peers, follows the peer set;
5. event log — one structured line per register, cancel, set, guard and peer change;
6. long polls — wakes the polls of changed apps (after the writer's answer);
7. dashboard — bumps the live view's version (debounced);

then anything subscribed later (an embedder's subscriber, the xDS server).

Contract:

* :meth:`Dispatcher.publish` delivers synchronously, before it returns, so the registry is exactly
  as the event describes it (events hold live instances: see :mod:`discoverd.core.events`).
* An event published *during* a delivery (a subscriber's own consequence, e.g. the cluster's
  :class:`~discoverd.core.events.PeersChanged`) is queued and delivered after the current event has
  reached every subscriber: each subscriber sees events in publication order.
* A subscriber that raises is logged and skipped; the others still get the event, and the write
  that caused it has already happened.
* One event loop; not thread-safe.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Protocol

from discoverd.core.events import Event

log = logging.getLogger("discoverd.events.dispatch")

Handler = Callable[[Event], None]


class Subscriber(Protocol):
    """What a subscriber provides: the event types it wants, and a synchronous handler."""

    @property
    def kinds(self) -> tuple[type[Event], ...]: ...

    def on_event(self, event: Event) -> None:
        """Handle one event; must not block, may publish more events (they are queued)."""


class Dispatcher:
    """Delivers each published event to the subscribers of its type, in subscription order."""

    __slots__ = ("_delivering", "_queue", "_routes", "_subscribers")

    def __init__(self) -> None:
        self._routes: dict[type[Event], tuple[Handler, ...]] = {}
        self._subscribers: list[Subscriber] = []
        self._queue: collections.deque[Event] = collections.deque()
        self._delivering = False

    def __repr__(self) -> str:
        names = ", ".join(type(s).__name__ for s in self._subscribers)
        return f"<Dispatcher [{names}]>"

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """Every subscriber, in delivery order."""
        return tuple(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver the events of ``subscriber.kinds`` to it, after the subscribers before it."""
        self._subscribers.append(subscriber)
        for kind in subscriber.kinds:
            self._routes[kind] = (*self._routes.get(kind, ()), subscriber.on_event)

    def publish(self, event: Event | None) -> None:
        """Deliver ``event`` (``None``: nothing happened, nothing to do); see the module contract."""
        if event is None:
            return
        handlers = self._routes.get(type(event))
        if handlers is None:
            return
        if self._delivering:
            self._queue.append(event)
            return
        self._delivering = True
        try:
            _deliver(handlers, event)
            while self._queue:
                queued = self._queue.popleft()
                _deliver(self._routes[type(queued)], queued)
        finally:
            self._delivering = False


def _deliver(handlers: tuple[Handler, ...], event: Event) -> None:
    for handler in handlers:
        try:
            handler(event)
        except Exception:
            log.exception("subscriber %r failed on %s", handler, type(event).__name__)
