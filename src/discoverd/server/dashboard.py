"""The operator dashboard served at ``/`` (issue 8): a static page and a live JSON state.

Routes, installed into ``app.extra_routes`` by :func:`install` (when ``config.dashboard``):

* ``GET /``, ``/dashboard``, ``/dashboard/`` — the page (``static/index.html``);
* ``GET /dashboard/static/<name>`` — the page's files. Only the files found in ``static/`` at start
  (plain names, known extensions) are routed, each by its exact path, so no request path can reach
  anything else (``..``, encoded slashes and unknown names are simply not routes: 404);
* ``GET /dashboard/api/state`` — the state (see :meth:`Dashboard.state`) in the protocol envelope.

Live updates (long poll): ``?since=N`` is answered at once when the dashboard ``version`` is not ``N``
(a client of an earlier server process is answered too), else held until the next change or
:attr:`Dashboard.hold` seconds (then the current state). Registry changes (``app.listeners``) are
coalesced for :data:`DEBOUNCE` seconds, so a burst of writes gives one new version; while polls are
held, a 1 s tick also bumps the version when the guard, start-up protect, the restore grace or a peer's
UP/LOST changed. Renews change no version (they are too frequent): a poll that sends back the state's
``renew_mark`` (a string: it may exceed a JavaScript number) as ``renews=`` is answered at the next tick
after a renew of the instances it shows, with the same version.
``app=APPID`` (with ``env``, default the node's) limits ``instances`` to one app.

With ``app.authorize`` set, the state asks it for ``/dashboard/api/state`` and returns its refusal.
The state is served during start-up protect (it says so). Operator actions are not routes here: the
page calls the protocol's ``set`` and ``cancel``, which are authorised like any client write.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import time
import weakref
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from discoverd.core import wire
from discoverd.core.params import Form, parse_go_int
from discoverd.core.registry import App, AppKey
from discoverd.errors import BadRequest
from discoverd.model import UP, WAITING, Instance
from discoverd.server.app import ProtocolApp, json_answer
from discoverd.server.http import HttpRequest, build_response, text_response
from discoverd.server.replication import NODE_UP

if TYPE_CHECKING:
    from discoverd.server.runner import Node

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
_STATUS_NAMES: Final = {UP: "UP", WAITING: "WAITING"}

_INSTANCES: weakref.WeakKeyDictionary[ProtocolApp, Dashboard] = weakref.WeakKeyDictionary()

Filter = AppKey | None
"""The app whose instances a state includes, or ``None`` for every app."""


def load_static() -> dict[str, bytes]:
    """The servable files of ``discoverd/server/static``: plain names with a known extension → bytes."""
    root = resources.files("discoverd.server").joinpath("static")
    out: dict[str, bytes] = {}
    for entry in root.iterdir():
        name = entry.name
        if _NAME.match(name) and "." + name.rsplit(".", 1)[1] in _TYPES and entry.is_file():
            out[name] = entry.read_bytes()
    return out


def status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, f"UNKNOWN({status})")


def install(app: ProtocolApp, node: Node | None = None) -> Dashboard:
    """Serve the dashboard for ``app``; returns it (also found later with :func:`of`)."""
    dash = Dashboard(app)
    for path in PAGE_PATHS:
        app.extra_routes[path] = dash.page
    for name in dash.files:
        app.extra_routes[STATIC_PREFIX + name] = dash.static
    app.extra_routes[STATE_PATH] = dash.state_route
    app.listeners.append(dash.on_change)
    app.abort_hooks.append(dash.on_abort)
    _INSTANCES[app] = dash
    return dash


def of(app: ProtocolApp) -> Dashboard | None:
    """The dashboard installed on ``app``, if any (tests adjust :attr:`Dashboard.hold` through it)."""
    return _INSTANCES.get(app)


@dataclass(slots=True, eq=False)
class _Held:
    """One held state poll: its request, what it shows, the renew mark it has seen, its timeout."""

    req: HttpRequest
    flt: Filter
    mark: int | None
    timer: asyncio.TimerHandle | None = None


class Dashboard:
    """The dashboard of one app: static files, the state, the held polls. One loop, not thread-safe."""

    def __init__(self, app: ProtocolApp) -> None:
        self.app = app
        self.files = load_static()
        self.hold = HOLD
        self.version = time.time_ns() // 1_000_000
        """Opaque; +1 (at most once per :data:`DEBOUNCE`) when what the state shows changed. Starts
        from the clock in ms, so a page that knew an earlier process's version is answered at once."""
        self.started = time.monotonic()
        try:
            self.software = importlib.metadata.version("discoverd")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
            self.software = "unknown"
        self.held: set[_Held] = set()
        self._debounce: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._summary = self.summary()

    def __repr__(self) -> str:
        return f"<Dashboard version={self.version} held={len(self.held)}>"

    # -- static routes ---------------------------------------------------------------------------

    def page(self, req: HttpRequest) -> bytes:
        return self._file(req, "index.html")

    def static(self, req: HttpRequest) -> bytes:
        return self._file(req, req.path[len(STATIC_PREFIX) :])

    def _file(self, req: HttpRequest, name: str) -> bytes:
        if req.method != "GET":
            return text_response(405, "405 method not allowed")
        body = self.files.get(name)
        if body is None:
            return text_response(404, "404 page not found")
        suffix = "." + name.rsplit(".", 1)[1]
        headers = _PAGE if suffix == ".html" else _COMMON
        return build_response(200, body, content_type=_TYPES[suffix], headers=headers)

    # -- the state route -------------------------------------------------------------------------

    def state_route(self, req: HttpRequest) -> bytes | None:
        """``GET /dashboard/api/state[?since=N&renews=M&app=A&env=E]``: now, or held (``None``)."""
        if req.method != "GET":
            return text_response(405, "405 method not allowed")
        app = self.app
        try:
            form = Form.parse(b"", req.query)
            if app.authorize is not None and (refused := app.authorize(req, form, STATE_PATH)) is not None:
                return refused
            since = parse_go_int(form.first("since"))
            renews = form.first("renews")
            mark = parse_go_int(renews) if renews else None
        except BadRequest as exc:
            return json_answer(-400, wire.envelope(-400, message=exc.message))
        appid = form.first("app")
        flt: Filter = (appid, form.first("env") or app.config.env) if appid else None
        if since != self.version:
            return self.answer(flt)
        if len(self.held) >= app.config.max_polls:
            return json_answer(-503, wire.envelope(-503, message="too many held polls"))
        held = _Held(req, flt, mark)
        held.timer = app.loop.call_later(self.hold, self._expire, held)
        req.state = held
        self.held.add(held)
        if self._tick is None:
            self._tick = app.loop.call_later(TICK, self._on_tick)
        return None

    def answer(self, flt: Filter) -> bytes:
        """The encoded state answer for ``flt``."""
        body = wire.envelope(0, wire.dumps(self.state(flt)))
        return build_response(200, body, headers=b"Kratos-Status-Code: 0\r\n" + _NO_STORE)

    def _respond(self, held: _Held, answer: bytes) -> None:
        self.held.discard(held)
        if held.timer is not None:
            held.timer.cancel()
        held.req.respond(answer)

    def _expire(self, held: _Held) -> None:
        if held in self.held:
            self._respond(held, self.answer(held.flt))

    def on_abort(self, req: HttpRequest) -> None:
        """``app.abort_hooks`` entry: forget the held poll of a client that went away."""
        held = req.state
        if isinstance(held, _Held) and held in self.held:
            self.held.discard(held)
            if held.timer is not None:
                held.timer.cancel()

    # -- change detection ------------------------------------------------------------------------

    def on_change(self, key: AppKey) -> None:
        """``app.listeners`` entry (every registry change): schedule one coalesced version bump."""
        if self._debounce is None:
            self._debounce = self.app.loop.call_later(DEBOUNCE, self._flush)

    def _flush(self) -> None:
        self._debounce = None
        self.bump()

    def bump(self) -> None:
        """A new version now: answer every held poll (one encoding per distinct filter)."""
        self.version += 1
        self._summary = self.summary()
        answers: dict[Filter, bytes] = {}
        for held in list(self.held):
            if held.flt not in answers:
                answers[held.flt] = self.answer(held.flt)
            self._respond(held, answers[held.flt])

    def _on_tick(self) -> None:
        self._tick = None
        if not self.held:
            return  # no one is watching: the next held poll restarts the tick
        if self.summary() != self._summary:
            self.bump()
        else:
            marks: dict[Filter, int] = {}
            answers: dict[Filter, bytes] = {}
            for held in [h for h in self.held if h.mark is not None]:
                if held.flt not in marks:
                    marks[held.flt] = self.renew_mark(held.flt)
                if marks[held.flt] != held.mark:
                    if held.flt not in answers:
                        answers[held.flt] = self.answer(held.flt)
                    self._respond(held, answers[held.flt])
        if self.held:
            self._tick = self.app.loop.call_later(TICK, self._on_tick)

    def summary(self) -> tuple[object, ...]:
        """What, besides the registry, changes the version: guard, protect, grace, peers' status."""
        app = self.app
        g = app.registry.guard
        nodes = tuple((n["addr"], n["status"]) for n in self.nodes())
        grace = app.clock() < app.no_evict_until
        return (g.protecting, g.last_window, g.expected, g.threshold, app.protected, grace, nodes)

    def renew_mark(self, flt: Filter) -> int:
        """Moves on every renew shown by ``flt``: the app's latest renew, or the node's renew count."""
        if flt is None:
            return self.app.counters.renews
        a = self.app.registry.apps.get(flt)
        return 0 if a is None else max((i.renew_timestamp for i in a.instances()), default=0)

    # -- the state -------------------------------------------------------------------------------

    def state(self, flt: Filter = None) -> dict[str, Any]:
        """The dashboard state: ``version``, ``now`` (ns), ``renew_mark``, ``node``, ``guard``,
        ``nodes``, ``apps`` (with per-zone counts by status), ``selected`` and ``instances``."""
        app = self.app
        now = app.clock()
        apps = [a for _, a in sorted(app.registry.apps.items())]
        shown = apps if flt is None else [a for a in (app.registry.apps.get(flt),) if a is not None]
        return {
            "version": self.version,
            "now": now,
            "renew_mark": str(self.renew_mark(flt)),
            "node": self.node_info(),
            "guard": self.guard(now),
            "nodes": self.nodes(),
            "apps": [_app_row(a) for a in apps],
            "selected": None if flt is None else {"appid": flt[0], "env": flt[1], "found": bool(shown)},
            "instances": [
                _instance_row(i, now)
                for a in shown
                for zone in sorted(a.zones)
                for _, i in sorted(a.zones[zone].items())
            ],
        }

    def node_info(self) -> dict[str, Any]:
        c = self.app.config
        return {
            "addr": self.app.advertise,
            "zone": c.zone,
            "region": c.region,
            "env": c.env,
            "hostname": c.hostname,
            "version": self.software,
            "uptime": round(time.monotonic() - self.started, 1),
            "startup_protect": self.app.protected,
            "protect_duration": c.protect_duration,
            "instances": self.app.registry.size,
            "apps": len(self.app.registry.apps),
        }

    def guard(self, now: int) -> dict[str, Any]:
        """The renew guard and why eviction is suspended (``reasons``, empty when it runs normally)."""
        app = self.app
        c, g = app.config, app.registry.guard
        reasons: list[dict[str, str]] = []
        if g.protecting:
            reasons.append(
                {
                    "kind": "self-preservation",
                    "text": f"{g.last_window} renews in the last {c.evict_interval:g} s window, fewer than "
                    f"the {g.needed} needed ({g.threshold:.0%} of {g.expected} expected): only instances "
                    f"silent for more than {c.evict_ceiling:g} s are evicted",
                }
            )
        grace = max(0.0, (app.no_evict_until - now) / 1e9)
        if grace > 0:
            reasons.append(
                {
                    "kind": "restore-grace",
                    "text": f"restored from a snapshot: nothing is evicted for another {grace:.0f} s",
                }
            )
        return {
            "renews_last_window": g.last_window,
            "renews_this_window": g.this_window,
            "needed": g.needed,
            "expected": g.expected,
            "threshold": g.threshold,
            "window": c.evict_interval,
            "evict_after": c.evict_after,
            "protecting": g.protecting,
            "restore_grace": round(grace, 1),
            "startup_protect": app.protected,
            "eviction_suspended": bool(reasons),
            "reasons": reasons,
        }

    def nodes(self) -> list[dict[str, Any]]:
        """This node, its own-zone peers and one target per other zone, each ``UP`` or ``LOST``."""
        app = self.app
        me, zone = app.advertise, app.config.zone
        rep, rows = app.replicator, [_node(me, zone, True, "self")]
        if rep is not None:  # None until the node wired its cluster
            rows += [_node(a, zone, p.status == NODE_UP, "peer") for a, p in sorted(rep.own.items())]
            rows += [_node(p.addr, z, p.status == NODE_UP, "zone") for z, p in sorted(rep.remote.items())]
        return rows


