"""xDS push benchmark: N ADS streams watch one app; one register → time until every stream has it.

    .venv/bin/python bench/xds_bench.py                       # 1,000 streams, 2 client processes, 5 rounds
    .venv/bin/python bench/xds_bench.py --streams 2000 --procs 2 --per-channel 50 --rounds 5

Three kinds of process (stopped by PID at the end):

* the **server**: a node (``running_node``) with its :class:`XdsServer` subscribed to its events, on
  uvloop like ``discoverd serve``, OS-assigned loopback ports;
* **clients** (``--procs``): raw ADS clients on ``grpc.aio`` (no xDS client logic), each stream on one
  of several channels (``--per-channel`` streams per channel, each channel its own connection),
  subscribed to the ClusterLoadAssignment of ``bench.app`` with a node identity (env ``dev``, zone
  ``z1``), ACKing every response as a real client does;
* this process: registers the app, starts the clients, then per round registers one new instance
  over HTTP and waits until every stream received an assignment containing it.

Reported: per round p50/p99/max of (arrival − time just before the register request, CLOCK_MONOTONIC,
comparable across processes), the server's CPU seconds for the round, its resident memory per stream
((RSS with the streams open − RSS before) / streams), and the encodings and pushes it counted.
Target: every stream within 200 ms, at most 50 KB per stream. Clients share the machine with the
server, so the latencies include the clients' own reading time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import pct, run_loop
from bench.node_api import api
from bench.procs import cpu_seconds, kill, read_line, rss_bytes, spawn_piped, write_line

APP = "bench.app"


# -- server process ------------------------------------------------------------------------------------


async def serve() -> None:
    """``--role server``: a node with its xDS server; prints ``ready HTTP XDS``, answers ``stats`` lines."""
    from discoverd.server.xds.server import XdsServer
    from discoverd.testing import fast_config, running_node

    config = fast_config(xds="127.0.0.1:0", dashboard=False)
    async with running_node(config) as node:
        xds = XdsServer(node.config, node.registry)
        node.events.subscribe(xds)
        await xds.start()
        print(f"ready {node.address} {xds.address}", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "stats":
                s = xds.stats()
                print(
                    json.dumps({"streams": s.streams, "pushes": s.pushes, "encodings": s.encodings}),
                    flush=True,
                )
        await xds.aclose()


# -- client process ------------------------------------------------------------------------------------


class Watcher:
    """The streams of one client process and, per marker hostname, when each stream first saw it."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.marker = b"seed"
        self.seen: dict[bytes, dict[int, int]] = {}
        self.done: dict[bytes, asyncio.Event] = {}

    def arm(self, marker: bytes) -> asyncio.Event:
        """Watch for ``marker`` from now on; the event set once every stream saw it."""
        self.marker = marker
        self.seen[marker] = {}
        return self.done.setdefault(marker, asyncio.Event())

    def saw(self, index: int, payload: bytes) -> None:
        """Stream ``index`` received ``payload``: stamp it if it holds the marker the first time."""
        marker = self.marker
        got = self.seen.setdefault(marker, {})
        if index not in got and marker in payload:
            got[index] = time.monotonic_ns()
            if len(got) == self.streams:
                self.done.setdefault(marker, asyncio.Event()).set()


async def one_stream(channel: Any, index: int, watcher: Watcher) -> None:
    """One ADS stream subscribed to the app's assignment, ACKing every response, until it ends."""
    from discoverd.server.xds import protos

    service, method = protos.ADS_METHOD
    call = channel.stream_stream(
        f"/{service}/{method}",
        request_serializer=protos.DiscoveryRequest.SerializeToString,
        response_deserializer=protos.DiscoveryResponse.FromString,
    )()
    first = protos.DiscoveryRequest(type_url=protos.ENDPOINTS, resource_names=[APP])
    first.node.id = f"bench-{os.getpid()}-{index}"
    first.node.locality.zone = "z1"
    first.node.metadata.update({"env": "dev"})
    await call.write(first)
    while True:
        response = await call.read()
        if response is None or not hasattr(response, "nonce"):
            return
        watcher.saw(index, b"".join(r.value for r in response.resources))
        ack = protos.DiscoveryRequest(
            type_url=protos.ENDPOINTS,
            resource_names=[APP],
            version_info=response.version_info,
            response_nonce=response.nonce,
        )
        await call.write(ack)


