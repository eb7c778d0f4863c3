"""Load generator for ``bench/run.py many-clients``: N ``AsyncClient``s in one process.

Started by run.py (not meant to be run by hand). Every client watches the same apps; the process
talks to run.py with one line per message on stdin/stdout, a verb then a JSON object:

    -> ready {"clients": n, "start_s": s, "errors": e, ...}   every client started, every watch has a list
    <- arm {"appid": "new hostname", ...}                     the change run.py is about to make
    -> armed {}
    -> done {"arrivals": [...], "missing": m, "errors": e, "cpu_s": c}  each (client, app) saw its new host
    <- quit
    -> bye {"errors": e, "close_s": s}                        every client closed

``arrivals`` are ``time.monotonic()`` values (CLOCK_MONOTONIC, comparable across processes).
Errors counted: clients that failed to start, watches that ended or raised, and every INFO-or-worse
record of the ``discoverd.client`` logger (the client logs only failures at those levels: failed
polls, bootstrap retries, failed renews/cancels).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import run_loop
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig


class ErrorCount(logging.Handler):
    """Counts the records it handles (INFO and worse) and keeps the first 5 messages."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < 5:
            self.samples.append(record.getMessage()[:200])


def send(verb: str, obj: dict[str, Any]) -> None:
    """One message to run.py: ``verb`` and a JSON object on one stdout line."""
    sys.stdout.write(f"{verb} {json.dumps(obj)}\n")
    sys.stdout.flush()


async def receive() -> tuple[str, dict[str, Any]]:
    """The next message from run.py; ``quit`` at EOF."""
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        return "quit", {}
    verb, _, rest = line.strip().partition(" ")
    return verb, json.loads(rest) if rest else {}


