"""HTTP for the calling layer: the one module of ``calling`` that imports aiohttp.

:class:`HttpClient` is a pooled HTTP session (requests and WebSockets) that the load-balancing caller
(:mod:`discoverd.calling.caller`) uses to reach instances, and the client SDK's
:class:`~discoverd.client.transport.NodeTransport` uses to reach registry nodes. No aiohttp exception
escapes it: connection errors, TLS failures and timeouts become :class:`~discoverd.errors.Unavailable`
whose text is ``"<ExceptionType>: <detail>"``. :func:`tls_context` builds the verifying client contexts.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from discoverd.errors import ConfigError, Unavailable

WebSocket = aiohttp.ClientWebSocketResponse
"""An open client WebSocket (``send_str``, ``receive``, ``close``, async iteration)."""
TlsSetting = ssl.SSLContext | bool
"""Per-request TLS: a verifying context, or ``True`` for the session's default (system CAs)."""


def tls_context(cafile: str = "") -> ssl.SSLContext:
    """A verifying client context (host names checked, TLS ≥ 1.2) trusting ``cafile`` (a PEM bundle)
    or, when empty, the system's CAs. Raises :class:`ConfigError` when the bundle cannot be loaded."""
    try:
        ctx = ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_ca {cafile}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _unreachable(exc: BaseException) -> Unavailable:
    return Unavailable(f"{type(exc).__name__}: {exc}")


_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A complete HTTP answer: status, headers (last value per name) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


class HttpClient:
    """One pooled HTTP session, opened on first use. Task-safe in one loop.

    ``headers`` are sent with every request; ``tls`` is the default TLS setting of the pool and
    ``keepalive`` how long idle connections are kept (seconds). ``aclose()`` closes the pool; a
    later request opens a new one.
    """

    def __init__(
        self, *, headers: Mapping[str, str] | None = None, tls: TlsSetting = True, keepalive: float = 15.0
    ) -> None:
        self._headers = dict(headers or {})
        self._tls = tls
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<HttpClient open={self._session is not None}>"

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive, ssl=self._tls),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        params: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        tls: TlsSetting = True,
    ) -> HttpReply:
        """Send one request and read the whole answer within ``timeout`` seconds.

        ``params`` become the query string, ``data`` the body (bytes, str, or pairs sent urlencoded).
        Any HTTP status is returned; raises :class:`Unavailable` when no answer was read.
        """
        try:
            async with self._open().request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                ssl=tls,
            ) as resp:
                body = await resp.read()
                return HttpReply(resp.status, dict(resp.headers), body)
        except _NETWORK_ERRORS as exc:
            raise _unreachable(exc) from None

    async def websocket(
        self,
        url: str,
        *,
        close_timeout: float,
        headers: Mapping[str, str] | None = None,
        tls: TlsSetting = True,
    ) -> WebSocket:
        """Open a WebSocket to ``url`` (``ws://`` / ``wss://``); the receiver closes it.

        ``close_timeout`` bounds the closing handshake. Raises :class:`Unavailable` when connecting fails.
        """
        try:
            return await self._open().ws_connect(
                url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout), ssl=tls
            )
        except _NETWORK_ERRORS as exc:
            raise _unreachable(exc) from None

    async def aclose(self) -> None:
        """Close the pool and its connections. Idempotent."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


__all__ = ["HttpClient", "HttpReply", "TlsSetting", "WebSocket", "tls_context"]
