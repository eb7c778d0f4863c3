"""The embedded registry with nothing but ``pip install discoverd``: register, watch, balance, call.

Run: ``python examples/memory_registry.py``. It serves one tiny HTTP app on loopback, registers it in
the in-process ``memory://`` registry, and calls it by appid through the load-balancing caller.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from discoverd import Instance, open_registry

OPTIONAL = ("redis", "msgpack", "cryptography", "httptools", "uvloop", "prometheus_client", "grpc", "httpx")


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": request.query.get("name", "world")})


async def main() -> None:
    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with open_registry("memory://") as registry:
            events = registry.watch("demo.hello")
            me = Instance(zone="local", env="dev", appid="demo.hello", hostname="h1", addrs=[f"http://127.0.0.1:{port}"])
            await registry.register(me)
            print("event:", (await anext(events)).action.value)
            await events.aclose()
            caller = registry.caller()
            result = await caller.get("demo.hello", "/hello", params={"name": "discoverd"})
            print("call:", result.status, result.json())
            assert result.json() == {"hello": "discoverd"}
    finally:
        await runner.cleanup()
    loaded = sorted(m for m in OPTIONAL if m in sys.modules)
    print("optional libraries loaded:", loaded or "none")
    assert not loaded, loaded


if __name__ == "__main__":
    asyncio.run(main())
