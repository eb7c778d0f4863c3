"""``renew``: wrk renews of one instance on ``discoverd serve``, then on the hello-world baseline."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.load import throughput
from bench.node_api import ENV, ZONE, Spec, http_call, register, service_instance
from bench.procs import Child

RENEW_APPID = "bench.renew"
RENEW_HOST = "bench-renew-host-0001"
#: What ``bench/lua/renew.lua`` takes after ``--``: zone env appid hostname.
LUA_ARGS = [ZONE, ENV, RENEW_APPID, RENEW_HOST]


def renew_spec() -> Spec:
    """The renewed instance: :data:`RENEW_HOST` with a production-looking instance's addrs and metadata."""
    ins = service_instance(RENEW_APPID, 1)
    return Spec(appid=RENEW_APPID, hostname=RENEW_HOST, addrs=ins.addrs, metadata=ins.metadata)


def prepare_renew(addr: str) -> int:
    """Register the renewed instance (and a neighbour), check one renew; returns its answer's body size."""
    register(addr, service_instance(RENEW_APPID, 1))
    register(addr, renew_spec())
    renew = [("zone", ZONE), ("env", ENV), ("appid", RENEW_APPID), ("hostname", RENEW_HOST)]
    _, body = http_call(addr, "POST", "/discovery/renew", renew)
    if json.loads(body).get("code") != 0:
        raise RuntimeError(f"renew check failed: {body!r}")
    return len(body)


def bench_renew(a: argparse.Namespace) -> dict[str, Any]:
    """The ``renew`` benchmark; its result record."""

    def setup(srv: Child) -> str:
        return f"renew answer {prepare_renew(srv.addr)} B body"

    return throughput("renew", a, setup, "renew.lua", LUA_ARGS)
