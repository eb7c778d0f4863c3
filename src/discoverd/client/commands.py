"""The client sub-commands of the CLI: ``register``, ``fetch``, ``watch``, ``nodes``, ``call``.

Each takes the client identity flags (``--nodes``, ``--env``, ``--zone``, ``--region``,
``--hostname``; env vars as in kratos) and prints JSON lines, so scripts can consume the output.
``call`` prints the answer's body; with ``--registry URL`` it finds the app through that registry
(``redis://``, ``gossip://``, ``discoverd://``, ``?cache=``…) instead of the discoverd nodes.

Their flags are declared in ``client/command_flags.py``, which imports nothing else, so that building
the ``discoverd`` parser (for ``discoverd serve`` too) does not import the client.
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
