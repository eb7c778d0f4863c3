"""Redis backend benchmarks: change propagation between processes, and Redis commands per instance.

    .venv/bin/python bench/redis_bench.py                      # both (about 45 s)
    .venv/bin/python bench/redis_bench.py propagation --changes 500
    .venv/bin/python bench/redis_bench.py cost --instances 100 --window 10

Starts its own ``redis-server`` on 127.0.0.1 (a free port found by binding port 0; ``--save ''
--appendonly no``) and stops it by PID; ``propagation`` also starts one provider child process (this
script with ``--provider``), stopped by PID. Only loopback traffic.

* **propagation** — the child registers one new instance every ``--gap`` ms with ``RedisRegistry``; the
  parent watches the app with another ``RedisRegistry``. Latency = watch event received in the parent
  − just before ``register()`` in the child, both on ``time.monotonic()`` (CLOCK_MONOTONIC is one clock
  for every process of a Linux host). Target: p99 <= 20 ms.
* **cost** — Redis commands per second per registered instance at steady state, from ``INFO
  commandstats`` deltas over ``--window`` seconds (minus the INFO calls themselves): a provider with
  ``--instances`` registrations at heartbeat 1 s and 5 s, then a consumer following the app (reaper at 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench.harness import pct_floor, poll_until
from bench.procs import free_port, stop_process
from discoverd.backends.redis import RedisConfig, RedisRegistry
from discoverd.model import Action, Event, Instance

APP = "bench.svc"


def _pong(port: int) -> bool:
    """Whether a Redis server answers PING on ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
            c.sendall(b"PING\r\n")
            return c.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _started(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Whether ``proc`` answers PING on ``port`` within 10 s (False as soon as it exits)."""
    answered = poll_until(lambda: proc.poll() is not None or _pong(port), 10, 0.01)
    return answered and proc.poll() is None


def start_redis() -> tuple[subprocess.Popen[bytes], int, tempfile.TemporaryDirectory[str]]:
    """``redis-server`` on a free port of 127.0.0.1, answering PING within 10 s (5 tries, each on a new
    port); exits the script if it does not start."""
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is missing (make sysdeps)")
    tmp = tempfile.TemporaryDirectory(prefix="discoverd-bench-redis-")
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp.name, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if _started(proc, port):
            return proc, port, tmp
        stop_process(proc)
    sys.exit("redis-server did not start")


def instance(i: int) -> Instance:
    """Instance ``n{i}`` of the app, on port 20000 + i (how the parent tells them apart)."""
    return Instance(zone="", env="", appid=APP, hostname=f"n{i}", addrs=[f"http://127.0.0.1:{20000 + i}"])


async def provider(url: str, changes: int, gap: float) -> None:
    """The child of ``propagation``: registers ``changes`` instances, printing ``i t_before`` each."""
    async with RedisRegistry(url) as reg:
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(changes):
            t = time.monotonic()
            await reg.register(instance(i))
            print(i, t, flush=True)
            await asyncio.sleep(gap)
        sys.stdin.readline()


def spawn_provider(url: str, changes: int, gap: float) -> subprocess.Popen[str]:
    """This script with ``--provider``, pipes on stdin and stdout (text)."""
    return subprocess.Popen(
        [sys.executable, __file__, "--provider", url, "--changes", str(changes), "--gap", str(gap)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def receive_creates(w: AsyncIterator[Event], changes: int, gap: float) -> dict[int, float]:
    """When (``time.monotonic()``) each of the ``changes`` registrations arrived as a CREATE event."""
    received: dict[int, float] = {}
    async with asyncio.timeout(30 + changes * gap * 2):
        while len(received) < changes:
            ev = await anext(w)
            if ev.action is Action.CREATE:
                received[int(ev.instance.addrs[0].rsplit(":", 1)[1]) - 20000] = time.monotonic()
    return received


async def drive_provider(
    child: subprocess.Popen[str], w: AsyncIterator[Event], changes: int, gap: float
) -> list[float]:
    """Start the provider child's registrations; per change, ms from just before its register to the
    watch event here."""
    assert child.stdin is not None and child.stdout is not None
    assert (await asyncio.to_thread(child.stdout.readline)).strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    received = await receive_creates(w, changes, gap)
    lines = [(await asyncio.to_thread(child.stdout.readline)).split() for _ in range(changes)]
    sent = {int(i): float(t) for i, t in lines}
    child.stdin.write("done\n")
    child.stdin.flush()
    child.wait(10)
    return [(received[i] - sent[i]) * 1000 for i in range(changes)]


async def propagation(url: str, changes: int, gap: float) -> dict[str, float]:
    """The ``propagation`` benchmark: latency p50/p90/p99/max (ms) from the provider child's register
    to the watch event here. The child is stopped by PID if it has not exited."""
    consumer = RedisRegistry(url)
    w = consumer.watch(APP)
    await consumer.follow(APP)
    child = spawn_provider(url, changes, gap)
    try:
        lat = sorted(await drive_provider(child, w, changes, gap))
    finally:
        if child.poll() is None:
            stop_process(child)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
        await consumer.aclose()
    return {
        "changes": changes,
        "p50_ms": statistics.median(lat),
        "p90_ms": pct_floor(lat, 0.90),
        "p99_ms": pct_floor(lat, 0.99),
        "max_ms": lat[-1],
    }


async def commands(raw: aioredis.Redis) -> int:
    """Commands Redis ran so far (``INFO commandstats``, the INFO calls left out)."""
    stats = await raw.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def measure(probe: aioredis.Redis, window: float) -> float:
    """Commands per second over ``window`` seconds (INFO calls excluded)."""
    before = await commands(probe)
    await asyncio.sleep(window)
    return (await commands(probe) - before) / window


async def cost(url: str, instances: int, window: float) -> dict[str, float]:
    """The ``cost`` benchmark: commands per second per instance of a provider (heartbeat 1 s, 5 s) and
    of a consumer's reaper."""
    probe = aioredis.Redis.from_url(url)  # only used for INFO
    out: dict[str, float] = {"instances": instances, "window_s": window}
    for beat in (1.0, 5.0):
        reg = RedisRegistry(url, config=RedisConfig(heartbeat=beat))
        for i in range(instances):
            await reg.register(instance(i))
        await asyncio.sleep(beat)  # past the first heartbeat
        out[f"provider_hb{beat:g}s_per_instance_per_s"] = await measure(probe, window) / instances
        if beat == 5.0:
            consumer = RedisRegistry(url)
            await consumer.follow(APP)
            await asyncio.sleep(1.0)
            both = await measure(probe, window) / instances
            out["consumer_reap1s_per_instance_per_s"] = both - out["provider_hb5s_per_instance_per_s"]
            await consumer.aclose()
        await reg.aclose()
    await probe.aclose()
    return out


def parse_args() -> argparse.Namespace:
    """The command line (``--provider URL`` is how the script starts its provider child)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="*", default=["propagation", "cost"])
    ap.add_argument("--changes", type=int, default=500)
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between registrations")
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--provider", help=argparse.SUPPRESS)
    return ap.parse_args()


def run_selected(args: argparse.Namespace, url: str) -> None:
    """The benchmarks named on the command line, one result line each."""
    if "propagation" in args.which:
        r = asyncio.run(propagation(url, args.changes, args.gap))
        print("propagation", " ".join(f"{k}={v:.2f}" for k, v in r.items()), flush=True)
    if "cost" in args.which:
        c = asyncio.run(cost(url, args.instances, args.window))
        print("cost", " ".join(f"{k}={v:.3f}" for k, v in c.items()), flush=True)


def main() -> None:
    """Run the provider child, or start redis-server, run the benchmarks and stop it by PID."""
    args = parse_args()
    if args.provider:
        asyncio.run(provider(args.provider, args.changes, args.gap))
        return
    proc, port, tmp = start_redis()
    try:
        run_selected(args, f"redis://127.0.0.1:{port}")
    finally:
        stop_process(proc)
        tmp.cleanup()
    print(
        f"redis-server pid {proc.pid} stopped; python {sys.version.split()[0]} pid {os.getpid()}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
