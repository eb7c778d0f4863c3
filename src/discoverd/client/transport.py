"""HTTP to the registry nodes (aiohttp), with the protocol's envelopes decoded.

No aiohttp exception escapes: transport failures become :class:`~discoverd.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

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


class Transport:
    """One aiohttp session for all the nodes of a client. Task-safe; ``aclose()`` is idempotent."""

    def __init__(self, *, request_timeout: float, user_agent: str = "discoverd-python") -> None:
        self._timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"User-Agent": user_agent}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=40.0),
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
        url = f"http://{node}/discovery/{path}"
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
