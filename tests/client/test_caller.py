"""The load-balancing caller against real aiohttp backends registered through a real server."""

from __future__ import annotations

import asyncio
import collections
import math
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from aiohttp import WSMsgType, web

from discoverd.calling.caller import AsyncCaller, CalleeConfig, CallFailed, CallRoute
from discoverd.calling.httpx_transport import DiscoverdTransport
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.core.ejection import Ejector
from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node

CFG = ClientConfig(request_timeout=2, start_timeout=3, backoff_base=0.05, backoff_cap=0.2)


@dataclass
class Backend:
    name: str
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    status: int = 200
    runner: web.AppRunner | None = None
    port: int = 0

    def app(self) -> web.Application:
        async def who(request: web.Request) -> web.Response:
            self.hits[request.method] += 1
            return web.Response(status=self.status, text=self.name)

        async def headers(request: web.Request) -> web.Response:
            return web.json_response(dict(request.headers))

        async def echo(request: web.Request) -> web.Response:
            self.hits[request.method] += 1
            body = await request.read()
            return web.Response(
                status=self.status, body=self.name.encode() + b":" + body + request.query_string.encode()
            )

        async def ws(request: web.Request) -> web.WebSocketResponse:
            sock = web.WebSocketResponse()
            await sock.prepare(request)
            async for msg in sock:
                if msg.type == WSMsgType.TEXT:
                    await sock.send_str(f"{self.name}:{msg.data}")
            return sock

        app = web.Application()
        app.router.add_get("/who", who)
        app.router.add_get("/headers", headers)
        app.router.add_route("*", "/echo", echo)
        app.router.add_get("/ws", ws)
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def server() -> AsyncIterator[Node]:
    async with running_node(fast_config()) as node:
        yield node


@pytest.fixture
async def backends(server: Node) -> AsyncIterator[list[Backend]]:
    """Four backends of app ``pay`` with weights 10/20/30/40, registered through the server."""
    items = [Backend(f"b{i}") for i in range(4)]
    async with AsyncClient([server.address], env="dev", zone="sh001", hostname="prov", config=CFG) as prov:
        for i, b in enumerate(items):
            await b.start()
            await prov.register(
                "pay", [f"http://127.0.0.1:{b.port}"], metadata={"weight": str(10 * (i + 1))}, hostname=b.name
            )
        yield items
        for b in items:
            await b.stop()


@pytest.fixture
async def consumer(server: Node) -> AsyncIterator[AsyncClient]:
    async with AsyncClient([server.address], env="dev", zone="sh001", hostname="cons", config=CFG) as c:
        yield c


@pytest.mark.parametrize("balancer", ["least-used", "round-robin", "random", "p2c"])
async def test_weights_are_honoured(backends: list[Backend], consumer: AsyncClient, balancer: str) -> None:
    caller = consumer.caller(balancer=balancer)
    calls = 10_000
    names: collections.Counter[str] = collections.Counter()
    sem = asyncio.Semaphore(16)

    async def one() -> None:
        async with sem:
            names[(await caller.get("pay", "/who")).text()] += 1

    await asyncio.gather(*(one() for _ in range(calls)))
    # p2c also follows measured latency by design: on this shared machine the backends' latencies
    # differ by noise, so its shares get a wider band here (its unit tests hold it to ±5 % with equal
    # latencies); the other balancers follow weights exactly.
    # Weighted random is a binomial draw per backend: its band is 4.5 standard deviations (a false alarm
    # about once in 150,000 runs); ±5 % of the smallest share was only 1.7 σ and failed now and then.
    tolerance = 0.10 if balancer == "p2c" else 0.05
    for i, b in enumerate(backends):
        p = (i + 1) / 10
        expected = calls * p
        band = tolerance * expected
        if balancer == "random":
            band = 4.5 * math.sqrt(calls * p * (1 - p))
        assert abs(names[b.name] - expected) <= band, (balancer, names)


async def test_retries_never_repeat_an_instance(backends: list[Backend], consumer: AsyncClient) -> None:
    for b in backends:
        b.status = 503
    caller = consumer.caller(default=CalleeConfig(max_attempts=3))
    result = await caller.get("pay", "/who")
    assert result.status == 503 and result.attempts == 3
    assert sorted(b.hits["GET"] for b in backends) == [0, 1, 1, 1]


async def test_non_idempotent_methods_are_not_retried_by_default(
    backends: list[Backend], consumer: AsyncClient
) -> None:
    for b in backends:
        b.status = 502
    plain = consumer.caller()
    assert (await plain.post("pay", "/echo", data=b"x")).attempts == 1
    assert sum(b.hits["POST"] for b in backends) == 1
    bold = consumer.caller(default=CalleeConfig(retry_non_idempotent=True, max_attempts=4))
    assert (await bold.post("pay", "/echo", data=b"x")).attempts == 4
    assert sum(b.hits["POST"] for b in backends) == 5


