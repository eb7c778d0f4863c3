"""Helpers for the xDS tests: a node with its xDS server, real gRPC backends, a grpcio xDS client.

* :func:`xds_node` — ``running_node`` with ``--xds`` on OS-assigned loopback ports;
* :class:`Backend` — a real ``grpc.aio`` server answering ``/test.Echo/Who`` with its name;
* :class:`Registrar` — register / cancel / set over the HTTP protocol;
* :class:`XdsClient` — ``tests/xds/client_proc.py`` in a child process (grpcio's own xDS client),
  stopped by PID;
* :class:`RawAds` — a bare ADS stream, for what a real xDS client does not show;
* :func:`until` — poll a coroutine until its answer satisfies a check, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import grpc

from discoverd.server.runner import Node
from discoverd.server.xds import protos
from discoverd.server.xds.server import XdsServer
from discoverd.testing import fast_config, running_node

T = TypeVar("T")
CLIENT = Path(__file__).with_name("client_proc.py")
SERVICE, METHOD = "test.Echo", "Who"


@contextlib.asynccontextmanager
async def xds_node(xds: str = "127.0.0.1:0", **config: Any) -> AsyncIterator[tuple[Node, XdsServer]]:
    """A node serving xDS (``--xds``: the node builds, subscribes, starts and stops its own
    :class:`XdsServer`), stopped at the end of the block."""
    async with running_node(fast_config(xds=xds, **config)) as node:
        server = node.xds
        assert isinstance(server, XdsServer) and node.xds_address
        yield node, server


class Backend:
    """A gRPC server on 127.0.0.1 answering ``/test.Echo/Who`` with ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.calls = 0
        self._server: Any = None

    async def start(self) -> Backend:
        async def who(request: bytes, context: Any) -> bytes:
            self.calls += 1
            return self.name.encode()

        handler = grpc.unary_unary_rpc_method_handler(who)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self

    @property
    def addr(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)


@contextlib.asynccontextmanager
async def backends(*names: str) -> AsyncIterator[dict[str, Backend]]:
    """Started backends by name, stopped at the end."""
    started = {n: await Backend(n).start() for n in names}
    try:
        yield started
    finally:
        for b in started.values():
            await b.stop()


class Registrar:
    """Register, cancel and set instances on a node over HTTP."""

    def __init__(self, session: aiohttp.ClientSession, addr: str, *, env: str = "dev") -> None:
        self.session, self.base, self.env = session, f"http://{addr}/discovery", env

    async def _post(self, path: str, params: Mapping[str, str]) -> None:
        async with self.session.post(f"{self.base}/{path}", data=dict(params)) as r:
            body = await r.json(content_type=None)
        assert body["code"] == 0, (path, params, body)

    async def register(
        self,
        appid: str,
        hostname: str,
        addrs: str,
        *,
        zone: str = "z1",
        env: str = "",
        status: int = 1,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        params = {"zone": zone, "env": env or self.env, "appid": appid, "hostname": hostname}
        params |= {"addrs": addrs, "status": str(status), "region": "r1"}
        if metadata is not None:
            params["metadata"] = json.dumps(metadata)
        await self._post("register", params)

    async def cancel(self, appid: str, hostname: str, *, zone: str = "z1", env: str = "") -> None:
        params = {"zone": zone, "env": env or self.env, "appid": appid, "hostname": hostname}
        await self._post("cancel", params)

    async def set_status(self, appid: str, hostname: str, status: int, *, zone: str = "z1") -> None:
        params = {"zone": zone, "env": self.env, "appid": appid, "hostname": hostname}
        await self._post("set", params | {"status": str(status)})


class XdsClient:
    """grpcio's xDS client in a child process (``client_proc.py``); see :meth:`calls`."""

    def __init__(self, bootstrap: Mapping[str, Any] | Path, *, env: Mapping[str, str] | None = None) -> None:
        """``bootstrap``: the JSON (``GRPC_XDS_BOOTSTRAP_CONFIG``), or a file (``GRPC_XDS_BOOTSTRAP``)."""
        if isinstance(bootstrap, Path):
            self.env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        else:
            self.env = {"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap)}
        self.env |= env or {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> XdsClient:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS_BOOTSTRAP")}
        env |= {**self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert await self._line(20.0) == "ready"
        return self

    async def _line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line, "the xDS client process ended"
        return line.decode().strip()

    async def calls(self, appid: str, n: int = 10, deadline: float = 2.0) -> list[str]:
        """``n`` calls in a row to ``xds:///appid``: the backends' names, or ``!CODE`` for failures."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"call {appid} {n} {deadline}\n".encode())
        await self.proc.stdin.drain()
        answer: list[str] = json.loads(await self._line(n * deadline + 10.0))
        return answer

    async def stop(self) -> None:
        """Kill the child by its PID and reap it."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def xds_client(
    bootstrap: Mapping[str, Any] | Path, *, env: Mapping[str, str] | None = None
) -> AsyncIterator[XdsClient]:
    client = await XdsClient(bootstrap, env=env).start()
    try:
        yield client
    finally:
        await client.stop()


async def until(
    get: Callable[[], Awaitable[T]], check: Callable[[T], bool], within: float = 5.0, what: str = ""
) -> T:
    """Call ``get`` until ``check`` holds for its answer; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await get()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or 'a condition'}: last {value!r}"


class RawAds:
    """A bare ADS stream over ``grpc.aio`` (no xDS client logic): send requests, read responses."""

    def __init__(self, target: str, *, credentials: Any = None, metadata: tuple[tuple[str, str], ...] = ()):
        self.target, self.credentials, self.metadata = target, credentials, metadata
        self.channel: Any = None
        self.call: Any = None

    async def __aenter__(self) -> RawAds:
        if self.credentials is None:
            self.channel = grpc.aio.insecure_channel(self.target)
        else:
            self.channel = grpc.aio.secure_channel(self.target, self.credentials)
        service, method = protos.ADS_METHOD
        self.call = self.channel.stream_stream(
            f"/{service}/{method}",
            request_serializer=protos.DiscoveryRequest.SerializeToString,
            response_deserializer=protos.DiscoveryResponse.FromString,
        )(metadata=self.metadata)
        return self

    async def send(self, type_url: str, *names: str, nonce: str = "", error: str = "", **node: str) -> None:
        req = protos.DiscoveryRequest(type_url=type_url, resource_names=names, response_nonce=nonce)
        if node:
            req.node.id = node.get("node_id", "raw")
            req.node.locality.zone = node.get("zone", "")
            req.node.metadata.update({"env": node.get("env", "dev")})
        if error:
            req.error_detail.message = error
        await self.call.write(req)

    async def recv(self, timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(self.call.read(), timeout)

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
