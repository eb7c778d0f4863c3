"""Legitimate traffic while hostile clients attack: slowloris connections and slow readers.

Starts ``discoverd serve`` with default flags (a child process, stopped by PID), registers a ~29 KB
app (70 production-looking instances) and measures, one request at a time over one keep-alive
connection, ``--requests`` legitimate ``register`` + ``fetch`` pairs: **unattacked** first, then
while attacked by

* ``--slowloris`` connections (default 5,000, spread over 127.0.0.2–127.0.0.9) that send a request
  line and one header byte at a time every ``--drip`` seconds and never finish their headers;
* ``--slow-readers`` connections (default 50) that pipeline ``fetch`` of the 29 KB app as fast as
  the server reads and never read an answer (a 4 KB receive buffer).

Reports register and fetch p50/p99/max for both phases, the server's peak RSS (``VmRSS``, sampled
every 100 ms), how many hostile connections the server closed (header deadline: ``--header-timeout``,
10 s by default, so the attack lasts ``--hold`` 16 s; send deadline: ``--send-timeout``, 30 s) and
whether every legitimate answer was ``code 0``. Targets: attacked p99 ≤ 50 ms for both, RSS ≤ 300 MB.

Usage: ``.venv/bin/python bench/hostile.py [--slowloris 5000] [--slow-readers 50] [--requests 400]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if not __package__:  # run as a file: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import mib, pct_floor
from bench.load import register_request
from bench.node_api import register, service_instance
from bench.procs import Child, discoverd, raise_fd_limit, rss_bytes

APPID = "bench.hostile.svc"


@dataclass(slots=True)
class Phase:
    """The timings (ms) of one phase's legitimate requests, and how many pairs were not ``code 0``."""

    register_ms: list[float] = field(default_factory=list)
    fetch_ms: list[float] = field(default_factory=list)
    errors: int = 0

    def line(self, name: str) -> str:
        """The phase's figures: p50 / p99 / max of register and fetch, errors."""

        def stats(v: list[float]) -> str:
            s = sorted(v)
            return f"p50 {statistics.median(s):.2f} p99 {pct_floor(s, 0.99):.2f} max {s[-1]:.2f} ms"

        reg, fetch = stats(self.register_ms), stats(self.fetch_ms)
        return f"{name}: register {reg} | fetch {fetch} | errors {self.errors}"


async def legit(addr: str, n: int, tag: str) -> Phase:
    """``n`` register + fetch pairs on one keep-alive connection, each timed."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    phase = Phase()
    fetch = f"GET /discovery/fetch?env=dev&appid={APPID}&status=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    try:
        for i in range(n):
            spec = service_instance(APPID, 10_000 + i)
            spec.hostname = f"legit-{tag}-{i}"
            t0 = time.perf_counter()
            writer.write(register_request(addr, spec))
            ok = await _answer(reader)
            t1 = time.perf_counter()
            writer.write(fetch)
            ok &= await _answer(reader)
            t2 = time.perf_counter()
            phase.register_ms.append((t1 - t0) * 1000)
            phase.fetch_ms.append((t2 - t1) * 1000)
            phase.errors += not ok
    finally:
        writer.close()
    return phase


async def _answer(reader: asyncio.StreamReader) -> bool:
    """Read one answer; whether it is HTTP 200 with ``code 0``."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    body = await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200") and body.startswith(b'{"code":0')


async def connect_many(addr: str, count: int) -> list[socket.socket]:
    """``count`` non-blocking connections to ``addr`` from 127.0.0.2–9 (the loop runs every 500)."""
    host, port = addr.rsplit(":", 1)
    socks: list[socket.socket] = []
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.bind((f"127.0.0.{2 + i % 8}", 0))
        with contextlib.suppress(BlockingIOError):
            s.connect((host, int(port)))
        socks.append(s)
        if i % 500 == 499:
            await asyncio.sleep(0)
    return socks


def drip_byte(socks: list[socket.socket], closed: list[int]) -> list[socket.socket]:
    """Send one header byte on each socket; the ones the server closed are counted and dropped."""
    alive = []
    for s in socks:
        try:
            s.send(b"a")
            alive.append(s)
        except OSError:
            closed[0] += 1
            s.close()
    return alive