async def test_killed_backend_is_ejected_and_readmitted(
    backends: list[Backend], consumer: AsyncClient
) -> None:
    caller = consumer.caller(
        balancer="round-robin", ejector=Ejector(consecutive_failures=2, base_ejection=0.5)
    )
    victim = backends[3]
    await victim.stop()
    for _ in range(40):  # every call succeeds: the dead one is retried around, then ejected
        assert (await caller.get("pay", "/who")).text() != victim.name
    ejected = caller.ejector.ejected(asyncio.get_running_loop().time())
    assert [k.rsplit("/", 1)[1] for k in ejected] == [victim.name] or any(victim.name in k for k in ejected)
    await victim.start()  # same port
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + 10
    while victim.name not in seen:
        assert asyncio.get_running_loop().time() < deadline, "never re-admitted"
        seen.add((await caller.get("pay", "/who")).text())
        await asyncio.sleep(0.02)


async def test_all_dead_fails_with_every_attempt(backends: list[Backend], consumer: AsyncClient) -> None:
    for b in backends:
        await b.stop()
    caller = consumer.caller(default=CalleeConfig(max_attempts=4, timeout=5))
    with pytest.raises(CallFailed) as info:
        await caller.get("pay", "/who")
    assert len({k for k, _ in info.value.attempts}) == 4


async def test_headers_relayed_and_added(backends: list[Backend], consumer: AsyncClient) -> None:
    caller = consumer.caller(default=CalleeConfig(token="s3cret", headers={"X-Extra": "1"}), from_app="shop")
    incoming = {"X-Request-ID": "req-1", "x-real-ip": "1.2.3.4", "X-Forwarded-For": "5.6.7.8", "Cookie": "no"}
    got = (await caller.get("pay", "/headers", context=incoming)).json()
    assert (
        got["X-Request-ID"] == "req-1"
        and got["X-Real-IP"] == "1.2.3.4"
        and got["X-Forwarded-For"] == "5.6.7.8"
    )
    assert "Cookie" not in got
    assert (got["X-From-App"], got["X-From-Node"]) == ("shop", "cons")
    assert (got["Access-Token"], got["X-Extra"]) == ("s3cret", "1")


async def test_route_hook_rewrites(backends: list[Backend], consumer: AsyncClient) -> None:
    def hook(route: CallRoute) -> CallRoute:
        return CallRoute(route.appid, "POST", "/echo", b"rewritten")

    caller = consumer.caller(route=hook)
    assert (await caller.get("pay", "/who")).text().endswith(":rewritten")


async def test_websocket_echo(backends: list[Backend], consumer: AsyncClient) -> None:
    caller = consumer.caller()
    async with caller.websocket("pay", "/ws") as ws:
        await ws.send_str("hello")
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT and msg.data.endswith(":hello")


async def test_httpx_transport(backends: list[Backend], consumer: AsyncClient) -> None:
    caller: AsyncCaller = consumer.caller()
    async with httpx.AsyncClient(transport=DiscoverdTransport(caller)) as http:
        r = await http.post("http://pay/echo?x=1", content=b"body")
        assert r.status_code == 200
        name, _, rest = r.text.partition(":")
        assert name in {b.name for b in backends} and rest == "bodyx=1"
        r = await http.get("http://pay/headers", headers={"X-Request-ID": "abc"})
        assert orjson.loads(r.content)["X-Request-ID"] == "abc"
        with pytest.raises(httpx.ConnectError):
            await http.get("http://nobody/who")


async def test_sync_caller_twin(backends: list[Backend], server: Node) -> None:
    from discoverd.client.sync_client import Client

    def work() -> tuple[int, str]:
        with Client([server.address], env="dev", zone="sh001", hostname="sync-cons", config=CFG) as c:
            r = c.caller().post("pay", "/echo", data=b"hi")
            return r.status, r.text()

    status, text = await asyncio.to_thread(work)
    assert status == 200 and text.split(":", 1)[1] == "hi"


async def test_call_cli(backends: list[Backend], server: Node) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "discoverd",
        "call",
        "pay",
        "/echo?q=1",
        "--method",
        "POST",
        "--data",
        "cli",
        "--nodes",
        server.address,
        "--env",
        "dev",
        "--zone",
        "sh001",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert out.decode().split(":", 1)[1] == "cliq=1"
    assert b"HTTP 200 from b" in err
