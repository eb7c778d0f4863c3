"""Small helpers for the protocol tests: form posts and JSON gets against a node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

Params = list[tuple[str, str]] | dict[str, str]


class Wire:
    """Talks the protocol to one node; returns (parsed JSON, raw response) pairs."""

    def __init__(self, session: aiohttp.ClientSession, addr: str) -> None:
        self.session = session
        self.base = f"http://{addr}/discovery"

    async def post(self, path: str, params: Params) -> tuple[Any, aiohttp.ClientResponse]:
        async with self.session.post(f"{self.base}/{path}", data=params) as r:
            body = await r.read()
            return orjson.loads(body) if body else None, r

    async def get(
        self, path: str, params: Params, headers: dict[str, str] | None = None
    ) -> tuple[Any, aiohttp.ClientResponse]:
        async with self.session.get(f"{self.base}/{path}", params=params, headers=headers) as r:
            body = await r.read()
            return orjson.loads(body) if body else None, r

    async def register(self, appid: str = "demo.svc", hostname: str = "h1", **extra: str) -> Any:
        params = {
            "zone": "sh001",
            "env": "dev",
            "appid": appid,
            "hostname": hostname,
            "status": "1",
            "addrs": f"http://10.0.0.1:{8000 + len(hostname)}",
            **extra,
        }
        body, _ = await self.post("register", params)
        return body


async def eventually(check: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds (no blind sleep); fails the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