async def clients(xds: str, streams: int, per_channel: int) -> None:
    """``--role client``: ``streams`` streams; prints ``ready``, then per ``arm MARKER`` line ``armed`` and
    the streams' arrival times (CLOCK_MONOTONIC ns) as JSON; ends at ``quit`` or EOF."""
    import grpc

    watcher = Watcher(streams)
    ready = watcher.arm(b"seed")
    # each channel its own connection (a local subchannel pool), as separate client processes would have
    channels = [
        grpc.aio.insecure_channel(xds, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((streams + per_channel - 1) // per_channel)
    ]
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one_stream(channels[i // per_channel], i, watcher)) for i in range(streams)]
        await ready.wait()
        print("ready", flush=True)
        while (line := await loop.run_in_executor(None, sys.stdin.readline)).strip() not in ("", "quit"):
            marker = line.split()[1].encode()
            done = watcher.arm(marker)
            print("armed", flush=True)
            await done.wait()
            print(json.dumps(list(watcher.seen[marker].values())), flush=True)
        for t in tasks:
            t.cancel()
    for ch in channels:
        await ch.close()


# -- orchestration ---------------------------------------------------------------------------------------


def register(http: str, hostname: str, port: int) -> None:
    """Register instance ``hostname`` of the app (zone z1, env dev) over HTTP."""
    form = {"zone": "z1", "env": "dev", "appid": APP, "hostname": hostname, "status": "1"}
    form["addrs"] = f"grpc://10.1.{port // 256}.{port % 256}:9000"
    api(http, "POST", "/discovery/register", list(form.items()))


async def spawn(*args: str) -> asyncio.subprocess.Process:
    """This script with ``args`` (a role), pipes on stdin and stdout."""
    return await spawn_piped(sys.executable, __file__, *args)


async def open_streams(args: argparse.Namespace, xds: str, procs: list[asyncio.subprocess.Process]) -> float:
    """Start the client processes (appended to ``procs``); seconds until every stream had its first answer."""
    per = [args.streams // args.procs + (i < args.streams % args.procs) for i in range(args.procs)]
    started = time.monotonic()
    for n in per:
        role = ["--role", "client", "--xds", xds, "--streams", str(n), "--per-channel", str(args.per_channel)]
        procs.append(await spawn(*role))
    for p in procs[1:]:
        assert await read_line(p) == "ready"
    return time.monotonic() - started


async def one_round(r: int, http: str, server: int, clients: list[asyncio.subprocess.Process]) -> float:
    """Register ``new-R``; print when each stream saw it and the server's CPU; the slowest stream (ms)."""
    marker = f"new-{r}"
    for p in clients:
        await write_line(p, f"arm {marker}")
        assert await read_line(p) == "armed"
    cpu0 = cpu_seconds(server)
    t0 = time.monotonic_ns()
    register(http, marker, r + 1)
    arrivals = [t for p in clients for t in json.loads(await read_line(p))]
    cpu1 = cpu_seconds(server)
    ms: list[float] = sorted((t - t0) / 1e6 for t in arrivals)
    print(
        f"round {r}: {len(ms)} streams  p50 {pct(ms, 0.5):6.1f} ms  p99 {pct(ms, 0.99):6.1f} ms  "
        f"max {max(ms):6.1f} ms  server CPU {cpu1 - cpu0:.3f} s"
    )
    return max(ms)


async def orchestrate(args: argparse.Namespace) -> None:
    """Start the server and the clients, measure memory per stream and ``--rounds`` pushes; every
    process is killed by PID at the end."""
    server = await spawn("--role", "server")
    procs: list[asyncio.subprocess.Process] = [server]
    try:
        _, http, xds = (await read_line(server)).split()
        register(http, "seed", 1)
        await asyncio.sleep(1.0)  # let the server settle before the baseline (not a synchronisation)
        rss0 = rss_bytes(server.pid) / 1024
        open_s = await open_streams(args, xds, procs)
        rss1 = rss_bytes(server.pid) / 1024
        per_stream = (rss1 - rss0) / args.streams
        print(
            f"{args.streams} streams open in {open_s:.2f} s over {args.procs} client process(es); "
            f"server RSS {rss0 / 1024:.1f} → {rss1 / 1024:.1f} MiB: {per_stream:.1f} KB per stream"
        )
        worst = [await one_round(r, http, server.pid, procs[1:]) for r in range(1, args.rounds + 1)]
        await write_line(server, "stats")
        print(f"server: {await read_line(server)}")
        print(
            f"max over rounds {max(worst):.1f} ms, median of round maxima {statistics.median(worst):.1f} ms"
        )
    finally:
        for p in procs:
            await kill(p)


def main() -> None:
    """Run the role ``--role`` names (the orchestrator by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=("orchestrate", "server", "client"), default="orchestrate")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--per-channel", type=int, default=50, help="streams per client channel")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--xds", default="")
    args = parser.parse_args()
    if args.role == "server":
        run_loop(serve())
    elif args.role == "client":
        asyncio.run(clients(args.xds, args.streams, args.per_channel))
    else:
        asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
