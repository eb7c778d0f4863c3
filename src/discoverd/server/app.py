"""The bilibili/discovery endpoints (spec §3) over one :class:`~discoverd.core.registry.Registry`.

Handlers are synchronous: each parses, applies the change to the registry, wakes the long polls of
the changed app and returns the encoded answer. A long poll that has to wait returns ``None`` and is
answered later by :meth:`ProtocolApp.changed` (a registry change), its timer (-304) or
:meth:`ProtocolApp.shutdown` (-304).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, cast

from discoverd.config import ServerConfig
from discoverd.core import args as specs
from discoverd.core import wire
from discoverd.core.longpoll import Waiter, Waiters
from discoverd.core.params import BindError, Form, bind, register_metadata, set_metadata
from discoverd.core.registry import AppKey, Registry
from discoverd.core.replication import cancel_op, register_op, renew_op, set_op
from discoverd.errors import BadRequest
from discoverd.model import INFRA_APPID, UP, WAITING, Instance
from discoverd.server.http import HttpRequest, build_response, text_response
from discoverd.server.replication import OpFactory, Replicator

log = logging.getLogger("discoverd.server")

_FORM_TYPE: Final = b"application/x-www-form-urlencoded"
_STATUS_HEADERS: Final = {c: b"Kratos-Status-Code: %d\r\n" % c for c in (0, -304, -400, -404, -409, -500)}
_OK_BODY: Final = wire.envelope(0)
#: What the Go server answers for a renew of an unknown hostname in a known zone: a zero Instance.
_ZERO_INSTANCE: Final = (
    b'{"region":"","zone":"","env":"","appid":"","hostname":"","addrs":null,"version":"",'
    b'"metadata":null,"status":0,"reg_timestamp":0,"up_timestamp":0,"renew_timestamp":0,'
    b'"dirty_timestamp":0,"latest_timestamp":0}'
)

#: Endpoints whose Go handlers bind no parameters: a garbage query string cannot fail them.
_UNBOUND: Final = frozenset({"/discovery/fetch/all", "/discovery/nodes"})


def _is_form(req: HttpRequest) -> bool:
    raw = req.headers.get(b"content-type", b"")
    return raw == _FORM_TYPE or raw.split(b";", 1)[0].strip().lower() == _FORM_TYPE


Route = Callable[[HttpRequest, Form], "bytes | None"]
#: ``(request, form, path) -> answer or None``: a refusal to send instead of running the handler.
Authorizer = Callable[[HttpRequest, Form, str], "bytes | None"]


class Counters:
    """Monotonic event counts of one node (exported by ``server/metrics.py``); plain ints, cheap to bump."""

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

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def json_answer(code: int, body: bytes, *, status_header: bool = True) -> bytes:
    """HTTP 200 with the JSON ``body`` and the ``kratos-status-code`` header mirroring ``code``."""
    if not status_header:
        return build_response(200, body)
    line = _STATUS_HEADERS.get(code) or b"Kratos-Status-Code: %d\r\n" % code
    return build_response(200, body, headers=line)


class ProtocolApp:
    """The endpoints of one node. Owns the long-poll waiters; not thread-safe (one loop)."""

    def __init__(
        self,
        config: ServerConfig,
        registry: Registry | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else Registry()
        self.registry.guard.threshold = config.protect_threshold
        self.waiters = Waiters()
        self.clock = clock
        self.protected = config.enable_protect
        self.advertise = config.advertise or config.addr
        self.loop = asyncio.get_running_loop()
        self.routes: dict[str, tuple[str, Route]] = {
            "/discovery/register": ("POST", self.register),
            "/discovery/renew": ("POST", self.renew),
            "/discovery/cancel": ("POST", self.cancel),
            "/discovery/set": ("POST", self.set),
            "/discovery/fetch": ("GET", self.fetch),
            "/discovery/fetchs": ("GET", self.fetchs),
            "/discovery/fetch/all": ("GET", self.fetch_all),
            "/discovery/poll": ("GET", self.poll),
            "/discovery/polls": ("GET", self.polls),
            "/discovery/nodes": ("GET", self.nodes),
        }
        self._gated = {"GET"}
        self._dirty: set[AppKey] = set()
        self.no_evict_until = 0
        """Clock value (ns) before which :meth:`evict` removes nothing."""
        self.generation = 0
        """Incremented on every content change (snapshots are written when it moved)."""
        self.replicator: Replicator | None = None
        """Set by the node when it has peers; writes from clients are queued to it."""
        self.on_infra_change: Callable[[], None] | None = None
        """Called when this env's ``infra.discovery`` changed (the node rebuilds its peer list)."""
        self.extra_routes: dict[str, Callable[[HttpRequest], bytes | None]] = {}
        """Non-protocol routes (metrics, dashboard), any method; ``None`` defers the answer (long poll)."""
        self.counters = Counters()
        self.authorize: Authorizer | None = None
        """Set by ``server/auth.py`` when tokens are configured: checked before every protocol handler."""
        self.observe: Callable[[str, float], None] | None = None
        """Set by ``server/metrics.py``: ``(path, seconds)`` for every protocol request answered at once."""
        self.listeners: list[Callable[[AppKey], None]] = []
        """Called on every registry change (the dashboard's live view)."""
        self.abort_hooks: list[Callable[[HttpRequest], None]] = []
        """Called when the client of a deferred non-protocol request went away."""

    def __repr__(self) -> str:
        return f"<ProtocolApp {self.advertise} {self.registry!r} {self.waiters!r}>"

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, req: HttpRequest) -> bytes | None:
        """The HTTP entry point: route, parse, run; every failure becomes a protocol answer."""
        route = self.routes.get(req.path)
        if route is None:
            extra = self.extra_routes.get(req.path)
            if extra is not None:
                return extra(req)
            return text_response(404, "404 page not found")
        method, handler = route
        if req.method != method:
            return text_response(405, "405 method not allowed")
        if self.protected and method in self._gated:
            return json_answer(-500, wire.envelope(-500))
        try:
            form = self._form(req)
            if self.authorize is not None and (refused := self.authorize(req, form, req.path)) is not None:
                return refused
            if self.observe is None:
                return handler(req, form)
            started = time.perf_counter()
            answer = handler(req, form)
            if answer is not None:
                self.observe(req.path, time.perf_counter() - started)
            return answer
        except BindError as exc:
            return json_answer(-400, wire.envelope(-400, message=exc.message), status_header=False)
        except BadRequest as exc:
            return json_answer(-400, wire.envelope(-400, message=exc.message))

    @staticmethod
    def _form(req: HttpRequest) -> Form:
        if req.path in _UNBOUND:
            return Form()  # the Go handlers of these read no parameter
        body = b""
        if req.body and req.method == "POST" and _is_form(req):
            body = req.body
        try:
            return Form.parse(body, req.query)
        except BadRequest as exc:
            raise BindError(exc.message) from None

    # -- writes --------------------------------------------------------------------------------

    def register(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.REGISTER)
        if a["status"] > WAITING:
            raise BadRequest(f"status {a['status']}: must be 1 (UP) or 2 (WAITING)")
        ins = Instance(
            region=a["region"],
            zone=a["zone"],
            env=a["env"],
            appid=a["appid"],
            hostname=a["hostname"],
            addrs=a["addrs"],
            version=a["version"],
            metadata=register_metadata(a["metadata"]),
            status=a["status"],
            dirty_timestamp=max(a["dirty_timestamp"], 0),
        )
        self.apply_register(ins)
        self.counters.registers += 1
        if not a["replication"]:
            stored = self.registry.get(ins.appid, ins.env, ins.zone, ins.hostname)
            if stored is not None:
                copy = stored.copy()
                self.replicate(lambda r: register_op(copy, replication=r), cross_zone=not a["from_zone"])
        return json_answer(0, _OK_BODY)

    def replicate(self, make: OpFactory, *, cross_zone: bool) -> None:
        """Queue a client write for the peers (nothing without peers)."""
        if self.replicator is not None:
            self.replicator.replicate(make, cross_zone=cross_zone)

    def apply_register(self, ins: Instance, *, keep_timestamps: bool = False) -> None:
        """Store ``ins`` and wake the pollers of its app."""
        app = self.registry.register(ins, self.clock(), keep_timestamps=keep_timestamps)
        self.changed(app.key)

    def renew(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.RENEW)
        self.counters.renews += 1
        key = (a["appid"], a["env"], a["zone"], a["hostname"])
        res = self.registry.renew(
            *key, self.clock(), peer_dirty=a["dirty_timestamp"] if a["replication"] else None
        )
        if res.instance is None:
            app = self.registry.app(a["appid"], a["env"])
            known_zone = app is not None and a["zone"] in app.zones
            return json_answer(-404, wire.envelope(-404, _ZERO_INSTANCE if known_zone else b"null"))
        app = self.registry.apps[(a["appid"], a["env"])]
        answer = json_answer(res.code, wire.envelope(res.code, wire.renewed(app, res.instance)))
        if not a["replication"] and self.replicator is not None:
            ins = res.instance
            self.replicate(lambda r: renew_op(ins, replication=r), cross_zone=a["zone"] == self.config.zone)
        return answer

    def cancel(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.CANCEL)
        removed = self.registry.cancel(
            a["appid"],
            a["env"],
            a["zone"],
            a["hostname"],
            self.clock(),
            latest=a["latest_timestamp"],
        )
        if removed is None:
            return json_answer(-404, wire.envelope(-404))
        self.counters.cancels += 1
        self.changed((a["appid"], a["env"]))
        if not a["replication"]:
            self.replicate(
                lambda r: cancel_op(removed, replication=r), cross_zone=a["zone"] == self.config.zone
            )
        return json_answer(0, _OK_BODY)

    def set(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.SET)
        self.counters.sets += 1
        hosts: list[str] = a["hostname"]
        statuses: list[int] = a["status"]
        metas: list[str] = a["metadata"]
        if not hosts:
            raise BadRequest("set: at least one hostname is required")
        if statuses and len(statuses) != len(hosts):
            raise BadRequest("set: one status per hostname is required")
        if metas and len(metas) != len(hosts):
            raise BadRequest("set: one metadata per hostname is required")
        for s in statuses:
            if s not in (UP, WAITING):
                raise BadRequest(f"set: status {s}: must be 1 (UP) or 2 (WAITING)")
        parsed = [set_metadata(m) for m in metas]
        changes = [
            (h, statuses[i] if statuses else None, parsed[i] if parsed else None) for i, h in enumerate(hosts)
        ]
        ts = a["set_timestamp"] if a["set_timestamp"] > 0 else self.clock()
        if not a["replication"]:  # like the Go server, even when the local change fails
            wire_changes = [
                (h, statuses[i] if statuses else None, metas[i] if metas else None)
                for i, h in enumerate(hosts)
            ]
            self.replicate(
                lambda r: set_op(
                    region=a["region"],
                    zone=a["zone"],
                    env=a["env"],
                    appid=a["appid"],
                    changes=wire_changes,
                    set_timestamp=ts,
                    replication=r,
                ),
                cross_zone=not a["from_zone"],
            )
        app = self.registry.apply_set(a["appid"], a["env"], a["zone"], changes, ts)
        self.changed(app.key)
        return json_answer(0, _OK_BODY)

    # -- reads ---------------------------------------------------------------------------------

    def fetch(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.FETCH)
        app = self.registry.app(a["appid"], a["env"])
        if app is None:
            return json_answer(-404, wire.envelope(-404, b"null"))
        zone = a["zone"]
        if zone and zone not in app.zones:
            return json_answer(-404, wire.envelope(-404, wire.empty_info(app.latest)))
        return json_answer(0, wire.envelope(0, wire.instance_info(app, zone, a["status"])))

    def fetchs(self, req: HttpRequest, form: Form) -> bytes:
        a = bind(form, specs.FETCHS)
        zone, found = a["zone"], {}
        for appid in a["appid"]:
            app = self.registry.app(appid, a["env"])
            if app is not None and (not zone or zone in app.zones):
                found[appid] = wire.instance_info(app, zone, a["status"])
        return json_answer(0, wire.envelope(0, wire.app_map(found.items())))

    def fetch_all(self, req: HttpRequest, form: Form) -> bytes:
        return json_answer(0, wire.envelope(0, wire.fetch_all(self.registry.apps.values())))

    def nodes(self, req: HttpRequest, form: Form) -> bytes:
        if self.replicator is not None:
            return json_answer(0, wire.envelope(0, wire.dumps(self.replicator.nodes())))
        peers = self.config.nodes or (self.advertise,)
        if self.advertise not in peers:
            peers = (*peers, self.advertise)
        data = [
            {"addr": n, "status": 0 if n == self.advertise else 1, "zone": self.config.zone} for n in peers
        ]
        return json_answer(0, wire.envelope(0, wire.dumps(data)))

    # -- long polls ----------------------------------------------------------------------------

    def poll(self, req: HttpRequest, form: Form) -> bytes | None:
        return self._poll(req, form, single=True)

    def polls(self, req: HttpRequest, form: Form) -> bytes | None:
        return self._poll(req, form, single=False)

    def _poll(self, req: HttpRequest, form: Form, *, single: bool) -> bytes | None:
        a = bind(form, specs.POLLS)
        appids: list[str] = a["appid"]
        latests: list[int] = a["latest_timestamp"]
        if single:
            appids, latests = appids[:1], (latests[:1] or [0])
        elif len(appids) != len(latests):
            raise BadRequest("polls: one latest_timestamp per appid is required")
        env, zone = a["env"], a["zone"]
        changed: dict[str, bytes] = {}
        missing: list[str] = []
        for appid, latest in zip(appids, latests, strict=True):
            app = self.registry.app(appid, env)
            if app is None:
                missing.append(appid)
            elif latest >= app.latest:
                continue
            elif zone and zone not in app.zones:
                missing.append(appid)
            else:
                changed[appid] = wire.instance_info(app, zone, UP)
        if single and missing:
            msg = f"{appids[0]} not found"
            return json_answer(-404, wire.map_envelope(-404, message=msg))
        if changed:
            self.counters.poll_answers += 1
            if single:
                return json_answer(0, wire.envelope(0, changed[appids[0]]))
            body = wire.map_envelope(0, data=wire.app_map(changed.items()), missing=wire.string_list(missing))
            return json_answer(0, body)
        return self._park(req, env, tuple(dict.fromkeys(appids)), zone, tuple(missing), single)

    def _hold_seconds(self, req: HttpRequest) -> float:
        hold = self.config.poll_hold
        header = req.header("x1-bmspy-timeout")
        if 0 < len(header) <= 18 and header.isascii() and header.isdigit():
            hold = min(hold, int(header) / 1000.0 - 0.02)
        return hold

    def _park(
        self,
        req: HttpRequest,
        env: str,
        appids: tuple[str, ...],
        zone: str,
        missing: tuple[str, ...],
        single: bool,
    ) -> bytes | None:
        hold = self._hold_seconds(req)
        if hold <= 0:
            self.counters.poll_not_modified += 1
            return _not_modified()
        if self.waiters.count >= self.config.max_polls:
            # a full node answers at once rather than exhausting itself; clients retry after a backoff
            self.counters.poll_refused += 1
            return json_answer(-503, wire.envelope(-503, message="too many held polls"))
        w = Waiter(env=env, appids=appids, zone=zone, missing=missing, single=single)
        w.token = (req, self.loop.call_later(hold, self._expire, w))
        req.state = w
        self.waiters.park(w)
        return None

    def _expire(self, w: Waiter) -> None:
        if self.waiters.discard(w):
            req, _ = _token(w)
            self.counters.poll_not_modified += 1
            req.respond(_not_modified())

    def on_abort(self, req: HttpRequest) -> None:
        """The client of a deferred request went away: forget its waiter."""
        w = req.state
        if isinstance(w, Waiter):
            if self.waiters.discard(w):
                _token(w)[1].cancel()
            return
        for hook in self.abort_hooks:
            hook(req)

    def changed(self, key: AppKey) -> None:
        """Note that ``key`` changed: its polls are woken right after the current request is answered.

        Deferring lets the writer get its answer before a large fan-out, and coalesces several changes
        of one app within one loop iteration into one wake-up with the latest content.
        """
        self.generation += 1
        for listener in self.listeners:
            listener(key)
        if key == (INFRA_APPID, self.config.env) and self.on_infra_change is not None:
            self.on_infra_change()
        if not self.waiters.count:
            return
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty.add(key)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            self.wake(key)

    def wake(self, key: AppKey) -> int:
        """Answer the polls waiting on ``key`` now; returns how many were answered.

        Each distinct answer is encoded once; a deleted app wakes nobody (spec §4.4), and a poll whose
        zone filter the app lacks keeps waiting.
        """
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
            answer = json_answer(0, body)
            for w in ws:
                req, timer = _token(w)
                timer.cancel()
                req.respond(answer)
            woken += len(ws)
        self.counters.poll_answers += woken
        return woken

    # -- lifecycle -----------------------------------------------------------------------------

    def self_instance(self) -> Instance:
        """This node's ``infra.discovery`` registration (spec §6.2, §12.12)."""
        c = self.config
        return Instance(
            region=c.region,
            zone=c.zone,
            env=c.env,
            appid=INFRA_APPID,
            hostname=c.hostname,
            addrs=[f"http://{self.advertise}"],
            status=UP,
        )

    def register_self(self) -> None:
        ins = self.self_instance()
        self.apply_register(ins)
        stored = self.registry.get(ins.appid, ins.env, ins.zone, ins.hostname)
        if stored is not None:
            copy = stored.copy()
            self.replicate(lambda r: register_op(copy, replication=r), cross_zone=True)

    def renew_self(self) -> None:
        """Renew the own registration, re-registering it if it was evicted or cancelled."""
        c = self.config
        res = self.registry.renew(INFRA_APPID, c.env, c.zone, c.hostname, self.clock())
        if res.instance is None:
            self.register_self()
        else:
            ins = res.instance.copy()
            self.replicate(lambda r: renew_op(ins, replication=r), cross_zone=True)

    def cancel_self(self) -> None:
        c = self.config
        removed = self.registry.cancel(INFRA_APPID, c.env, c.zone, c.hostname, self.clock())
        if removed is not None:
            self.changed((INFRA_APPID, c.env))
            self.replicate(lambda r: cancel_op(removed, replication=r), cross_zone=True)

    def adopt(self, theirs: Instance) -> None:
        """A peer answered -409 with a newer copy: store it like a replicated register (spec §6.4)."""
        self.apply_register(theirs)

    def local_copy(self, key: tuple[str, str, str, str]) -> Instance | None:
        """A copy of the stored instance ``(appid, env, zone, hostname)``, or ``None``."""
        ins = self.registry.get(*key)
        return None if ins is None else ins.copy()

    def evict(self) -> list[Instance]:
        """Close the guard window and run one eviction pass; wakes the pollers of changed apps.

        Nothing is evicted before ``no_evict_until`` (set after a snapshot restore, so restored
        instances get one eviction threshold to renew).
        """
        c = self.config
        self.registry.guard.close_window()
        if self.clock() < self.no_evict_until:
            return []
        removed = self.registry.evict(
            self.clock(),
            int(c.evict_after * 1e9),
            int(c.evict_ceiling * 1e9),
            c.protect_threshold,
        )
        for key in {(i.appid, i.env) for i in removed}:
            self.changed(key)
        self.counters.evictions += len(removed)
        if removed:
            log.info(
                "evicted %d instance(s)",
                len(removed),
                extra={"event": "evict", "count": len(removed), "apps": sorted({i.appid for i in removed})},
            )
        return removed

    def recount(self) -> None:
        """The guard's periodic recount of expected renews."""
        self.registry.guard.recount(self.registry.size)

    def shutdown(self) -> int:
        """Answer every held poll with -304 (graceful stop); returns how many."""
        held = self.waiters.drain()
        answer = _not_modified()
        for w in held:
            req, timer = _token(w)
            timer.cancel()
            req.respond(answer)
        return len(held)

    def stats(self) -> dict[str, int]:
        """Gauges of the node's state (``server/metrics.py`` exports them, with more, at ``/metrics``)."""
        g = self.registry.guard
        return {
            "apps": len(self.registry.apps),
            "instances": self.registry.size,
            "held_polls": self.waiters.count,
            "guard_expected_renews": g.expected,
            "guard_needed_renews": g.needed,
            "guard_renews_last_window": g.last_window,
            "guard_protecting": int(g.protecting),
            "startup_protect": int(self.protected),
        }


def _not_modified() -> bytes:
    return json_answer(-304, wire.envelope(-304))


def _token(w: Waiter) -> tuple[HttpRequest, asyncio.TimerHandle]:
    return cast(tuple[HttpRequest, asyncio.TimerHandle], w.token)
