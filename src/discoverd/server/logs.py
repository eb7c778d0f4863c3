"""Structured logs of a node: one line per event, as text or JSON, with the request id relayed.

* :func:`configure` installs one handler on the root logger (``config.log_level``, ``config.log_format``):
  ``text`` lines read ``TIME LEVEL LOGGER MESSAGE key=value ...``; ``json`` lines are one object each
  with ``time``, ``level``, ``logger``, ``message`` and every ``extra=`` field of the record.
* :func:`install` (run by ``metrics.install``) adds the registry events at INFO on the logger
  ``discoverd.events``, each with an ``event`` field: ``register`` (new instances only), ``cancel``,
  ``set``, ``guard`` (self-preservation on/off) and ``peer`` (a replication peer went UP or LOST).
  Renew, fetch and poll log nothing: they are the hot path.
* A write carrying ``X-Request-Id`` (or a W3C ``traceparent``: its trace id) runs with
  :data:`request_id` set, so every line logged while handling it carries ``request_id``.

Guard and peer changes are noticed by the periodic eviction pass and self-renew (the modules that
change them do not log the transitions themselves), so a peer line may lag by ``self_renew_interval``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from discoverd.config import ServerConfig
from discoverd.errors import ConfigError
from discoverd.server.replication import NODE_LOST, NODE_UP

if TYPE_CHECKING:
    from discoverd.core.params import Form
    from discoverd.server.app import ProtocolApp, Route
    from discoverd.server.http import HttpRequest

events = logging.getLogger("discoverd.events")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("discoverd_request_id", default="")
"""The id of the request being handled ("" outside a request that carried one)."""

_MAX_ID: Final = 128
#: Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_QUOTE: Final = frozenset(' "=\\') | {chr(c) for c in range(32)} | {"\x7f"}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of ``record`` (and ``request_id``), in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _text_value(value: object) -> str:
    """A ``key=value`` value: lists comma-joined, bools ``true``/``false``, quoted when needed."""
    if isinstance(value, str):
        s = value
    elif isinstance(value, bool):
        s = "true" if value else "false"
    elif isinstance(value, list | tuple | set | frozenset):
        s = ",".join(str(v) for v in value)
    else:
        s = str(value)
    if not s or any(ch in _QUOTE for ch in s):
        return orjson.dumps(s).decode()
    return s


class TextFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO discoverd.events registered demo/h1 appid=demo hostname=h1``.

    One line per event: newlines in the message are escaped; values with spaces, quotes, ``=`` or
    control characters are JSON-quoted. A traceback, if any, follows on the next lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        parts = [_timestamp(record), record.levelname, record.name, message]
        parts += [f"{k}={_text_value(v)}" for k, v in extra_fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the extra fields, and
    ``exception`` (the formatted traceback) when there is one. Unencodable values become ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in extra_fields(record).items():
            doc.setdefault(k, v)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged while :data:`request_id` is set (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (recognised, and replaced, by the next call)."""


