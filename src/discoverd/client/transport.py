"""Requests to the registry nodes of the client SDK.

:class:`NodeTransport` sends requests to the registry nodes, with the protocol's ``{code, message, data}``
envelopes decoded into an :class:`Answer`. With a token, every request carries ``Authorization: Bearer``;
with ``https`` the nodes are reached over HTTPS, verified with a custom CA bundle or the system's.

The HTTP itself is :class:`~discoverd.calling.http.HttpClient` (the one aiohttp wrapper below the client
layer); its names are re-exported here for code written against the former home of the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from discoverd import jsoncodec
from discoverd.calling.http import HttpClient, HttpReply, TlsSetting, WebSocket, tls_context
from discoverd.client.config import ClientConfig
from discoverd.errors import Unavailable

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


class NodeTransport:
    """Requests to the registry nodes of one client, over one pool. Task-safe; ``aclose()`` is idempotent.

    ``token`` is sent as ``Authorization: Bearer`` on every request; ``https`` selects the scheme and
    ``tls_ca`` the CA bundle (default: the system's). A bad bundle raises
    :class:`~discoverd.ConfigError` here.
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
    def for_config(cls, config: ClientConfig) -> NodeTransport:
        """The transport a client with ``config`` uses (timeout, token, https, CA)."""
        return cls(
            request_timeout=config.request_timeout,
            token=config.token,
            https=config.https,
            tls_ca=config.tls_ca,
        )

    def __repr__(self) -> str:
        return f"<NodeTransport {self.scheme} token={'set' if self._has_token else 'none'}>"

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


__all__ = [
    "Answer",
    "HttpClient",
    "HttpReply",
    "Params",
    "TlsSetting",
    "NodeTransport",
    "WebSocket",
    "tls_context",
]
