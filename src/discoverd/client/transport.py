"""HTTP to the registry nodes (aiohttp), with the protocol's envelopes decoded.

No aiohttp exception escapes: transport failures (certificate failures included) become
:class:`~discoverd.errors.Unavailable`. With a token, every request carries ``Authorization: Bearer``;
with ``https`` the nodes are reached over HTTPS, verified with a custom CA bundle or the system's.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from discoverd.client.config import ClientConfig
from discoverd.errors import ConfigError, Unavailable

Params = Sequence[tuple[str, str]]


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


def tls_context(cafile: str = "") -> ssl.SSLContext:
    """A verifying client context (host names checked, TLS ≥ 1.2) trusting ``cafile`` (a PEM bundle)
    or, when empty, the system's CAs. Raises :class:`ConfigError` when the bundle cannot be loaded."""
    try:
        ctx = ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_ca {cafile}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Transport:
    """One aiohttp session for all the nodes of a client. Task-safe; ``aclose()`` is idempotent.

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
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"User-Agent": user_agent}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.scheme = "https" if https else "http"
        self._ssl: ssl.SSLContext | bool = tls_context(tls_ca) if https and tls_ca else True

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
        return f"<Transport {self.scheme} token={'set' if 'Authorization' in self._headers else 'none'}>"

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=40.0, ssl=self._ssl),
            )
        return self._session

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
        session = self._open()
        url = f"{self.scheme}://{node}/discovery/{path}"
        limit = aiohttp.ClientTimeout(total=timeout if timeout is not None else self._timeout)
        try:
            if method == "POST":
                ctx = session.post(url, data=list(params), timeout=limit, headers=headers)
            else:
                ctx = session.get(url, params=list(params), timeout=limit, headers=headers)
            async with ctx as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise Unavailable(f"{node}: HTTP {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{node}: {type(exc).__name__}: {exc}") from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Unavailable(f"{node}: answer is not JSON") from None
        if not isinstance(doc, dict):
            raise Unavailable(f"{node}: answer is not a JSON object")
        return Answer(doc)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
