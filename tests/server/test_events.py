"""The event dispatcher and a subscriber added from outside: one class and one registration line."""

from __future__ import annotations

import logging
from typing import ClassVar

import aiohttp
import pytest

from discoverd.core.events import (
    Cancelled,
    Event,
    Evicted,
    InstancesSet,
    PeersChanged,
    PeerSet,
    Registered,
    Renewed,
    Source,
)
from discoverd.model import Instance
from discoverd.server.events import Dispatcher
from discoverd.server.runner import Node
from tests.helpers import Wire, eventually


class Tally:
    """A subscriber written for this test: counts the events of a node by type and source."""

    kinds: ClassVar[tuple[type[Event], ...]] = (Registered, Renewed, Cancelled, InstancesSet, Evicted)

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_event(self, event: Event) -> None:
        source = getattr(event, "source", None)
        self.seen.append((type(event).__name__, source.value if isinstance(source, Source) else ""))


async def test_a_new_subscriber_costs_one_registration_line(node: Node, http: aiohttp.ClientSession) -> None:
    tally = Tally()
    node.events.subscribe(tally)  # the one line
    wire = Wire(http, node.address)
    await wire.register("demo", "h1")
    await wire.post("renew", {"zone": "sh001", "env": "dev", "appid": "demo", "hostname": "h1"})
    await wire.post("set", {"zone": "sh001", "env": "dev", "appid": "demo", "hostname": "h1", "status": "2"})
    body, _ = await wire.post("set", {"zone": "sh001", "env": "dev", "appid": "demo", "hostname": "nobody"})
    assert body["code"] == -400  # refused here, still published (replication forwards it)
    await wire.post("cancel", {"zone": "sh001", "env": "dev", "appid": "demo", "hostname": "h1"})
    await wire.post("renew", {"zone": "sh001", "env": "dev", "appid": "demo", "hostname": "h1"})  # -404
    await eventually(lambda: len(tally.seen) >= 5, what="five events")
    assert tally.seen == [
        ("Registered", "client"),
        ("Renewed", "client"),
        ("InstancesSet", "client"),
        ("InstancesSet", "client"),
        ("Cancelled", "client"),
    ]
    assert node.events.subscribers[-1] is tally  # after the node's own subscribers


def ins(host: str) -> Instance:
    return Instance(zone="z", env="dev", appid="a", hostname=host)


class Recorder:
    kinds: ClassVar[tuple[type[Event], ...]] = (Registered, PeersChanged)

    def __init__(self, name: str, log: list[str], dispatcher: Dispatcher | None = None) -> None:
        self.name, self.log, self.dispatcher = name, log, dispatcher

    def on_event(self, event: Event) -> None:
        label = event.instance.hostname if isinstance(event, Registered) else "peers"
        self.log.append(f"{self.name}:{label}")
        if self.dispatcher is not None and isinstance(event, Registered):
            self.dispatcher.publish(PeersChanged(PeerSet((), ())))


def test_delivery_order_is_subscription_order_and_nested_events_wait() -> None:
    d = Dispatcher()
    log: list[str] = []
    d.subscribe(Recorder("first", log, d))  # publishes during delivery
    d.subscribe(Recorder("second", log))
    d.publish(Registered(ins("h1"), Source.CLIENT, True))
    assert log == ["first:h1", "second:h1", "first:peers", "second:peers"]
    d.publish(None)  # nothing happened: nothing delivered
    assert len(log) == 4


class Failing:
    kinds: ClassVar[tuple[type[Event], ...]] = (Registered,)

    def on_event(self, event: Event) -> None:
        raise RuntimeError("broken subscriber")


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    d = Dispatcher()
    log: list[str] = []
    d.subscribe(Failing())
    d.subscribe(Recorder("after", log))
    with caplog.at_level(logging.ERROR, logger="discoverd.events.dispatch"):
        d.publish(Registered(ins("h1"), Source.CLIENT, True))
    assert log == ["after:h1"]
    assert any("broken subscriber" in (r.exc_text or "") for r in caplog.records)


def test_only_the_kinds_asked_for_are_delivered() -> None:
    d = Dispatcher()
    log: list[str] = []
    d.subscribe(Recorder("r", log))
    d.publish(Cancelled(ins("h1"), Source.CLIENT))
    assert log == []
