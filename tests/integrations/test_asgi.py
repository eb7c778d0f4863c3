"""discoverd.integrations.asgi under uvicorn (in this process, on a socket bound to port 0):
FastAPI with the lifespan, Starlette with the middleware, and a bare ASGI app without lifespan."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import uvicorn
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from discoverd import AsyncClient, ConfigError, DiscoverdError, Instance, Status
from discoverd.integrations import asgi as discoverd_asgi
from discoverd.integrations.asgi import DiscoverdMiddleware, Receive, Scope, Send
from discoverd.testing import ServerProcess
from tests.helpers import eventually
from tests.integrations.support import ENV, FAST, ZONE

OTHER = "asgi.other"
OTHER_ADDR = "http://10.9.0.1:8000"


@pytest.fixture
async def checker(registry: ServerProcess) -> AsyncIterator[AsyncClient]:
    """A client of the test itself: registers the app the handlers resolve, reads the registry."""
    async with AsyncClient([registry.addr], env=ENV, zone=ZONE, hostname="asgi-other-1", config=FAST) as c:
        await c.register(OTHER, [OTHER_ADDR])
        yield c


def options(registry: ServerProcess, hostname: str) -> dict[str, Any]:
    return {"nodes": [registry.addr], "env": ENV, "zone": ZONE, "hostname": hostname, "config": FAST}


async def registered(checker: AsyncClient, appid: str) -> list[Instance]:
    """What the node holds for ``appid`` in any status (asked of the node, not of a cache)."""
    return await checker.fetch(appid, status=Status.ALL)


def bound() -> tuple[socket.socket, str]:
    """A loopback socket bound to an OS-assigned port, and its URL: the address is known before
    the application is made, as with a fixed port in production."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def uvicorn_server(app: Any, log_level: str = "warning") -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, lifespan="on", ws="none", log_level=log_level))


@asynccontextmanager
async def serving(app: Any, sock: socket.socket) -> AsyncIterator[uvicorn.Server]:
    """``app`` under uvicorn on ``sock`` from start-up (lifespan included) until shutdown."""
    server = uvicorn_server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), within=15, what="uvicorn start-up")
        assert server.started, "uvicorn did not start"
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_fastapi_lifespan_registers_resolves_and_cancels(
    registry: ServerProcess, checker: AsyncClient
) -> None:
    sock, url = bound()
    app = FastAPI(
        lifespan=discoverd_asgi.lifespan(
            appid="asgi.fastapi", addrs=[url], metadata={"weight": "7"}, **options(registry, "fa-1")
        )
    )

    @app.get("/resolve/{appid}")
    async def resolve(appid: str, request: Request) -> dict[str, Any]:
        client = discoverd_asgi.get_client(request)
        assert client is request.app.state.discoverd is request.state.discoverd
        return {"addrs": [i.addrs for i in await client.fetch(appid)], "me": client.hostname}

    async with serving(app, sock):
        (mine,) = await registered(checker, "asgi.fastapi")
        assert (mine.hostname, mine.addrs, mine.metadata) == ("fa-1", [url], {"weight": "7"})
        body = await get_json(f"{mine.addrs[0]}/resolve/{OTHER}")
        assert body == {"addrs": [[OTHER_ADDR]], "me": "fa-1"}
    assert await registered(checker, "asgi.fastapi") == []


async def test_starlette_middleware_starts_before_the_app_lifespan_and_closes_after(
    registry: ServerProcess, checker: AsyncClient
) -> None:
    seen: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
        # the application's own start-up already finds the instance registered
        seen.append(f"start:{len(await registered(checker, 'asgi.starlette'))}")
        yield
        seen.append(f"stop:{len(await registered(checker, 'asgi.starlette'))}")

    async def resolve(request: Any) -> JSONResponse:
        client = discoverd_asgi.get_client(request)
        return JSONResponse([i.addrs for i in await client.fetch(request.path_params["appid"])])

    sock, url = bound()
    app = Starlette(
        routes=[Route("/resolve/{appid}", resolve)],
        lifespan=app_lifespan,
        middleware=[
            Middleware(DiscoverdMiddleware, appid="asgi.starlette", addrs=[url], **options(registry, "st-1"))
        ],
    )
    async with serving(app, sock):
        assert [i.addrs for i in await registered(checker, "asgi.starlette")] == [[url]]
        assert await get_json(f"{url}/resolve/{OTHER}") == [[OTHER_ADDR]]
    assert seen == ["start:1", "stop:1"]
    assert await registered(checker, "asgi.starlette") == []


async def test_middleware_answers_the_lifespan_of_an_app_without_one(
    registry: ServerProcess, checker: AsyncClient
) -> None:
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", "this app knows no lifespan"
        client = discoverd_asgi.get_client(scope)
        body = repr([i.addrs for i in await client.fetch(OTHER)]).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body})

    sock, url = bound()
    app = DiscoverdMiddleware(bare, appid="asgi.bare", addrs=[url], **options(registry, "bare-1"))
    async with serving(app, sock):
        assert [i.hostname for i in await registered(checker, "asgi.bare")] == ["bare-1"]
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert await response.text() == repr([[OTHER_ADDR]])
    assert await registered(checker, "asgi.bare") == []


async def test_unreachable_registry_fails_the_start_up() -> None:
    dead, _ = bound()  # bound, never listening: every connection is refused
    sock, url = bound()
    app = FastAPI(
        lifespan=discoverd_asgi.lifespan(
            appid="asgi.dead",
            addrs=[url],
            nodes=[f"127.0.0.1:{dead.getsockname()[1]}"],
            config=FAST.replace(start_timeout=0.5),
        )
    )
    server = uvicorn_server(app, log_level="critical")
    with pytest.raises(SystemExit) as leaving:  # uvicorn's exit status for a failed start-up
        await server.serve(sockets=[sock])
    assert leaving.value.code == 3
    assert not server.started
    sock.close()
    dead.close()


async def test_discovery_only_registers_nothing(
    registry: ServerProcess, checker: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="addresses"):
        discoverd_asgi.lifespan(appid="asgi.noaddr", register=True, **options(registry, "x"))
    # under a gunicorn master that registered, the default is discovery only: addresses not needed
    monkeypatch.setenv("DISCOVERD_MASTER_REGISTERED", "1")
    app = FastAPI(lifespan=discoverd_asgi.lifespan(appid="asgi.worker", **options(registry, "w-1")))
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        client = state["discoverd"]
        assert client is discoverd_asgi.get_client(app)
        assert [i.addrs for i in await client.fetch(OTHER)] == [[OTHER_ADDR]]
        assert await registered(checker, "asgi.worker") == []
    with pytest.raises(DiscoverdError):
        discoverd_asgi.get_client({"type": "http", "state": {}})