async def slowloris(addr: str, count: int, drip: float, stop: asyncio.Event, closed: list[int]) -> None:
    """``count`` connections that never finish their headers; counts the ones the server closed."""
    socks = await connect_many(addr, count)
    await asyncio.sleep(0.5)
    for s in socks:
        with contextlib.suppress(OSError):
            s.send(b"GET /discovery/fetch HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), drip)
        socks = drip_byte(socks, closed)
    for s in socks:
        s.close()


async def slow_reader(addr: str, stop: asyncio.Event, closed: list[int]) -> None:
    """Pipelines fetches of the big app as fast as the server takes them; never reads."""
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, (host, int(port)))
    req = f"GET /discovery/fetch?env=dev&appid={APPID}&status=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 50
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(loop.sock_sendall(s, req), 0.5)
            except TimeoutError:
                continue  # the server stopped reading us: good
    except OSError:
        closed[0] += 1
    finally:
        s.close()


async def rss_peak(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    """Keep ``peak[0]`` at the largest RSS of ``pid`` seen every 100 ms until ``stop``."""
    while not stop.is_set():
        peak[0] = max(peak[0], rss_bytes(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def attacked_phase(srv: Child, a: argparse.Namespace) -> tuple[Phase, int, int, int]:
    """The legitimate pairs under attack, which lasts ``--hold`` s past its start (to count what the
    server closed); (timings, peak RSS, slowloris and slow-reader connections closed by the server)."""
    stop, peak, loris_closed, readers_closed = asyncio.Event(), [0], [0], [0]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(rss_peak(srv.pid, stop, peak))
        tg.create_task(slowloris(srv.addr, a.slowloris, a.drip, stop, loris_closed))
        for _ in range(a.slow_readers):
            tg.create_task(slow_reader(srv.addr, stop, readers_closed))
        started = time.monotonic()
        await asyncio.sleep(a.ramp)  # let the attack build up (connections opened, buffers full)
        attacked = await legit(srv.addr, a.requests, "attacked")
        # keep attacking past the header deadline, to count what the server closed
        await asyncio.sleep(max(0.0, started + a.hold - time.monotonic()))
        stop.set()
    return attacked, peak[0], loris_closed[0], readers_closed[0]


async def main_async(srv: Child, a: argparse.Namespace) -> int:
    """Register the ~29 KB app, measure unattacked then attacked; print both and the verdict."""
    for i in range(70):  # ~29 KB fetch answer
        register(srv.addr, service_instance(APPID, i))
    quiet = await legit(srv.addr, a.requests, "quiet")
    rss_quiet = rss_bytes(srv.pid)
    attacked, peak, loris_closed, readers_closed = await attacked_phase(srv, a)
    print(quiet.line("unattacked"), f"| RSS {mib(rss_quiet)} MiB", flush=True)
    print(
        attacked.line(f"attacked ({a.slowloris} slowloris, {a.slow_readers} slow readers)"),
        f"| peak RSS {mib(peak)} MiB | hostile connections closed by the server: "
        f"slowloris {loris_closed}, slow readers {readers_closed}",
        flush=True,
    )
    p99 = max(pct_floor(sorted(v), 0.99) for v in (attacked.register_ms, attacked.fetch_ms))
    met = p99 <= 50 and peak <= 300 * 2**20 and attacked.errors == 0
    print(f"targets (p99 <= 50 ms, RSS <= 300 MB, no errors): {'MET' if met else 'MISSED'}", flush=True)
    return 0


def main() -> int:
    """Parse the command line, start the server, run both phases."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--slowloris", type=int, default=5000)
    p.add_argument("--slow-readers", type=int, default=50)
    p.add_argument("--requests", type=int, default=400, help="legitimate register+fetch pairs per phase")
    p.add_argument("--drip", type=float, default=2.0, help="seconds between a slowloris' bytes")
    p.add_argument("--ramp", type=float, default=3.0, help="seconds of attack before measuring")
    p.add_argument("--hold", type=float, default=16.0, help="seconds the attack lasts (past 10 s)")
    a = p.parse_args()
    raise_fd_limit(a.slowloris + a.slow_readers + 512)
    with discoverd() as srv:
        return asyncio.run(main_async(srv, a))


if __name__ == "__main__":
    sys.exit(main())