def configure(config: ServerConfig, *, stream: IO[str] | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``config.log_level`` in ``config.log_format``; returns the handler.

    Replaces the handler of a previous call (idempotent); other handlers of the root logger are left
    alone. Raises :class:`ConfigError` for an unknown level.
    """
    level = logging.getLevelNamesMapping().get(config.log_level.upper())
    if level is None or not config.log_level.isalpha():
        raise ConfigError(f"log_level {config.log_level!r}: use debug, info, warning, error or critical")
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if config.log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def request_id_of(req: HttpRequest) -> str:
    """``X-Request-Id``, else the trace id of ``traceparent``, else ""; at most 128 visible ASCII chars."""
    rid = req.header("x-request-id")
    if not rid:
        parts = req.header("traceparent").split("-")
        rid = parts[1] if len(parts) >= 4 else ""
    if len(rid) > _MAX_ID or not (rid.isascii() and rid.isprintable()) or " " in rid:
        return ""
    return rid


# -- the events -------------------------------------------------------------------------------------


def install(app: ProtocolApp) -> None:
    """Log registry events of ``app`` (see the module docstring). Run once, before the node's loops start.

    Wraps the ``register``, ``cancel`` and ``set`` routes (they run with :data:`request_id` set) and the
    app's ``evict`` and ``renew_self`` (guard and peer changes); renew and reads are untouched.
    """
    for path, wrap in (
        ("/discovery/register", _log_register),
        ("/discovery/cancel", _log_cancel),
        ("/discovery/set", _log_set),
    ):
        if path in app.routes:
            method, handler = app.routes[path]
            app.routes[path] = (method, _with_request_id(wrap(app, handler)))
    watch = _StateWatch(app)
    app.evict = watch.around(app.evict)  # type: ignore[method-assign]
    app.renew_self = watch.around(app.renew_self)  # type: ignore[method-assign]


def _with_request_id(handler: Route) -> Route:
    def handle(req: HttpRequest, form: Form) -> bytes | None:
        rid = request_id_of(req)
        if not rid:
            return handler(req, form)
        token = request_id.set(rid)
        try:
            return handler(req, form)
        finally:
            request_id.reset(token)

    return handle


def _ident(form: Form) -> dict[str, str]:
    return {k: form.first(k) for k in ("appid", "env", "zone", "hostname")}


def _fields(req: HttpRequest, form: Form, **more: object) -> dict[str, object]:
    out: dict[str, object] = {"event": "", **_ident(form), **more}
    out["replication"] = form.first("replication") == "true"
    out["client"] = req.peer
    rid = request_id.get()
    if rid:  # also without our handler's filter (e.g. another handler set up by an embedder)
        out["request_id"] = rid
    return out


def _log_register(app: ProtocolApp, handler: Route) -> Route:
    def register(req: HttpRequest, form: Form) -> bytes | None:
        if not events.isEnabledFor(logging.INFO):
            return handler(req, form)
        i = _ident(form)
        known = app.registry.get(i["appid"], i["env"], i["zone"], i["hostname"]) is not None
        answer = handler(req, form)
        if not known and app.registry.get(i["appid"], i["env"], i["zone"], i["hostname"]) is not None:
            extra = _fields(req, form, addrs=form.many("addrs"), status=form.first("status"))
            extra["event"] = "register"
            events.info("registered %s/%s", i["appid"], i["hostname"], extra=extra)
        return answer

    return register


def _log_cancel(app: ProtocolApp, handler: Route) -> Route:
    def cancel(req: HttpRequest, form: Form) -> bytes | None:
        if not events.isEnabledFor(logging.INFO):
            return handler(req, form)
        i = _ident(form)
        known = app.registry.get(i["appid"], i["env"], i["zone"], i["hostname"]) is not None
        answer = handler(req, form)
        if known and app.registry.get(i["appid"], i["env"], i["zone"], i["hostname"]) is None:
            extra = _fields(req, form)
            extra["event"] = "cancel"
            events.info("cancelled %s/%s", i["appid"], i["hostname"], extra=extra)
        return answer

    return cancel


def _log_set(app: ProtocolApp, handler: Route) -> Route:
    def set_(req: HttpRequest, form: Form) -> bytes | None:
        answer = handler(req, form)  # a refused set raises BadRequest: nothing changed, nothing logged
        if events.isEnabledFor(logging.INFO):
            hosts = form.many("hostname")
            extra = _fields(req, form, hostname=hosts, status=form.many("status"))
            extra["event"] = "set"
            extra["metadata"] = bool(form.many("metadata"))
            events.info("set %s/%s", form.first("appid"), ",".join(hosts), extra=extra)
        return answer

    return set_


class _StateWatch:
    """Logs guard and peer state changes, checked around the app's periodic calls."""

    def __init__(self, app: ProtocolApp) -> None:
        self.app = app
        self.protecting = app.registry.guard.protecting
        self.peers: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<_StateWatch protecting={self.protecting} peers={len(self.peers)}>"

    def around(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            try:
                return fn()
            finally:
                self.check()

        return call

    def check(self) -> None:
        """Log what changed since the last check (cheap: one flag and one dict per peer)."""
        g = self.app.registry.guard
        if g.protecting != self.protecting:
            self.protecting = g.protecting
            extra = {
                "event": "guard",
                "protecting": g.protecting,
                "renews_last_window": g.last_window,
                "needed_renews": g.needed,
                "expected_renews": g.expected,
            }
            if g.protecting:
                msg = "self-preservation on: %d renews in the last window < %d needed, eviction suspended"
            else:
                msg = "self-preservation off: %d renews in the last window >= %d needed, eviction resumed"
            events.info(msg, g.last_window, g.needed, extra=extra)
        rep = self.app.replicator
        if rep is None:
            return
        now: dict[str, int] = {}
        for name, peer in (*rep.own.items(), *((f"zone:{z}", p) for z, p in rep.remote.items())):
            now[name] = peer.status
            if peer.status != self.peers.get(name, NODE_LOST):
                state = "UP" if peer.status == NODE_UP else "LOST"
                extra = {"event": "peer", "peer": name, "addr": peer.addr, "zone": peer.zone, "status": state}
                events.info("peer %s is %s", name, state, extra=extra)
        self.peers = now