def _node(addr: str, zone: str, up: bool, role: str) -> dict[str, Any]:
    return {"addr": addr, "zone": zone, "status": "UP" if up else "LOST", "role": role}


def _app_row(a: App) -> dict[str, Any]:
    zones: dict[str, dict[str, int]] = {}
    for zone, hosts in sorted(a.zones.items()):
        counts = zones[zone] = {"UP": 0, "WAITING": 0}
        for ins in hosts.values():
            name = status_name(ins.status)
            counts[name] = counts.get(name, 0) + 1
    return {"appid": a.appid, "env": a.env, "instances": len(a), "latest": a.latest, "zones": zones}


def _instance_row(i: Instance, now: int) -> dict[str, Any]:
    return {
        "appid": i.appid,
        "env": i.env,
        "region": i.region,
        "zone": i.zone,
        "hostname": i.hostname,
        "addrs": i.addrs,
        "version": i.version,
        "metadata": dict(sorted((i.metadata or {}).items())),
        "status": i.status,
        "status_name": status_name(i.status),
        "reg_timestamp": i.reg_timestamp,
        "up_timestamp": i.up_timestamp,
        "renew_timestamp": i.renew_timestamp,
        "dirty_timestamp": i.dirty_timestamp,
        "reg_age": round((now - i.reg_timestamp) / 1e9, 1),
        "renew_age": round((now - i.renew_timestamp) / 1e9, 1),
    }
