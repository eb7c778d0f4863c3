"""``memory``: server RSS per registered instance, 100,000 instances registered over pipelined connections."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.harness import log, mib, result, run_loop, verdict
from bench.load import Pipeline, close_pipelines, failures, open_pipelines, register_request
from bench.node_api import Spec, http_call
from bench.procs import Child, cpu_seconds, discoverd, settle_rss


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``memory`` (``--mem-connections`` also serves ``replication-queue``)."""
    p.add_argument("--instances", type=int, default=100_000, help="instances in the memory benchmark")
    p.add_argument("--per-app", type=int, default=100, help="instances per appid in the memory benchmark")
    p.add_argument("--mem-connections", type=int, default=4, help="pipelined connections for the registers")
    p.add_argument("--mem-window", type=int, default=128, help="requests in flight per connection")


def memory_spec(i: int, per_app: int) -> Spec:
    """Instance ``i``: 100 per app, 2 zones, ~20-char hostname, 2 addrs, small metadata."""
    app, k = divmod(i, per_app)
    ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    return Spec(
        appid=f"bench.mem.svc-{app:04d}",
        zone="sh001" if k % 2 == 0 else "sh002",
        hostname=f"svc{app:04d}-{k:03d}-7f9c4d5b",
        addrs=[f"grpc://{ip}:9000", f"http://{ip}:8000"],
        version="v1.4.2",
        metadata={"weight": "10", "cluster": "c1"},
    )


def encode_batches(addr: str, a: argparse.Namespace) -> list[list[list[bytes]]]:
    """Every register request, encoded up front: per connection, chunks of ``--mem-window``."""
    n, conns, window = a.instances, a.mem_connections, a.mem_window
    batches: list[list[list[bytes]]] = []
    for c in range(conns):
        mine = [register_request(addr, memory_spec(i, a.per_app)) for i in range(c, n, conns)]
        batches.append([mine[k : k + window] for k in range(0, len(mine), window)])
    return batches


async def register_all(pipes: list[Pipeline], batches: list[list[list[bytes]]]) -> None:
    """Send each connection's chunks one after the other, the connections concurrently."""

    async def drive(c: int) -> None:
        for chunk in batches[c]:
            await pipes[c].send(chunk)

    await asyncio.gather(*(drive(c) for c in range(len(pipes))))


async def memory_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    """Register ``--instances`` instances on ``srv``; RSS before and after (settled), rate, server CPU."""
    n = a.instances
    rss0 = await settle_rss(srv.pid)
    log(f"memory: server RSS before {mib(rss0)} MiB; registering {n:,} instances")
    pipes = await open_pipelines(srv.addr, a.mem_connections)
    # Encode every request first, so that the client competes less with the server while it runs.
    batches = encode_batches(srv.addr, a)
    t0 = time.perf_counter()
    cpu0 = cpu_seconds(srv.pid)
    await register_all(pipes, batches)
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(srv.pid)
    close_pipelines(pipes)
    answered = sum(p.answered for p in pipes)
    if failures(pipes) or answered != n:
        raise RuntimeError(f"{answered}/{n} answered, failures: {failures(pipes)[:3]}")
    rss1 = await settle_rss(srv.pid)
    return {
        "instances": n,
        "rss_before": rss0,
        "rss_after": rss1,
        "bytes_per_instance": (rss1 - rss0) / n,
        "register_rps": n / elapsed,
        "elapsed_s": elapsed,
        "server_cpu_s": cpu1 - cpu0,
    }


def stored(srv: Child, a: argparse.Namespace) -> tuple[int, int]:
    """From ``fetch/all``: how many bench instances the server holds, and one instance's JSON size."""
    _, body = http_call(srv.addr, "GET", "/discovery/fetch/all")
    data = json.loads(body)["data"]
    count = sum(len(v) for k, v in data.items() if k.startswith("bench.mem."))
    sample = data[memory_spec(0, a.per_app).appid][0]
    return count, len(json.dumps(sample, separators=(",", ":")))


def bench_memory(a: argparse.Namespace) -> dict[str, Any]:
    """The ``memory`` benchmark; its result record."""
    with discoverd() as srv:
        r = run_loop(memory_async(srv, a))
        # Check that every instance is there (fetch/all answers after the RSS was measured).
        count, sample_bytes = stored(srv, a)
    if count != r["instances"]:
        raise RuntimeError(f"fetch/all shows {count} bench instances, expected {r['instances']}")
    v = verdict("memory", r["bytes_per_instance"])
    line = (
        f"memory: {r['instances']:,} instances ({a.per_app} per app, {count:,} seen in fetch/all): "
        f"{r['bytes_per_instance']:,.0f} bytes per instance (RSS {mib(r['rss_before'])} → "
        f"{mib(r['rss_after'])} MiB; target <= 2048: {v}) | registered at "
        f"{r['register_rps']:,.0f} req/s pipelined ({a.mem_connections} conns x {a.mem_window}) | "
        f"instance JSON {sample_bytes} B"
    )
    return result("memory", line, **r, verdict=v)