class Load:
    """This process's clients, their watch tasks, the errors seen, and the change being awaited."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.apps: list[str] = a.apps.split(",")
        self.config = ClientConfig(start_timeout=30, request_timeout=30)
        self.clients: list[AsyncClient] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.targets: dict[str, str] = {}
        self.arrivals: list[float] = []
        self.pending = 0
        self.all_seen = asyncio.Event()

    def error(self, what: str) -> None:
        """Count an error (its first 5 descriptions are kept)."""
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:200])

    async def watcher(self, client: AsyncClient, appid: str, ready: asyncio.Future[None]) -> None:
        """Follow ``client``'s watch of ``appid``: ``ready`` once it lists ``--expect`` instances, then
        stamp the first list with the armed target host. An error or an early end is counted."""
        seen_target = False
        try:
            async for instances in client.watch(appid):
                now = time.monotonic()
                hosts = {i.hostname for i in instances}
                if not ready.done() and len(hosts) >= self.a.expect:
                    ready.set_result(None)
                want = self.targets.get(appid)
                if want is not None and not seen_target and want in hosts:
                    seen_target = True
                    self.arrivals.append(now)
                    self.pending -= 1
                    if self.pending == 0:
                        self.all_seen.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error(f"watch {appid}: {exc!r}")
        else:
            if not client._closed:
                self.error(f"watch {appid} ended while the client runs")
        if not ready.done():
            ready.set_exception(RuntimeError(f"watch of {appid} ended before a list"))

    async def start_one(self, i: int, sem: asyncio.Semaphore) -> None:
        """Start client ``i`` (at most ``--concurrency`` at once) and wait up to 60 s for its first lists."""
        async with sem:
            client = AsyncClient(
                [self.a.addr],
                env=self.a.env,
                zone=self.a.zone,
                hostname=f"mc-{self.a.index}-{i:04d}",
                config=self.config,
            )
            try:
                await client.start()
            except Exception as exc:
                self.error(f"start: {exc!r}")
                return
            self.clients.append(client)
            loop = asyncio.get_running_loop()
            readies: list[asyncio.Future[None]] = []
            for appid in self.apps:
                ready: asyncio.Future[None] = loop.create_future()
                self.tasks.append(asyncio.create_task(self.watcher(client, appid, ready)))
                readies.append(ready)
            try:
                await asyncio.wait_for(asyncio.gather(*readies), 60)
            except Exception as exc:
                self.error(f"first lists: {exc!r}")

    async def close_all(self) -> None:
        """Close every client (``--concurrency`` at once) and cancel the watch tasks."""
        sem = asyncio.Semaphore(self.a.concurrency)

        async def close(c: AsyncClient) -> None:
            async with sem:
                await c.aclose()

        await asyncio.gather(*(close(c) for c in self.clients), return_exceptions=True)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def report(load: Load, counter: ErrorCount) -> dict[str, Any]:
    """Errors so far (the load's and the client logger's), their samples, and the polls the clients sent."""
    return {
        "errors": load.errors + counter.count,
        "samples": load.error_samples + counter.samples,
        "polls_sent": sum(c.polls_sent for c in load.clients),
    }


async def await_change(load: Load, counter: ErrorCount, obj: dict[str, Any], timeout: float) -> None:
    """``arm``: expect the hostnames in ``obj`` (appid → hostname); answer ``armed``, then ``done`` once
    every (client, app) saw its new host or after ``timeout`` s."""
    load.targets = {str(k): str(v) for k, v in obj.items()}
    load.arrivals = []
    load.pending = len(load.clients) * len(load.targets)
    load.all_seen.clear()
    send("armed", {})
    cpu0 = time.process_time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(load.all_seen.wait(), timeout)
    cpu_s = time.process_time() - cpu0
    send(
        "done", {"arrivals": load.arrivals, "missing": load.pending, "cpu_s": cpu_s, **report(load, counter)}
    )


async def close(load: Load, counter: ErrorCount) -> None:
    """``quit``: close every client; answer ``bye`` with the errors before and while closing."""
    t1 = time.monotonic()
    errors_before_close = load.errors + counter.count
    await load.close_all()
    send(
        "bye",
        {
            "errors": errors_before_close,
            "close_errors": load.errors + counter.count - errors_before_close,
            "close_s": time.monotonic() - t1,
            "samples": load.error_samples + counter.samples,
        },
    )


async def main_async(a: argparse.Namespace) -> None:
    """Start the clients, answer ``ready``, then serve ``arm`` and ``quit`` (or EOF) from run.py."""
    counter = ErrorCount()
    logging.getLogger("discoverd.client").addHandler(counter)
    logging.getLogger("discoverd.client").setLevel(logging.INFO)
    load = Load(a)
    sem = asyncio.Semaphore(a.concurrency)
    t0 = time.monotonic()
    await asyncio.gather(*(load.start_one(i, sem) for i in range(a.clients)))
    send("ready", {"clients": len(load.clients), "start_s": time.monotonic() - t0, **report(load, counter)})
    while True:
        verb, obj = await receive()
        if verb == "arm":
            await await_change(load, counter, obj, a.change_timeout)
        elif verb == "quit":
            await close(load, counter)
            return


def main() -> None:
    """Parse the command line, raise the fd limit, run until ``quit``."""
    p = argparse.ArgumentParser(description="many-clients load generator (started by bench/run.py)")
    p.add_argument("--addr", required=True)
    p.add_argument("--env", default="dev")
    p.add_argument("--zone", default="sh001")
    p.add_argument("--index", type=int, default=0, help="this process's number (in client hostnames)")
    p.add_argument("--clients", type=int, default=250)
    p.add_argument("--apps", required=True, help="comma-separated appids every client watches")
    p.add_argument("--expect", type=int, default=1, help="instances per app before a client is ready")
    p.add_argument("--concurrency", type=int, default=25, help="clients starting at the same time")
    p.add_argument("--change-timeout", type=float, default=60.0)
    a = p.parse_args()
    need = a.clients * 8 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))
    run_loop(main_async(a))


if __name__ == "__main__":
    main()
