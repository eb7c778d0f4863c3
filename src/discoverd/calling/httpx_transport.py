"""An ``httpx`` transport that routes ``http://<appid>/path`` through a discoverd caller.

    transport = DiscoverdTransport(client.caller())
    async with httpx.AsyncClient(transport=transport) as http:
        r = await http.get("http://main.account/users/42")

``caller`` may come from a client or from any registry (``open_registry(url).caller()``). The URL's
host is the appid; balancing, retries, ejection and header relay are the caller's. A call
that fails on every instance raises ``httpx.ConnectError``. Requires the optional ``httpx`` package.
"""

from __future__ import annotations

from discoverd.calling.caller import AsyncCaller, CallFailed
from discoverd.errors import MissingExtra

try:
    import httpx
except ImportError as exc:
    raise MissingExtra("httpx", "httpx", "the httpx transport (discoverd.integrations.httpx)") from exc

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class DiscoverdTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=DiscoverdTransport(caller))``. Does not own the caller."""

    def __init__(self, caller: AsyncCaller) -> None:
        self.caller = caller

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        appid = request.url.host
        target = request.url.raw_path.decode("ascii")
        body = await request.aread()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            result = await self.caller.request(
                request.method, appid, target, data=body or None, headers=headers
            )
        except CallFailed as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        out_headers = [(k, v) for k, v in result.headers.items() if k.lower() not in _HOP_BY_HOP]
        return httpx.Response(result.status, headers=out_headers, content=result.body, request=request)
