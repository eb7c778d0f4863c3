"""The protocol's long polls (``/discovery/poll`` and ``/discovery/polls``, spec §4).

A poll whose apps have nothing newer than its ``latest_timestamp`` is held (:class:`~.parking.Parking`)
and indexed by app (:class:`~discoverd.core.longpoll.Waiters`). As a subscriber of the registry's
content events, :class:`LongPolls` wakes the polls of each changed app:

* **when**: right after the current loop iteration, so the writer gets its answer before a large
  fan-out; changes of one app within one iteration make one wake-up with the latest content;
* **what**: one encoding per distinct answer (single/multi envelope, zone filter, missing list),
  the same bytes for every poll that needs it; a deleted app wakes nobody (spec §4.4), and a poll
  whose zone filter the app lacks keeps waiting;
* **otherwise**: ``-304`` when the hold runs out (``poll_hold``, or the client's
  ``x1-bmspy-timeout`` minus 20 ms), ``-503`` at once when the node holds ``max_polls`` already.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from discoverd.config import ServerConfig
from discoverd.core import wire
from discoverd.core.args import PollsArgs
from discoverd.core.events import CONTENT, AppKey, Event, changed_apps
from discoverd.core.longpoll import Waiter, Waiters
from discoverd.core.registry_state import RegistryState
from discoverd.errors import BadRequest
from discoverd.model import UP
from discoverd.server import answers
from discoverd.server.http import HttpRequest
from discoverd.server.parking import Held, Parking
from discoverd.server.stats import Counters


class LongPolls:
    """The held protocol polls of one node; the subscriber that wakes them."""

    kinds: ClassVar[tuple[type[Event], ...]] = CONTENT

    def __init__(
        self,
        registry: RegistryState,
        parking: Parking,
        config: ServerConfig,
        counters: Counters,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.registry = registry
        self.parking = parking
        self.config = config
        self.counters = counters
        self.loop = loop
        self.waiters = Waiters()
        self._dirty: set[AppKey] = set()

    def __repr__(self) -> str:
        return f"<LongPolls {self.waiters!r}>"

    # -- the endpoints ---------------------------------------------------------------------------

    def poll(self, req: HttpRequest, a: PollsArgs, *, single: bool) -> bytes | None:
        """Answer at once when an app is newer than the caller's version, else hold (``None``)."""
        appids, latests = a.appid, a.latest_timestamp
        if single:
            appids, latests = appids[:1], (latests[:1] or (0,))
        elif len(appids) != len(latests):
            raise BadRequest("polls: one latest_timestamp per appid is required")
        changed: dict[str, bytes] = {}
        missing: list[str] = []
        for appid, latest in zip(appids, latests, strict=True):
            app = self.registry.app(appid, a.env)
            if app is None:
                missing.append(appid)
            elif latest >= app.latest:
                continue
            elif a.zone and a.zone not in app.zones:
                missing.append(appid)
            else:
                changed[appid] = wire.instance_info(app, a.zone, UP)
        if single and missing:
            return answers.json_answer(-404, wire.map_envelope(-404, message=f"{appids[0]} not found"))
        if changed:
            self.counters.poll_answers += 1
            if single:
                return answers.json_answer(0, wire.envelope(0, changed[appids[0]]))
            data = wire.app_map(changed.items())
            return answers.json_answer(0, wire.map_envelope(0, data=data, missing=wire.string_list(missing)))
        appids = tuple(dict.fromkeys(appids))
        w = Waiter(env=a.env, appids=appids, zone=a.zone, missing=tuple(missing), single=single)
        return self._park(req, w)

    def _park(self, req: HttpRequest, w: Waiter) -> bytes | None:
        hold = self._hold_seconds(req)
        if hold <= 0:
            self.counters.poll_not_modified += 1
            return answers.not_modified()
        if self.parking.full:
            self.counters.poll_refused += 1
            return answers.too_many_polls()
        w.token = self.parking.park(req, hold, self, w)
        self.waiters.park(w)
        return None

    def _hold_seconds(self, req: HttpRequest) -> float:
        hold = self.config.poll_hold
        header = req.header("x1-bmspy-timeout")
        if 0 < len(header) <= 18 and header.isascii() and header.isdigit():
            hold = min(hold, int(header) / 1000.0 - 0.02)
        return hold

    # -- Holder ------------------------------------------------------------------------------------

    def expired(self, held: Held) -> None:
        w = held.record
        if isinstance(w, Waiter) and self.waiters.discard(w):
            w.token = None
            self.counters.poll_not_modified += 1
            self.parking.respond(held, answers.not_modified())

    def gone(self, held: Held) -> None:
        w = held.record
        if isinstance(w, Waiter):
            self.waiters.discard(w)
            w.token = None

    # -- Subscriber --------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Schedule the wake-up of every app the event changed (see the module docstring)."""
        if not self.waiters.count:
            return
        for key in changed_apps(event):
            if not self._dirty:
                self.loop.call_soon(self._flush)
            self._dirty.add(key)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            self.wake(key)

    def wake(self, key: AppKey) -> int:
        """Answer the polls waiting on ``key`` now; returns how many were answered."""
        app = self.registry.apps.get(key)
        if app is None or not self.waiters.count:
            return 0
        groups = self.waiters.take(key, lambda z: not z or z in app.zones)
        woken = 0
        for (single, zone, missing), ws in groups.items():
            info = wire.instance_info(app, zone, UP)
            if single:
                body = wire.envelope(0, info)
            else:
                data = wire.app_map([(app.appid, info)])
                body = wire.map_envelope(0, data=data, missing=wire.string_list(missing))
            answer = answers.json_answer(0, body)
            for w in ws:
                held, w.token = w.token, None
                if isinstance(held, Held):
                    self.parking.respond(held, answer)
            woken += len(ws)
        self.counters.poll_answers += woken
        return woken

    def shutdown(self) -> int:
        """Answer every held poll with -304 (graceful stop); returns how many."""
        held = self.waiters.drain()
        answer = answers.not_modified()
        for w in held:
            token, w.token = w.token, None
            if isinstance(token, Held):
                self.parking.respond(token, answer)
        return len(held)
