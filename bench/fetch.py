"""``fetch``: wrk fetches of a 20-instance app on ``discoverd serve``, then on the hello-world baseline."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import urlencode

from bench.harness import log
from bench.load import throughput
from bench.node_api import ENV, http_call, register, service_instance
from bench.procs import Child

FETCH_APPID = "main.account.account-service"


def register_fetch_app(addr: str, count: int) -> None:
    """Register ``count`` instances of :data:`FETCH_APPID`, alternating zones sh001 and sh002."""
    for i in range(count):
        zone = "sh001" if i % 2 == 0 else "sh002"
        register(addr, service_instance(FETCH_APPID, i, zone=zone))


def check_fetch(addr: str, count: int) -> str:
    """Fetch the app once; RuntimeError unless it has ``count`` instances. The detail for the line."""
    path = "/discovery/fetch?" + urlencode({"env": ENV, "appid": FETCH_APPID, "status": "1"})
    status, body = http_call(addr, "GET", path)
    obj = json.loads(body)
    found = sum(len(v) for v in obj["data"]["instances"].values())
    if status != 200 or obj["code"] != 0 or found != count:
        raise RuntimeError(f"fetch check failed: {found} instances, {body[:200]!r}")
    log(f"fetch: answer body {len(body)} bytes for {found} instances")
    return f"fetch answer {len(body)} B body, {found} instances"


def bench_fetch(a: argparse.Namespace) -> dict[str, Any]:
    """The ``fetch`` benchmark; its result record."""

    def setup(srv: Child) -> str:
        register_fetch_app(srv.addr, a.fetch_instances)
        return check_fetch(srv.addr, a.fetch_instances)

    return throughput("fetch", a, setup, "fetch.lua", [ENV, FETCH_APPID])
