"""Encoding HTTP/1.1 answers: status line, headers (``Date`` cached per second), body.

Handlers build their whole answer as one ``bytes`` (:func:`build_response`, :func:`text_response`);
the HTTP front writes it as it is, except for ``HEAD`` requests, whose answers lose their body but
keep every header, ``Content-Length`` included (:func:`head_only`), as Go's net/http does.
"""

from __future__ import annotations

import time
from typing import Final

_REASONS: Final = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Request Entity Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
"""The interim answer to ``Expect: 100-continue``."""


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> bytes:
    """``seconds`` (Unix time) as an HTTP date, RFC 9110's IMF-fixdate: ``Sun, 06 Nov 1994 08:49:37 GMT``.

    What ``email.utils.formatdate(seconds, usegmt=True)`` gives (English names whatever the locale),
    without importing the ``email`` package (about 1 MB for one header).
    """
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode()


class _Clock:
    """The ``Date`` header, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = http_date(now)
        return self._value


_CLOCK = _Clock()


def build_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json; charset=utf-8",
    headers: bytes = b"",
    close: bool = False,
) -> bytes:
    """Encode a whole HTTP/1.1 answer (status line, headers, body).

    ``headers`` are extra header lines, pre-rendered (``b"Name: value\\r\\n"`` each).
    """
    if close:
        headers += b"Connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nDate: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        _REASONS.get(status, b"Unknown"),
        content_type,
        _CLOCK.date(),
        len(body),
        headers,
        body,
    )


def text_response(status: int, text: str, *, close: bool = False) -> bytes:
    """A ``text/plain`` answer."""
    return build_response(status, text.encode(), content_type=b"text/plain; charset=utf-8", close=close)


def head_only(answer: bytes) -> bytes:
    """``answer`` without its body: the status line and headers (with their ``Content-Length``)."""
    end = answer.find(b"\r\n\r\n")
    return answer if end < 0 else answer[: end + 4]
