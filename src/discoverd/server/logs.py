"""Structured logs of a node: one line per event, as text or JSON, with the request id relayed.

* :func:`configure` installs one handler on the root logger (``config.log_level``, ``config.log_format``):
  ``text`` lines read ``TIME LEVEL LOGGER MESSAGE key=value ...``; ``json`` lines are one object each
  with ``time``, ``level``, ``logger``, ``message`` and every ``extra=`` field of the record.
* A request carrying ``X-Request-Id`` (or a W3C ``traceparent``: its trace id) runs with
  :data:`request_id` set by the pipeline (``server/pipeline.py``), so every line logged while
  handling it carries ``request_id``; the node's :class:`RequestScope` holds the request itself.
* The registry events themselves are logged by the event-log subscriber (``server/eventlog.py``).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import IO, Any, Final

from discoverd import jsoncodec
from discoverd.config import ServerConfig
from discoverd.errors import ConfigError
from discoverd.server.http import HttpRequest

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("discoverd_request_id", default="")
"""The id of the request being handled ("" outside a request that carried one)."""


class RequestScope:
    """The request a node is handling right now: set by the pipeline's first stage around the
    synchronous part of each request, ``None`` between requests. One per node, read on the node's
    loop (a plain attribute: handlers never await, so requests never interleave within it)."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: HttpRequest | None = None

    def __repr__(self) -> str:
        return f"<RequestScope {self.current!r}>"

    @property
    def peer(self) -> str:
        """The client address of the current request ("" between requests)."""
        req = self.current
        return "" if req is None else req.peer


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
        return jsoncodec.dumps(s).decode()
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
        return jsoncodec.dumps(doc, default=str).decode()


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
