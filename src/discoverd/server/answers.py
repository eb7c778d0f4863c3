"""Encoded protocol answers: HTTP 200 with the JSON envelope and the ``Kratos-Status-Code`` header.

The Go server answers every protocol outcome with HTTP 200 and mirrors the envelope's ``code`` in a
``kratos-status-code`` header, except for parameter-binding failures (no header). The constant
answers are encoded once here.
"""

from __future__ import annotations

from typing import Final

from discoverd.core import wire
from discoverd.server.http import build_response

_STATUS_HEADERS: Final = {c: b"Kratos-Status-Code: %d\r\n" % c for c in (0, -304, -400, -404, -409, -500)}
OK_BODY: Final = wire.envelope(0)


def json_answer(code: int, body: bytes, *, status_header: bool = True) -> bytes:
    """HTTP 200 with the JSON ``body`` and the ``kratos-status-code`` header mirroring ``code``."""
    if not status_header:
        return build_response(200, body)
    line = _STATUS_HEADERS.get(code) or b"Kratos-Status-Code: %d\r\n" % code
    return build_response(200, body, headers=line)


def ok() -> bytes:
    """``{"code":0,"message":"0","ttl":1}``."""
    return json_answer(0, OK_BODY)


def not_modified() -> bytes:
    """The ``-304`` of a long poll whose hold ran out (or a graceful stop)."""
    return json_answer(-304, wire.envelope(-304))


def error(code: int, message: str | None = None, *, status_header: bool = True) -> bytes:
    """An envelope with ``code`` and ``message`` (the code as text when ``None``), no data."""
    return json_answer(code, wire.envelope(code, message=message), status_header=status_header)


def too_many_polls() -> bytes:
    """``-503``: the node holds ``max_polls`` requests already; clients retry after a backoff."""
    return error(-503, "too many held polls")
