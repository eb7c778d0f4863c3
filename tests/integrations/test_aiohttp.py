"""discoverd.integrations.aiohttp with a real aiohttp.web application (AppRunner, TCPSite on port 0)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from discoverd import AsyncClient, ConfigError, DiscoverdError, Instance, Status
from discoverd.integrations import aiohttp as discoverd_aiohttp
from discoverd.integrations.aiohttp import DISCOVERD
from discoverd.testing import ServerProcess
from tests.integrations.support import ENV, FAST, ZONE

OTHER = "aio.other"
OTHER_ADDR = "http://10.9.1.1:8000"


@pytest.fixture
async def checker(registry: ServerProcess) -> AsyncIterator[AsyncClient]:
    """A client of the test itself: registers the app the handlers resolve, reads the registry."""
    async with AsyncClient([registry.addr], env=ENV, zone=ZONE, hostname="aio-other-1", config=FAST) as c:
        await c.register(OTHER, [OTHER_ADDR])
        yield c


async def registered(checker: AsyncClient, appid: str) -> list[Instance]:
    return await checker.fetch(appid, status=Status.ALL)


async def resolve(request: web.Request) -> web.Response:
    client = request.app[DISCOVERD]
    assert discoverd_aiohttp.get_client(request) is client
    instances = await client.fetch(request.match_info["appid"])
    return web.json_response({"addrs": [i.addrs for i in instances], "me": client.hostname})


def make_app(
    registry: ServerProcess,
    appid: str,
    hostname: str,
    addrs: list[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> web.Application:
    app = web.Application()
    app.router.add_get("/resolve/{appid}", resolve)
    discoverd_aiohttp.setup(
        app,
        appid=appid,
        nodes=[registry.addr],
        env=ENV,
        zone=ZONE,
        hostname=hostname,
        config=FAST,
        addrs=addrs,
        metadata=metadata,
    )
    return app


async def test_app_on_port_0_registers_once_listening_resolves_and_cancels(
    registry: ServerProcess, checker: AsyncClient
) -> None:
    app = make_app(registry, "aio.web", "aio-1", metadata={"weight": "3"})
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert await registered(checker, "aio.web") == []  # no address yet: nothing registered
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        (url,) = discoverd_aiohttp.site_urls(runner)
        registration = await discoverd_aiohttp.register(app, [url])
        (mine,) = await registered(checker, "aio.web")
        assert (mine.hostname, mine.addrs, mine.metadata) == ("aio-1", [url], {"weight": "3"})
        assert registration.instance.addrs == [url]
        async with aiohttp.ClientSession() as http, http.get(f"{mine.addrs[0]}/resolve/{OTHER}") as r:
            assert r.status == 200, await r.text()
            assert await r.json() == {"addrs": [[OTHER_ADDR]], "me": "aio-1"}
    finally:
        await runner.cleanup()
    assert await registered(checker, "aio.web") == []


async def test_known_address_is_registered_at_start_up_before_the_site_listens(
    registry: ServerProcess, checker: AsyncClient
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = make_app(registry, "aio.known", "aio-2", addrs=[url])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert [i.addrs for i in await registered(checker, "aio.known")] == [[url]]
        await web.SockSite(runner, sock).start()
        async with aiohttp.ClientSession() as http, http.get(f"{url}/resolve/{OTHER}") as r:
            assert (await r.json())["addrs"] == [[OTHER_ADDR]]
    finally:
        await runner.cleanup()
        sock.close()
    assert await registered(checker, "aio.known") == []


async def test_discovery_only_under_a_registering_master(
    registry: ServerProcess, checker: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCOVERD_MASTER_REGISTERED", "1")
    app = make_app(registry, "aio.worker", "aio-3", addrs=["http://127.0.0.1:9"])
    with pytest.raises(ConfigError, match="already"):
        discoverd_aiohttp.setup(app, appid="aio.worker")
    with pytest.raises(DiscoverdError):
        discoverd_aiohttp.get_client(app)  # not started yet
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        client = discoverd_aiohttp.get_client(app)
        assert [i.addrs for i in await client.fetch(OTHER)] == [[OTHER_ADDR]]
        with pytest.raises(ConfigError, match="does not register"):
            await discoverd_aiohttp.register(app, ["http://127.0.0.1:9"])
        assert await registered(checker, "aio.worker") == []
    finally:
        await runner.cleanup()
