"""The event counts of a node (exported by ``server/metrics.py``) and the subscriber that keeps them.

Two kinds of counts live in :class:`Counters`: registry events, counted by :class:`EventCounter`
from the dispatcher (``registers``, ``cancels``, ``sets``, ``evictions``), and request outcomes,
counted by the components that answer them (``renews`` by the endpoints; ``poll_answers``,
``poll_not_modified``, ``poll_refused`` by the long polls). Plain ints, cheap to bump.
"""

from __future__ import annotations

from typing import ClassVar

from discoverd.core.events import Cancelled, Event, Evicted, InstancesSet, Registered, Source

_REQUESTS = frozenset({Source.CLIENT, Source.ZONE, Source.PEER})


class Counters:
    """Monotonic counts of one node."""

    __slots__ = (
        "cancels",
        "evictions",
        "poll_answers",
        "poll_not_modified",
        "poll_refused",
        "registers",
        "renews",
        "sets",
    )

    def __init__(self) -> None:
        self.registers = self.renews = self.cancels = self.sets = 0
        self.poll_answers = self.poll_not_modified = self.poll_refused = self.evictions = 0

    def __repr__(self) -> str:
        return f"Counters({self.as_dict()})"

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class EventCounter:
    """Subscriber: counts the registers, cancels and sets that protocol requests made (clients' and
    peers'; not the node's own registration, repairs, sync or restore), and evicted instances."""

    kinds: ClassVar[tuple[type[Event], ...]] = (Registered, Cancelled, InstancesSet, Evicted)

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def __repr__(self) -> str:
        return f"<EventCounter {self.counters!r}>"

    def on_event(self, event: Event) -> None:
        c = self.counters
        if isinstance(event, Registered):
            c.registers += event.source in _REQUESTS
        elif isinstance(event, Cancelled):
            c.cancels += event.source in _REQUESTS
        elif isinstance(event, InstancesSet):
            c.sets += 1
        elif isinstance(event, Evicted):
            c.evictions += len(event.instances)
