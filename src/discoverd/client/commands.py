"""The client sub-commands of the CLI: ``register``, ``fetch``, ``watch``, ``nodes``, ``call``.

Each takes the client identity flags (``--nodes``, ``--env``, ``--zone``, ``--region``,
``--hostname``; env vars as in kratos) and prints JSON lines, so scripts can consume the output.
``call`` prints the answer's body; with ``--registry URL`` it finds the app through that registry
(``redis://``, ``gossip://``, ``discoverd://``, ``?cache=``…) instead of the discoverd nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from discoverd import jsoncodec
from discoverd.calling.caller import AsyncCaller, CallResult
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.open import open_registry
from discoverd.core import wire
from discoverd.errors import DiscoverdError, error_for_code
from discoverd.model import Instance


def add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", help="registry nodes a:p,b:p (env DISCOVERY_NODES, default 127.0.0.1:7171)")
    p.add_argument("--env", help="deploy env (env DEPLOY_ENV, default dev)")
    p.add_argument("--zone", help="zone (env ZONE, default zone01)")
    p.add_argument("--region", help="region (env REGION, default region01)")
    p.add_argument("--hostname", help="this client's / instance's hostname (env HOSTNAME)")
    p.add_argument("--start-timeout", type=float, default=10.0, help="seconds to find a node (10)")


def add_client_commands(sub: Any) -> None:
    reg = sub.add_parser("register", help="register an instance until Ctrl-C, then cancel it")
    reg.add_argument("appid")
    reg.add_argument("addrs", nargs="+", metavar="ADDR", help="scheme://host:port")
    reg.add_argument("--metadata", default=None, help='JSON object of strings, e.g. {"weight":"10"}')
    reg.add_argument("--version", default="")
    reg.add_argument("--status", type=int, default=1, help="1 UP (default) or 2 WAITING")
    fetch = sub.add_parser("fetch", help="print the instances of an app (JSON, one per line)")
    fetch.add_argument("appid")
    fetch.add_argument("--status", type=int, default=1, help="bitmask: 1 UP, 2 WAITING, 3 all")
    watch = sub.add_parser("watch", help="print the app's instance list on every change")
    watch.add_argument("appid")
    sub.add_parser("nodes", help="print the registry nodes of the zone")
    call = sub.add_parser("call", help="call APPID PATH on a balanced instance; prints the body")
    call.add_argument("appid")
    call.add_argument("path")
    call.add_argument("--method", default="GET")
    call.add_argument("--data", default=None, help="request body")
    call.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    call.add_argument("--timeout", type=float, default=10.0)
    call.add_argument(
        "--registry",
        default=None,
        metavar="URL",
        help="find APPID through this registry (redis://, gossip://, discoverd://...) instead of --nodes",
    )
    for p in (reg, fetch, watch, sub.choices["nodes"], call):
        add_client_flags(p)


def _client(ns: argparse.Namespace) -> AsyncClient:
    nodes = ns.nodes
    if nodes is None:
        nodes = os.environ.get("DISCOVERY_NODES") or "127.0.0.1:7171"
    return AsyncClient(
        nodes,
        env=ns.env,
        zone=ns.zone,
        region=ns.region,
        hostname=ns.hostname,
        config=ClientConfig(start_timeout=ns.start_timeout),
    )


def _line(obj: Any) -> None:
    sys.stdout.write(jsoncodec.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def _instances(items: list[Instance]) -> list[dict[str, Any]]:
    return [wire.instance_obj(i) for i in items]


async def _register(ns: argparse.Namespace) -> int:
    metadata = None
    if ns.metadata:
        metadata = jsoncodec.loads(ns.metadata)
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            print("discoverd: --metadata must be a JSON object of strings", file=sys.stderr)
            return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with _client(ns) as client:
        reg = await client.register(
            ns.appid, ns.addrs, metadata=metadata, status=ns.status, version=ns.version
        )
        _line({"registered": wire.instance_obj(reg.instance)})
        await stop.wait()
        await reg.close()
        _line({"cancelled": reg.instance.hostname})
    return 0


async def _fetch(ns: argparse.Namespace) -> int:
    async with _client(ns) as client:
        for item in _instances(await client.fetch(ns.appid, status=ns.status)):
            _line(item)
    return 0


async def _watch(ns: argparse.Namespace) -> int:
    async with _client(ns) as client:
        async for items in client.watch(ns.appid):
            _line(_instances(items))
    return 0


async def _nodes(ns: argparse.Namespace) -> int:
    async with _client(ns) as client:
        answer = await client.call("GET", "nodes", [])
        if answer.code != 0:
            raise error_for_code(answer.code, answer.message)
        for node in answer.data or []:
            _line(node)
    return 0


async def _call_app(ns: argparse.Namespace) -> int:
    headers = {}
    for item in ns.header:
        name, sep, value = item.partition(":")
        if not sep:
            print(f"discoverd: --header {item!r}: expected NAME:VALUE", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    if ns.registry is not None:
        async with open_registry(ns.registry) as registry:
            result = await _request(registry.caller(zone=ns.zone), ns, headers)
    else:
        async with _client(ns) as client:
            result = await _request(client.caller(), ns, headers)
    sys.stdout.buffer.write(result.body)
    sys.stdout.flush()
    print(f"discoverd: HTTP {result.status} from {result.instance.hostname}", file=sys.stderr)
    return 0 if result.status < 400 else 1


async def _request(caller: AsyncCaller, ns: argparse.Namespace, headers: dict[str, str]) -> CallResult:
    return await caller.request(
        ns.method, ns.appid, ns.path, data=ns.data, headers=headers, timeout=ns.timeout
    )


COMMANDS = {"register": _register, "fetch": _fetch, "watch": _watch, "nodes": _nodes, "call": _call_app}


def run_client_command(ns: argparse.Namespace) -> int:
    """Run a client sub-command; errors print one line and exit 1."""
    try:
        return asyncio.run(COMMANDS[ns.command](ns))
    except KeyboardInterrupt:
        return 130
    except (DiscoverdError, jsoncodec.DecodeError) as exc:
        print(f"discoverd: {exc}", file=sys.stderr)
        return 1
