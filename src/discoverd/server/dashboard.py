"""The operator dashboard served at ``/``: a static page and a live JSON state.

Routes (:meth:`Dashboard.routes`, in the node's route table when ``config.dashboard``):

* ``GET /``, ``/dashboard``, ``/dashboard/`` — the page (``static/index.html``);
* ``GET /dashboard/static/<name>`` — the page's files. Only the files found in ``static/`` at start
  (plain names, known extensions) are routed, each by its exact path, so no request path can reach
  anything else (``..``, encoded slashes and unknown names are simply not routes: 404). A file is
  read when it is requested (they are small, and a node whose dashboard is never opened holds none);
* ``GET /dashboard/api/state`` — the state (:mod:`discoverd.server.dashboard_state`) in the protocol
  envelope. It is a read: with ``protect_reads`` it needs a token (the pipeline's auth stage).

Live updates (long poll): ``?since=N`` is answered at once when the dashboard ``version`` is not ``N``
(a client of an earlier server process is answered too), else held (:mod:`~discoverd.server.parking`,
counted against ``max_polls``) until the next change or :attr:`Dashboard.hold` seconds (then the
current state). Registry changes (the dashboard subscribes to the content events) are coalesced for
:data:`DEBOUNCE` seconds, so a burst of writes gives one new version; while polls are held, a 1 s
tick also bumps the version when the guard, start-up protect, the restore grace or a peer's UP/LOST
changed. Renews change no version (they are too frequent): a poll that sends back the state's
``renew_mark`` (a string: it may exceed a JavaScript number) as ``renews=`` is answered at the next
tick after a renew of the instances it shows, with the same version. ``app=APPID`` (with ``env``,
default the node's) limits ``instances`` to one app.

The state is served during start-up protect (it says so). Operator actions are not routes here: the
page calls the protocol's ``set`` and ``cancel``, which are authorised like any client write.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from discoverd.core import wire
from discoverd.core.events import CONTENT, Event
from discoverd.core.params import Form, parse_go_int
from discoverd.server import answers
from discoverd.server.dashboard_state import Filter, StateView
from discoverd.server.http import HttpRequest, build_response, text_response
from discoverd.server.parking import Held, Parking
from discoverd.server.parts import NodeParts
from discoverd.server.routes import Route

STATE_PATH: Final = "/dashboard/api/state"
STATIC_PREFIX: Final = "/dashboard/static/"
PAGE_PATHS: Final = ("/", "/dashboard", "/dashboard/")
HOLD: Final = 25.0
"""Seconds a state poll is held before it is answered with the unchanged state."""
DEBOUNCE: Final = 0.05
"""Registry changes within this many seconds make one new version."""
TICK: Final = 1.0
"""Period of the guard/peer/renew check while polls are held."""

_TYPES: Final = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json; charset=utf-8",
}
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+\Z")
_COMMON: Final = (
    b"Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
)
_PAGE: Final = _COMMON + (
    b"Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
    b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'\r\nX-Frame-Options: DENY\r\n"
)
_NO_STORE: Final = b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
_GET: Final = frozenset({"GET"})


STATIC_DIR: Final = Path(__file__).with_name("static")
"""The page's files: ``discoverd/server/static`` (package data, installed next to this module)."""


def find_static(root: Path = STATIC_DIR) -> dict[str, Path]:
    """The servable files of ``root``: plain names with a known extension → their path."""
    out: dict[str, Path] = {}
    for entry in root.iterdir():
        name = entry.name
        if _NAME.match(name) and "." + name.rsplit(".", 1)[1] in _TYPES and entry.is_file():
            out[name] = entry
    return out


@dataclass(slots=True, eq=False)
class StatePoll:
    """What one held state poll shows, and the renew mark it has seen."""

    flt: Filter
    mark: int | None


