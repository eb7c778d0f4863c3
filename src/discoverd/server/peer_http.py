"""The HTTP client a node's replicator reaches its peers with: one aiohttp session, opened on first use.

The one server-side module that imports ``aiohttp``. The replicator (``server/replication.py``)
imports it when it first talks to a peer (a peer set appears, or the start-up sync has targets), so
a single node — no peers — never loads aiohttp. Transport failures are raised as
:class:`~discoverd.server.peers.PeerUnreachable` (with aiohttp's message), timeouts as
``TimeoutError``, so the replicator names no aiohttp type.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence

import aiohttp

from discoverd.server.peers import PeerUnreachable


class PeerHttp:
    """Requests to peers: keep-alive connections (4 per peer), ``headers`` on every request, TLS with
    ``ssl_context`` for ``https`` URLs (the default context when ``None``), ``timeout`` seconds per
    request in all. One loop; not thread-safe."""

    def __init__(
        self, *, headers: Mapping[str, str], ssl_context: ssl.SSLContext | None, timeout: float
    ) -> None:
        self._headers = dict(headers)
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<PeerHttp {'open' if self._session is not None else 'idle'}>"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit_per_host=4, keepalive_timeout=60.0, ssl=self._ssl if self._ssl is not None else True
            )
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def post(self, url: str, form: Sequence[tuple[str, str]]) -> bytes:
        """POST ``form`` (urlencoded) to ``url``; the answer's body."""
        try:
            async with self._http().post(url, data=form, timeout=self._timeout) as resp:
                return await resp.read()
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(str(exc)) from exc

    async def get(self, url: str) -> bytes:
        """GET ``url``; the answer's body."""
        try:
            async with self._http().get(url, timeout=self._timeout) as resp:
                return await resp.read()
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(str(exc)) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
