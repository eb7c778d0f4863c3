"""One parsed HTTP request as handlers see it, the handler's type, and the method and path strings
requests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol
from urllib.parse import unquote_to_bytes

from discoverd.core.params import Form

METHODS: Final = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")}
"""Raw method → the method string, reused by every request."""
PATHS: dict[bytes, str] = {}
"""Raw request path → decoded path, for the first :data:`MAX_CACHED_PATHS` short paths seen (the
routes, in practice): at most 256 × 64 bytes whatever clients send."""
MAX_CACHED_PATHS: Final = 256


def decode_path(raw: bytes) -> str:
    """The request path of raw (percent-encoded) ``raw``; cached in :data:`PATHS` while there is room."""
    path = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("latin-1")
    if len(PATHS) < MAX_CACHED_PATHS and len(raw) <= 64:
        PATHS[raw] = path
    return path


class Responder(Protocol):
    """The connection a request came on (``server/http.py``'s ``HttpConnection``)."""

    peer: str

    def finish(self, req: HttpRequest, answer: bytes) -> None: ...


class HttpRequest:
    """One parsed request. ``headers`` maps lower-case raw names to raw values (last value wins);
    :meth:`header` decodes one."""

    __slots__ = (
        "_conn",
        "body",
        "form",
        "headers",
        "keep_alive",
        "method",
        "path",
        "peer",
        "query",
        "state",
    )

    def __init__(
        self,
        conn: Responder,
        method: str,
        path: str,
        query: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.peer: str = conn.peer
        self.state: object = None
        """Free for the handler: a held request keeps its parking record here."""
        self.form: Form | None = None
        """The parsed parameters, once the pipeline parsed them (``server/pipeline.py``)."""

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.path} from {self.peer}>"

    def header(self, name: str) -> str:
        """The value of header ``name`` (lower-case), or ``""``."""
        value = self.headers.get(name.encode("latin-1"))
        return "" if value is None else value.decode("latin-1")

    def respond(self, response: bytes) -> None:
        """Answer a deferred request (a no-op if the connection is gone). Call at most once; the
        answer is written after the answers of the requests ahead of it on its connection."""
        self._conn.finish(self, response)


Handler = Callable[[HttpRequest], "bytes | None"]
"""Returns the encoded answer, or ``None`` to answer later through ``request.respond``."""