class Dashboard:
    """The dashboard of one node: static files, the state, the held polls; a content subscriber.

    One loop, not thread-safe.
    """

    kinds: ClassVar[tuple[type[Event], ...]] = CONTENT

    def __init__(self, parts: NodeParts, parking: Parking, loop: asyncio.AbstractEventLoop) -> None:
        self.parts = parts
        self.parking = parking
        self.loop = loop
        self.view = StateView(parts)
        self.files = find_static()
        """The routed files by name (read on each request)."""
        self.hold = HOLD
        self.version = time.time_ns() // 1_000_000
        """Opaque; +1 (at most once per :data:`DEBOUNCE`) when what the state shows changed. Starts
        from the clock in ms, so a page that knew an earlier process's version is answered at once."""
        self.held: set[Held] = set()
        self._debounce: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._summary = self.view.summary()

    def __repr__(self) -> str:
        return f"<Dashboard version={self.version} held={len(self.held)}>"

    @property
    def settled(self) -> bool:
        """No change is waiting for the debounce."""
        return self._debounce is None

    def routes(self) -> list[Route]:
        """The page, its files (each by exact path, public) and the state route."""
        out = [Route(p, _GET, self.page, public=True) for p in PAGE_PATHS]
        out += [Route(STATIC_PREFIX + name, _GET, self.static, public=True) for name in self.files]
        out.append(Route(STATE_PATH, _GET, self.state_route, defers=True))
        return out

    # -- static routes ---------------------------------------------------------------------------

    def page(self, req: HttpRequest, form: Form) -> bytes:
        return self._file("index.html")

    def static(self, req: HttpRequest, form: Form) -> bytes:
        return self._file(req.path[len(STATIC_PREFIX) :])

    def _file(self, name: str) -> bytes:
        path = self.files.get(name)
        try:
            body = path.read_bytes() if path is not None else None
        except OSError:  # removed or unreadable since the start (an upgrade in place)
            body = None
        if body is None:
            return text_response(404, "404 page not found")
        suffix = "." + name.rsplit(".", 1)[1]
        headers = _PAGE if suffix == ".html" else _COMMON
        return build_response(200, body, content_type=_TYPES[suffix], headers=headers)

    # -- the state route -------------------------------------------------------------------------

    def state_route(self, req: HttpRequest, form: Form) -> bytes | None:
        """``GET /dashboard/api/state[?since=N&renews=M&app=A&env=E]``: now, or held (``None``)."""
        since = parse_go_int(form.first("since"))
        renews = form.first("renews")
        mark = parse_go_int(renews) if renews else None
        appid = form.first("app")
        flt: Filter = (appid, form.first("env") or self.parts.config.env) if appid else None
        if since != self.version:
            return self.answer(flt)
        if self.parking.full:
            return answers.too_many_polls()
        self.held.add(self.parking.park(req, self.hold, self, StatePoll(flt, mark)))
        if self._tick is None:
            self._tick = self.loop.call_later(TICK, self._on_tick)
        return None

    def answer(self, flt: Filter) -> bytes:
        """The encoded state answer for ``flt``."""
        body = wire.envelope(0, wire.dumps(self.view.state(self.version, flt)))
        return build_response(200, body, headers=b"Kratos-Status-Code: 0\r\n" + _NO_STORE)

    def _respond(self, held: Held, answer: bytes) -> None:
        self.held.discard(held)
        self.parking.respond(held, answer)

    # -- Holder ------------------------------------------------------------------------------------

    def expired(self, held: Held) -> None:
        poll = held.record
        if isinstance(poll, StatePoll):
            self._respond(held, self.answer(poll.flt))

    def gone(self, held: Held) -> None:
        self.held.discard(held)

    # -- change detection ------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """A registry change: schedule one coalesced version bump."""
        if self._debounce is None:
            self._debounce = self.loop.call_later(DEBOUNCE, self._flush)

    def _flush(self) -> None:
        self._debounce = None
        self.bump()

    def bump(self) -> None:
        """A new version now: answer every held poll (one encoding per distinct filter)."""
        self.version += 1
        self._summary = self.view.summary()
        self._answer_all(list(self.held))

    def _answer_all(self, helds: list[Held]) -> None:
        answers_by_filter: dict[Filter, bytes] = {}
        for held in helds:
            poll = held.record
            if not isinstance(poll, StatePoll):
                continue
            if poll.flt not in answers_by_filter:
                answers_by_filter[poll.flt] = self.answer(poll.flt)
            self._respond(held, answers_by_filter[poll.flt])

    def _on_tick(self) -> None:
        self._tick = None
        if not self.held:
            return  # no one is watching: the next held poll restarts the tick
        if self.view.summary() != self._summary:
            self.bump()
        else:
            self._answer_all(self._renewed())
        if self.held:
            self._tick = self.loop.call_later(TICK, self._on_tick)

    def _renewed(self) -> list[Held]:
        """The held polls tracking renews whose instances renewed since their state."""
        marks: dict[Filter, int] = {}
        out = []
        for held in self.held:
            poll = held.record
            if isinstance(poll, StatePoll) and poll.mark is not None:
                if poll.flt not in marks:
                    marks[poll.flt] = self.view.renew_mark(poll.flt)
                if marks[poll.flt] != poll.mark:
                    out.append(held)
        return out

    def shutdown(self) -> None:
        """Answer every held state poll with the current state (graceful stop)."""
        self._answer_all(list(self.held))
        for handle in (self._debounce, self._tick):
            if handle is not None:
                handle.cancel()
