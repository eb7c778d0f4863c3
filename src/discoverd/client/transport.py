"""HTTP for the client layer: the one module that imports aiohttp.

Two layers:

* :class:`HttpClient` — a pooled HTTP session (requests and WebSockets) that the load-balancing
  caller uses to reach instances, and :class:`Transport` uses to reach registry nodes. No aiohttp
  exception escapes it: connection errors, TLS failures and timeouts become
  :class:`~discoverd.errors.Unavailable` whose text is ``"<ExceptionType>: <detail>"``.
* :class:`Transport` — requests to the registry nodes, with the protocol's ``{code, message, data}``
  envelopes decoded into an :class:`Answer`. With a token, every request carries
  ``Authorization: Bearer``; with ``https`` the nodes are reached over HTTPS, verified with a custom
  CA bundle or the system's.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from discoverd import jsoncodec
from discoverd.client.config import ClientConfig
from discoverd.errors import ConfigError, Unavailable

Params = Sequence[tuple[str, str]]
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


class Answer:
    """A decoded answer: ``code``, ``message``, ``data`` (``None`` when absent) and ``error``."""

    __slots__ = ("code", "data", "error", "message")

    def __init__(self, doc: dict[str, Any]) -> None:
        code = doc.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            raise Unavailable("malformed answer: no integer code")
        self.code: int = code
        self.message = str(doc.get("message", ""))
        self.data: Any = doc.get("data")
        self.error: Any = doc.get("error")

    def __repr__(self) -> str:
        return f"Answer(code={self.code}, message={self.message!r})"


class Transport:
    """Requests to the registry nodes of one client, over one pool. Task-safe; ``aclose()`` is idempotent.

    ``token`` is sent as ``Authorization: Bearer`` on every request; ``https`` selects the scheme and
    ``tls_ca`` the CA bundle (default: the system's). A bad bundle raises :class:`ConfigError` here.
    """

    def __init__(
        self,
        *,
        request_timeout: float,
        user_agent: str = "discoverd-python",
        token: str = "",
        https: bool = False,
        tls_ca: str = "",
    ) -> None:
        self._timeout = request_timeout
        headers = {"User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._has_token = bool(token)
        self.scheme = "https" if https else "http"
        tls: TlsSetting = tls_context(tls_ca) if https and tls_ca else True
        self._http = HttpClient(headers=headers, tls=tls, keepalive=40.0)

    @classmethod
    def for_config(cls, config: ClientConfig) -> Transport:
        """The transport a client with ``config`` uses (timeout, token, https, CA)."""
        return cls(
            request_timeout=config.request_timeout,
            token=config.token,
            https=config.https,
            tls_ca=config.tls_ca,
        )

    def __repr__(self) -> str:
        return f"<Transport {self.scheme} token={'set' if self._has_token else 'none'}>"

    async def call(
        self,
        node: str,
        method: str,
        path: str,
        params: Params,
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """``method`` ``/discovery/<path>`` on ``node``; POST sends a urlencoded body.

        Raises :class:`Unavailable` on connection errors, timeouts, non-200 or non-JSON answers.
        """
        url = f"{self.scheme}://{node}/discovery/{path}"
        pairs = list(params)
        try:
            reply = await self._http.request(
                "POST" if method == "POST" else "GET",
                url,
                params=None if method == "POST" else pairs,
                data=pairs if method == "POST" else None,
                headers=headers,
                timeout=timeout if timeout is not None else self._timeout,
            )
        except Unavailable as exc:
            raise Unavailable(f"{node}: {exc}") from None
        if reply.status != 200:
            raise Unavailable(f"{node}: HTTP {reply.status}")
        return Answer(_decode_envelope(node, reply.body))

    async def aclose(self) -> None:
        """Close the connections to the nodes. Idempotent."""
        await self._http.aclose()


def _decode_envelope(node: str, body: bytes) -> dict[str, Any]:
    try:
        doc = jsoncodec.loads(body)
    except jsoncodec.DecodeError:
        raise Unavailable(f"{node}: answer is not JSON") from None
    if not isinstance(doc, dict):
        raise Unavailable(f"{node}: answer is not a JSON object")
    return doc
