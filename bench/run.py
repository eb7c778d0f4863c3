"""discoverd benchmarks: server throughput, fan-out and memory; client SDK fetch, propagation, scale; gossip.

    python bench/run.py                 # every benchmark (same as --all)
    python bench/run.py renew fetch     # some of them
    python bench/run.py polls --polls 2000 --json out.json
    python bench/run.py client-fetch propagation many-clients   # the client SDK benchmarks
    python bench/run.py cluster-propagation cluster-renew replication-queue   # 3-node cluster benchmarks
    python bench/run.py gossip --gossip-scale 1   # 32 memberlist nodes (bench/gossip_bench.py)

Every benchmark starts its own ``discoverd serve`` on 127.0.0.1 with an OS-assigned port (and, for
renew and fetch, the hello-world baseline ``bench/baseline_server.py`` measured the same way in the
same run), and stops it by PID; many-clients also starts load-generator processes
(``bench/many_clients.py``) and stops them by PID; the cluster benchmarks start three peered nodes
(replication-queue SIGKILLs one of them by PID on purpose); gossip runs ``bench/gossip_bench.py`` (32
memberlist nodes in one child process, no server). Only loopback traffic. One result line per
benchmark on stdout; progress on stderr. See bench/README.md for what each figure means and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlencode

import aiohttp
import httptools

from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.client.sync_client import Client as SyncClient

BENCH_DIR = Path(__file__).resolve().parent
LUA_DIR = BENCH_DIR / "lua"
PAGE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FORM = "application/x-www-form-urlencoded"

ZONE = "sh001"
ENV = "dev"
RENEW_APPID = "bench.renew"
RENEW_HOST = "bench-renew-host-0001"
FETCH_APPID = "main.account.account-service"
POLLS_APPID = "main.feed.feed-service"

TARGETS: dict[str, tuple[str, float, str]] = {
    # benchmark: (what, target, "min" or "max")
    "renew": ("req/s", 25_000, "min"),
    "fetch": ("req/s", 25_000, "min"),
    "polls_kb": ("KB per held poll", 16, "max"),
    "polls_ms": ("ms until all answers", 400, "max"),
    "memory": ("bytes per instance", 2048, "max"),
    "client_fetch": ("µs median per cached AsyncClient.fetch", 5, "max"),
    "propagation": ("ms p99 register → watcher", 50, "max"),
    "cluster_propagation": ("ms p99 register on A → visible on B and C", 50, "max"),
    "cluster_renew": ("renew req/s on A of 3 nodes / single node", 0.60, "min"),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def verdict(name: str, value: float) -> str:
    _, target, kind = TARGETS[name]
    ok = value >= target if kind == "min" else value <= target
    return "MET" if ok else "MISSED"


# -- child servers -----------------------------------------------------------------------------


class Child:
    """A server child process whose first stdout line ends with ``HOST:PORT``; stopped by PID."""

    def __init__(self, cmd: Sequence[str], name: str) -> None:
        self.cmd = list(cmd)
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr = ""
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def start(self, timeout: float = 15.0) -> Child:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout.fileno(), timeout)
        host_port = line.rsplit(" ", 1)[-1]
        if " listening on " not in line or ":" not in host_port:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {line!r} {self.stderr_tail()}")
        self.addr = host_port
        log(f"{self.name} pid {self.pid} on {self.addr}")
        return self

    def stderr_tail(self, limit: int = 2000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit within ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_line(fd: int, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    try:
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 1)
            if not chunk:
                break
            line += chunk
    finally:
        sel.close()
    return line.decode(errors="replace").strip()


def discoverd(*extra: str) -> Child:
    """A ``discoverd serve`` child; ``BENCH_SERVER_ARGS`` (space-separated) adds flags (``bench/ab.py``)."""
    cmd = [sys.executable, "-m", "discoverd", "serve", "--addr", "127.0.0.1:0", "--hostname", "bench-node"]
    more = os.environ.get("BENCH_SERVER_ARGS", "").split()
    return Child([*cmd, "--log-level", "warning", *extra, *more], "discoverd")


def baseline() -> Child:
    return Child([sys.executable, str(BENCH_DIR / "baseline_server.py"), "--addr", "127.0.0.1:0"], "baseline")


# -- /proc -------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < need:
        raise RuntimeError(f"fd limit {soft} < {need} needed (hard limit {hard})")
    return soft


# -- small synchronous HTTP helpers (setup only) -------------------------------------------------


def http_call(addr: str, method: str, path: str, form: Sequence[tuple[str, str]] = ()) -> tuple[int, bytes]:
    host, _, port = addr.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        if method == "POST":
            conn.request(method, path, body=urlencode(form), headers={"Content-Type": FORM})
        else:
            conn.request(method, path + ("?" + urlencode(form) if form else ""))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def api(addr: str, method: str, path: str, form: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    status, body = http_call(addr, method, path, form)
    obj = json.loads(body) if body else None
    if status != 200 or not isinstance(obj, dict) or obj.get("code") != 0:
        raise RuntimeError(f"{method} {path} -> HTTP {status} {body[:300]!r}")
    return obj


@dataclass(slots=True)
class Spec:
    """One instance to register (realistic field sizes)."""

    appid: str
    hostname: str
    addrs: list[str]
    zone: str = ZONE
    env: str = ENV
    region: str = "sh"
    version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def form(self) -> list[tuple[str, str]]:
        f = [
            ("region", self.region),
            ("zone", self.zone),
            ("env", self.env),
            ("appid", self.appid),
            ("hostname", self.hostname),
            ("status", "1"),
            *(("addrs", a) for a in self.addrs),
            ("version", self.version),
        ]
        if self.metadata:
            f.append(("metadata", json.dumps(self.metadata, separators=(",", ":"))))
        return f


def service_instance(appid: str, i: int, *, zone: str = ZONE) -> Spec:
    """A production-looking instance: pod-style hostname, grpc+http addrs, version, metadata."""
    ip = f"10.{20 + i // 250 % 200}.{(i * 7) % 250}.{1 + i % 250}"
    return Spec(
        appid=appid,
        zone=zone,
        hostname=f"{appid.rsplit('.', 1)[-1].split('-', maxsplit=1)[0]}-7f9c4-{i:05x}",
        addrs=[f"grpc://{ip}:9000", f"http://{ip}:8000"],
        version=f"v1.14.{i % 10}",
        metadata={"weight": "10"},
    )


# -- wrk -------------------------------------------------------------------------------------


@dataclass(slots=True)
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: str
    server_cpu: float
    wrk_cpu: float

    def short(self) -> str:
        s = (
            f"{self.rps:,.0f} req/s (p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"server CPU {self.server_cpu:.0%}, wrk CPU {self.wrk_cpu:.0%} of a core)"
        )
        return s + (f" ERRORS: {self.errors}" if self.errors else "")


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def run_wrk(server: Child, lua: str, lua_args: Sequence[str], a: argparse.Namespace) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (make sysdeps)")
    cmd = [
        wrk,
        f"-t{a.threads}",
        f"-c{a.connections}",
        f"-d{a.duration}s",
        "--latency",
        "-s",
        str(LUA_DIR / lua),
        server.url,
        "--",
        *lua_args,
    ]
    cpu0, wcpu0, t0 = cpu_seconds(server.pid), children_cpu(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 30, check=False)
    wall = time.monotonic() - t0
    cpu1, wcpu1 = cpu_seconds(server.pid), children_cpu()
    text = out.stdout
    if out.returncode != 0 or "Requests/sec:" not in text:
        raise RuntimeError(f"wrk failed ({out.returncode}): {text} {out.stderr}")
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s*50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    errors = "; ".join(
        line.strip() for line in text.splitlines() if "Socket errors" in line or "Non-2xx" in line
    )
    return WrkResult(
        rps=rps,
        requests=total,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        errors=errors,
        server_cpu=(cpu1 - cpu0) / wall,
        wrk_cpu=(wcpu1 - wcpu0) / wall,
    )


def throughput(
    name: str, a: argparse.Namespace, setup: Callable[[Child], str], lua: str, lua_args: Sequence[str]
) -> dict[str, Any]:
    """discoverd, then the baseline, with the same wrk settings; returns the result record."""
    with discoverd() as srv:
        detail = setup(srv)
        log(f"{name}: wrk -t{a.threads} -c{a.connections} -d{a.duration}s -s bench/lua/{lua} on discoverd")
        d = run_wrk(srv, lua, lua_args, a)
    res: dict[str, Any] = {"bench": name, "rps": d.rps, "discoverd": d.short(), "detail": detail}
    line = f"{name}: discoverd {d.short()}"
    if a.baseline:
        with baseline() as base:
            log(f"{name}: same wrk run on the hello-world baseline")
            b = run_wrk(base, lua, lua_args, a)
        res |= {"baseline_rps": b.rps, "baseline": b.short(), "ratio": d.rps / b.rps}
        line += f" | baseline {b.rps:,.0f} req/s | discoverd/baseline {d.rps / b.rps:.2f}"
    res["verdict"] = verdict(name, d.rps)
    line += f" | target >= {TARGETS[name][1]:,.0f} req/s: {res['verdict']} | {detail}"
    res["line"] = line
    print(line, flush=True)
    return res


# -- a. renew --------------------------------------------------------------------------------------


def bench_renew(a: argparse.Namespace) -> dict[str, Any]:
    def setup(srv: Child) -> str:
        api(srv.addr, "POST", "/discovery/register", service_instance(RENEW_APPID, 1).form())
        ins = service_instance(RENEW_APPID, 1)
        spec = Spec(appid=RENEW_APPID, hostname=RENEW_HOST, addrs=ins.addrs, metadata=ins.metadata)
        api(srv.addr, "POST", "/discovery/register", spec.form())
        renew = [("zone", ZONE), ("env", ENV), ("appid", RENEW_APPID), ("hostname", RENEW_HOST)]
        _, body = http_call(srv.addr, "POST", "/discovery/renew", renew)
        if json.loads(body).get("code") != 0:
            raise RuntimeError(f"renew check failed: {body!r}")
        return f"renew answer {len(body)} B body"

    return throughput("renew", a, setup, "renew.lua", [ZONE, ENV, RENEW_APPID, RENEW_HOST])


# -- b. fetch --------------------------------------------------------------------------------------


def bench_fetch(a: argparse.Namespace) -> dict[str, Any]:
    def setup(srv: Child) -> str:
        for i in range(a.fetch_instances):
            zone = "sh001" if i % 2 == 0 else "sh002"
            api(srv.addr, "POST", "/discovery/register", service_instance(FETCH_APPID, i, zone=zone).form())
        path = "/discovery/fetch?" + urlencode({"env": ENV, "appid": FETCH_APPID, "status": "1"})
        status, body = http_call(srv.addr, "GET", path)
        obj = json.loads(body)
        count = sum(len(v) for v in obj["data"]["instances"].values())
        if status != 200 or obj["code"] != 0 or count != a.fetch_instances:
            raise RuntimeError(f"fetch check failed: {count} instances, {body[:200]!r}")
        log(f"fetch: answer body {len(body)} bytes for {count} instances")
        return f"fetch answer {len(body)} B body, {count} instances"

    return throughput("fetch", a, setup, "fetch.lua", [ENV, FETCH_APPID])


# -- c. polls fan-out ------------------------------------------------------------------------------


async def wait_until(cond: Callable[[], bool], within: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(step)


async def settle(sample: Callable[[], int], within: float = 10.0, step: float = 0.1, stable: int = 3) -> int:
    """Sample until the value stops changing ``stable`` times in a row (or ``within`` s); returns it."""
    deadline = time.monotonic() + within
    last, same = sample(), 0
    while same < stable and time.monotonic() < deadline:
        await asyncio.sleep(step)
        now = sample()
        same = same + 1 if now == last else 0
        last = now
    return last


async def settle_rss(pid: int) -> int:
    """The server's RSS once it stopped moving (3 equal samples 100 ms apart)."""
    return await settle(lambda: rss_bytes(pid))


class PollClient:
    """Opens held polls and records when their answers arrive (``futures`` end with the answer)."""

    name = ""

    def __init__(self, addr: str, sources: Sequence[str], hold: float) -> None:
        self.addr = addr
        self.sources = list(sources)
        self.hold = hold
        self.sent = 0
        self.arrivals: list[float] = []
        self.bad: list[str] = []
        self.answer_bytes = 0
        self.futures: list[asyncio.Future[None]] = []

    def answered(self, body: bytes) -> None:
        self.arrivals.append(time.perf_counter())
        self.answer_bytes = len(body)
        if not body.startswith(b'{"code":0,'):
            self.bad.append(body[:120].decode(errors="replace"))

    async def open_batch(self, queries: Sequence[tuple[int, str]]) -> None:
        """Start these polls; returns once every request was written."""
        raise NotImplementedError

    async def close(self) -> None:
        for f in self.futures:
            f.cancel()
        await asyncio.gather(*self.futures, return_exceptions=True)


class AiohttpPolls(PollClient):
    """One aiohttp ``ClientSession`` per source address, one task per poll (a typical Python consumer)."""

    name = "aiohttp"

    def __init__(self, addr: str, sources: Sequence[str], hold: float) -> None:
        super().__init__(addr, sources, hold)
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(self._on_sent)
        timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=hold + 60)
        self.sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, local_addr=(src, 0), ttl_dns_cache=None),
                timeout=timeout,
                trace_configs=[trace],
                skip_auto_headers=("User-Agent",),
            )
            for src in self.sources
        ]

    async def _on_sent(self, *_: object) -> None:
        self.sent += 1

    async def _one(self, i: int, query: str) -> None:
        session = self.sessions[i % len(self.sessions)]
        async with session.get(f"http://{self.addr}/discovery/polls?{query}") as r:
            body = await r.read()
        self.answered(body)

    async def open_batch(self, queries: Sequence[tuple[int, str]]) -> None:
        self.futures.extend(asyncio.create_task(self._one(i, q)) for i, q in queries)
        want = len(self.futures)
        await wait_until(lambda: self.sent >= want, 60, f"{want} polls sent")

    async def close(self) -> None:
        await super().close()
        for s in self.sessions:
            await s.close()


class RawPoll(asyncio.Protocol):
    """One poll on its own connection: writes the GET, parses the answer with httptools."""

    def __init__(self, owner: RawPolls, request: bytes, done: asyncio.Future[None]) -> None:
        self.owner = owner
        self.request = request
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)
        self.owner.sent += 1

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.owner.answered(b"".join(self.body))
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"poll connection lost before its answer: {exc}"))


class RawPolls(PollClient):
    """Minimal asyncio + httptools client: shows the server's fan-out with little client overhead."""

    name = "raw"

    def __init__(self, addr: str, sources: Sequence[str], hold: float) -> None:
        super().__init__(addr, sources, hold)
        self.transports: list[asyncio.BaseTransport] = []

    async def _open(self, i: int, query: str) -> None:
        loop = asyncio.get_running_loop()
        host, _, port = self.addr.rpartition(":")
        req = b"GET /discovery/polls?%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (query.encode(), self.addr.encode())
        done: asyncio.Future[None] = loop.create_future()
        self.futures.append(done)
        src = self.sources[i % len(self.sources)]
        transport, _ = await loop.create_connection(
            lambda: RawPoll(self, req, done), host, int(port), local_addr=(src, 0)
        )
        self.transports.append(transport)

    async def open_batch(self, queries: Sequence[tuple[int, str]]) -> None:
        await asyncio.gather(*(self._open(i, q) for i, q in queries))

    async def close(self) -> None:
        await super().close()
        for t in self.transports:
            t.close()


POLL_CLIENTS: dict[str, type[PollClient]] = {"aiohttp": AiohttpPolls, "raw": RawPolls}


async def polls_async(srv: Child, a: argparse.Namespace, client_name: str) -> dict[str, Any]:
    n: int = a.polls
    sources: list[str] = [s for s in a.sources.split(",") if s]
    base = srv.url
    params = {"env": ENV, "appid": POLLS_APPID, "status": "1"}
    # The control session closes its connections after each request, so that the server's fd count
    # before parking holds no client connection.
    ctl_conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=ctl_conn, timeout=aiohttp.ClientTimeout(total=30)) as ctl:
        for i in range(5):
            form = service_instance(POLLS_APPID, i).form()
            async with ctl.post(f"{base}/discovery/register", data=form) as r:
                assert (await r.json())["code"] == 0
        async with ctl.get(f"{base}/discovery/fetch", params=params) as r:
            latest = int((await r.json())["data"]["latest_timestamp"])

        await settle(lambda: open_fds(srv.pid))
        rss0 = await settle_rss(srv.pid)
        fds0 = open_fds(srv.pid)
        log(f"polls[{client_name}]: server RSS {rss0 / 2**20:.1f} MiB, {fds0} fds; parking {n:,} polls")
        client = POLL_CLIENTS[client_name](srv.addr, sources, a.poll_hold)
        try:
            t_park = time.monotonic()
            for start in range(0, n, a.poll_batch):
                await client.open_batch(
                    [
                        (
                            i,
                            urlencode(
                                {
                                    "env": ENV,
                                    "hostname": f"consumer-{i:05d}",
                                    "appid": POLLS_APPID,
                                    "latest_timestamp": str(latest),
                                }
                            ),
                        )
                        for i in range(start, min(n, start + a.poll_batch))
                    ]
                )
            try:
                await wait_until(lambda: open_fds(srv.pid) >= fds0 + n, 30, "the server to accept them", 0.1)
            except RuntimeError:
                log(f"server has {open_fds(srv.pid) - fds0} of {n} connections; client sent {client.sent}")
                raise
            # A request on a fresh connection passes through the server's loop after the polls were
            # read (every poll request was written before it); then wait for the RSS to settle.
            async with ctl.get(f"{base}/discovery/fetch", params=params) as r:
                await r.read()
            rss1 = await settle_rss(srv.pid)
            park_s = time.monotonic() - t_park
            done_early = sum(f.done() for f in client.futures)
            if done_early or client.bad:
                raise RuntimeError(f"{done_early} polls answered before the change: {client.bad[:3]}")
            kb = (rss1 - rss0) / n / 1024
            log(f"polls[{client_name}]: {n:,} held after {park_s:.1f} s; {kb:.2f} KB per held poll")

            # The change: one register; measure until every held poll got its answer.
            cpu0, pcpu0 = cpu_seconds(srv.pid), time.process_time()
            t0 = time.perf_counter()
            form = service_instance(POLLS_APPID, 99).form()
            async with ctl.post(f"{base}/discovery/register", data=form) as r:
                reg_body = await r.read()
            t_reg = time.perf_counter()
            finished, pending = await asyncio.wait(client.futures, timeout=30)
            t_end = time.perf_counter()
            cpu1, pcpu1 = cpu_seconds(srv.pid), time.process_time()
            errors = [repr(f.exception()) for f in finished if f.exception() is not None]
            if pending or errors or client.bad or len(client.arrivals) != n:
                raise RuntimeError(
                    f"{len(pending)} polls unanswered, errors: {(errors + client.bad)[:3]} {reg_body[:100]!r}"
                )
        finally:
            await client.close()

    arrivals = sorted(client.arrivals)
    return {
        "client": client_name,
        "polls": n,
        "sources": len(sources),
        "rss_before": rss0,
        "rss_held": rss1,
        "kb_per_poll": kb,
        "all_answered_ms": (arrivals[-1] - t0) * 1000,
        "register_rtt_ms": (t_reg - t0) * 1000,
        "first_ms": (arrivals[0] - t0) * 1000,
        "median_ms": (arrivals[n // 2] - t0) * 1000,
        "server_cpu_ms": (cpu1 - cpu0) * 1000,
        "client_cpu_ms": (pcpu1 - pcpu0) * 1000,
        "wall_ms": (t_end - t0) * 1000,
        "answer_bytes": client.answer_bytes,
        "park_s": park_s,
    }


def bench_polls(a: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(a.polls + 1024)
    out: dict[str, Any] = {"bench": "polls", "runs": []}
    lines = []
    for client_name in a.poll_clients.split(","):
        with discoverd("--poll-hold", str(a.poll_hold)) as srv:
            r = run_async(polls_async(srv, a, client_name))
        kb_v, ms_v = verdict("polls_kb", r["kb_per_poll"]), verdict("polls_ms", r["all_answered_ms"])
        line = (
            f"polls[{client_name} client]: {r['polls']:,} held polls ({r['sources']} source addrs): "
            f"{r['kb_per_poll']:.2f} KB per held poll (RSS {r['rss_before'] / 2**20:.1f} → "
            f"{r['rss_held'] / 2**20:.1f} MiB; target <= 16 KB: {kb_v}) | one register → all answered in "
            f"{r['all_answered_ms']:.0f} ms (first {r['first_ms']:.0f}, median {r['median_ms']:.0f}, "
            f"register answered {r['register_rtt_ms']:.0f} ms; target <= 400 ms: {ms_v}) | CPU during "
            f"fan-out: server {r['server_cpu_ms']:.0f} ms, client {r['client_cpu_ms']:.0f} ms | "
            f"answer {r['answer_bytes']} B"
        )
        print(line, flush=True)
        lines.append(line)
        out["runs"].append({**r, "verdict_kb": kb_v, "verdict_ms": ms_v})
    out["line"] = "\n".join(lines)
    return out


# -- d. memory -------------------------------------------------------------------------------------


class Pipeline(asyncio.Protocol):
    """One keep-alive connection sending pipelined requests and counting the answers."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answered = 0
        self.failures: list[str] = []
        self.waiting_for = 0
        self.done: asyncio.Future[None] | None = None
        self._body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))

    def on_message_begin(self) -> None:
        self._body = b""

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.answered += 1
        if self.parser.get_status_code() != 200 or not self._body.startswith(b'{"code":0,'):
            self.failures.append(self._body[:200].decode(errors="replace"))
        if self.answered >= self.waiting_for and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def send(self, requests: Sequence[bytes]) -> None:
        assert self.transport is not None
        self.waiting_for = self.answered + len(requests)
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(b"".join(requests))
        await self.done


def post_request(addr: str, path: str, form: Sequence[tuple[str, str]]) -> bytes:
    """A keep-alive ``POST path`` with an urlencoded form body, as raw bytes (for :class:`Pipeline`)."""
    body = urlencode(form).encode()
    return b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        addr.encode(),
        FORM.encode(),
        len(body),
        body,
    )


def register_request(addr: str, spec: Spec) -> bytes:
    return post_request(addr, "/discovery/register", spec.form())


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


async def memory_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    n, conns, window = a.instances, a.mem_connections, a.mem_window
    loop = asyncio.get_running_loop()
    host, _, port = srv.addr.rpartition(":")
    rss0 = await settle_rss(srv.pid)
    log(f"memory: server RSS before {rss0 / 2**20:.1f} MiB; registering {n:,} instances")
    pipes: list[Pipeline] = []
    for _ in range(conns):
        _, proto = await loop.create_connection(Pipeline, host, int(port))
        pipes.append(proto)

    # Encode every request first, so that the client competes less with the server while it runs.
    batches: list[list[list[bytes]]] = []
    for c in range(conns):
        mine = [register_request(srv.addr, memory_spec(i, a.per_app)) for i in range(c, n, conns)]
        batches.append([mine[k : k + window] for k in range(0, len(mine), window)])

    async def drive(c: int) -> None:
        for chunk in batches[c]:
            await pipes[c].send(chunk)

    t0 = time.perf_counter()
    cpu0 = cpu_seconds(srv.pid)
    await asyncio.gather(*(drive(c) for c in range(conns)))
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(srv.pid)
    for p in pipes:
        if p.transport is not None:
            p.transport.close()
    failures = [f for p in pipes for f in p.failures]
    answered = sum(p.answered for p in pipes)
    if failures or answered != n:
        raise RuntimeError(f"{answered}/{n} answered, failures: {failures[:3]}")
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


def bench_memory(a: argparse.Namespace) -> dict[str, Any]:
    with discoverd() as srv:
        r = run_async(memory_async(srv, a))
        # Check that every instance is there (fetch/all answers after the RSS was measured).
        _, body = http_call(srv.addr, "GET", "/discovery/fetch/all")
        data = json.loads(body)["data"]
        stored = sum(len(v) for k, v in data.items() if k.startswith("bench.mem."))
        sample = data[memory_spec(0, a.per_app).appid][0]
        del data, body
    if stored != r["instances"]:
        raise RuntimeError(f"fetch/all shows {stored} bench instances, expected {r['instances']}")
    v = verdict("memory", r["bytes_per_instance"])
    line = (
        f"memory: {r['instances']:,} instances ({a.per_app} per app, {stored:,} seen in fetch/all): "
        f"{r['bytes_per_instance']:,.0f} bytes per instance (RSS {r['rss_before'] / 2**20:.1f} → "
        f"{r['rss_after'] / 2**20:.1f} MiB; target <= 2048: {v}) | registered at "
        f"{r['register_rps']:,.0f} req/s pipelined ({a.mem_connections} conns x {a.mem_window}) | "
        f"instance JSON {len(json.dumps(sample, separators=(',', ':')))} B"
    )
    print(line, flush=True)
    return {"bench": "memory", **r, "verdict": v, "line": line}


# -- e. client-fetch -------------------------------------------------------------------------------


def _pct(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values (nearest rank)."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def timer_overhead_ns() -> float:
    """Median cost of one ``perf_counter_ns()`` pair (subtracted from nothing, printed for reference)."""
    ns = time.perf_counter_ns
    samples = []
    for _ in range(10_000):
        t0 = ns()
        samples.append(ns() - t0)
    samples.sort()
    return float(samples[len(samples) // 2])


async def client_fetch_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    n, batch = a.cf_calls, 1000
    ns = time.perf_counter_ns
    async with AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-fetcher") as client:
        watch = client.watch(FETCH_APPID)
        first = await anext(watch)
        got = await client.fetch(FETCH_APPID)
        view = client._state.apps[FETCH_APPID]
        if len(first) != a.fetch_instances or len(got) != a.fetch_instances or not view.known or view.dirty:
            raise RuntimeError(f"client sees {len(first)}/{len(got)} instances, known={view.known}")
        await asyncio.sleep(0.3)  # the re-poll with the new latest_timestamp is held by now
        polls0 = client.polls_sent
        fetch = client.fetch
        per_call: list[int] = []
        for _ in range(n // batch):
            for _ in range(batch):
                t0 = ns()
                await fetch(FETCH_APPID)
                per_call.append(ns() - t0)
            await asyncio.sleep(0)  # let the loop run between batches, as an application would
        batch_means: list[float] = []
        for _ in range(n // batch):
            t0 = ns()
            for _ in range(batch):
                await fetch(FETCH_APPID)
            batch_means.append((ns() - t0) / batch)
            await asyncio.sleep(0)
        if client.polls_sent != polls0:
            raise RuntimeError("the client re-polled during the measurement (cache changed?)")
        await watch.aclose()  # type: ignore[attr-defined]
    per_call.sort()
    batch_means.sort()
    return {
        "calls": len(per_call),
        "median_us": _pct(per_call, 0.5) / 1000,
        "p99_us": _pct(per_call, 0.99) / 1000,
        "max_us": per_call[-1] / 1000,
        "batch_mean_median_us": _pct(batch_means, 0.5) / 1000,
        "batch_mean_p99_us": _pct(batch_means, 0.99) / 1000,
    }


def sync_fetch(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    ns = time.perf_counter_ns
    with SyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-sync-fetcher") as client:
        got = client.fetch(FETCH_APPID)  # the first call asks the node and starts watching
        view = client._async._state.apps.get(FETCH_APPID)
        if view is None or not view.known or view.dirty:
            raise RuntimeError("the sync client's cache does not hold the app after the first fetch")
        time.sleep(0.3)  # the poll with the app is held by now
        if len(got) != a.fetch_instances:
            raise RuntimeError(f"sync client sees {len(got)} instances")
        per_call: list[int] = []
        for _ in range(a.cf_sync_calls):
            t0 = ns()
            client.fetch(FETCH_APPID)
            per_call.append(ns() - t0)
    per_call.sort()
    return {
        "calls": len(per_call),
        "median_us": _pct(per_call, 0.5) / 1000,
        "p99_us": _pct(per_call, 0.99) / 1000,
        "max_us": per_call[-1] / 1000,
    }


def bench_client_fetch(a: argparse.Namespace) -> dict[str, Any]:
    overhead = timer_overhead_ns()
    with discoverd("--env", ENV, "--zone", ZONE) as srv:
        for i in range(a.fetch_instances):
            zone = "sh001" if i % 2 == 0 else "sh002"
            api(srv.addr, "POST", "/discovery/register", service_instance(FETCH_APPID, i, zone=zone).form())
        log(f"client-fetch: {a.cf_calls:,} AsyncClient.fetch calls from the watched cache")
        r = run_async(client_fetch_async(srv, a))
        log(f"client-fetch: {a.cf_sync_calls:,} sync Client.fetch calls (portal round trip)")
        s = sync_fetch(srv, a)
    v = verdict("client_fetch", r["median_us"])
    line = (
        f"client-fetch: AsyncClient.fetch from the watched cache ({a.fetch_instances} instances, "
        f"{r['calls']:,} calls timed one by one): median {r['median_us']:.2f} µs, p99 {r['p99_us']:.2f} µs, "
        f"max {r['max_us']:.0f} µs (target median <= 5 µs: {v}); in batches of 1,000: median "
        f"{r['batch_mean_median_us']:.2f} µs/call, p99 {r['batch_mean_p99_us']:.2f} | sync Client.fetch "
        f"({s['calls']:,} calls): median {s['median_us']:.1f} µs, p99 {s['p99_us']:.1f} µs, max "
        f"{s['max_us']:.0f} µs (no target) | timer pair {overhead:.0f} ns (included)"
    )
    print(line, flush=True)
    return {
        "bench": "client-fetch",
        **r,
        "sync": s,
        "timer_overhead_ns": overhead,
        "verdict": v,
        "line": line,
    }


# -- f. propagation --------------------------------------------------------------------------------

PROP_APPID = "bench.prop.svc"


async def propagation_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    waiters: dict[tuple[str, bool], asyncio.Future[float]] = {}
    lists_seen = 0

    def expect(host: str, present: bool) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = loop.create_future()
        waiters[host, present] = fut
        return fut

    async with (
        AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-prop-a") as ca,
        AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-prop-b") as cb,
    ):

        async def watcher() -> None:
            nonlocal lists_seen
            async for instances in cb.watch(PROP_APPID):
                now = time.perf_counter()
                lists_seen += 1
                hosts = {i.hostname for i in instances}
                for (host, present), fut in list(waiters.items()):
                    if (host in hosts) == present and not fut.done():
                        fut.set_result(now)

        anchor_seen = expect("prop-anchor", True)
        anchor = await ca.register(PROP_APPID, ["http://10.0.0.1:80"], hostname="prop-anchor")
        task = asyncio.create_task(watcher())
        await asyncio.wait_for(anchor_seen, 10)
        await asyncio.sleep(0.2)
        added: list[float] = []
        removed: list[float] = []
        reg_rtt: list[float] = []
        for i in range(a.prop_rounds):
            host = f"prop-{i:04d}"
            seen = expect(host, True)
            t0 = time.perf_counter()
            reg = await ca.register(
                PROP_APPID,
                [f"http://10.0.{i // 250}.{i % 250 + 1}:80"],
                hostname=host,
                metadata={"i": str(i)},
            )
            reg_rtt.append(time.perf_counter() - t0)
            added.append(await asyncio.wait_for(seen, 10) - t0)
            del waiters[host, True]
            await asyncio.sleep(a.prop_gap)
            gone = expect(host, False)
            t1 = time.perf_counter()
            await reg.close()
            removed.append(await asyncio.wait_for(gone, 10) - t1)
            del waiters[host, False]
            await asyncio.sleep(a.prop_gap)
        await anchor.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        polls = cb.polls_sent
    added.sort()
    removed.sort()
    reg_rtt.sort()

    def stats(v: list[float]) -> dict[str, float]:
        return {"p50_ms": _pct(v, 0.5) * 1000, "p99_ms": _pct(v, 0.99) * 1000, "max_ms": v[-1] * 1000}

    return {
        "rounds": len(added),
        "register": stats(added),
        "cancel": stats(removed),
        "register_rtt": stats(reg_rtt),
        "lists_seen": lists_seen,
        "watcher_polls": polls,
    }


def bench_propagation(a: argparse.Namespace) -> dict[str, Any]:
    with discoverd("--env", ENV, "--zone", ZONE) as srv:
        log(f"propagation: {a.prop_rounds} register/cancel rounds, watcher in the same loop")
        r = run_async(propagation_async(srv, a))
    reg, can, rtt = r["register"], r["cancel"], r["register_rtt"]
    v = verdict("propagation", reg["p99_ms"])
    line = (
        f"propagation ({r['rounds']} rounds, 2 AsyncClients in one loop, one server): register → "
        f"watcher has it: p50 {reg['p50_ms']:.2f} ms, p99 {reg['p99_ms']:.2f} ms, max {reg['max_ms']:.2f} ms "
        f"(target p99 <= 50 ms: {v}) | cancel → gone: p50 {can['p50_ms']:.2f} ms, p99 "
        f"{can['p99_ms']:.2f} ms, max {can['max_ms']:.2f} ms | register call itself: p50 "
        f"{rtt['p50_ms']:.2f} ms, p99 {rtt['p99_ms']:.2f} ms | watcher: {r['lists_seen']} lists, "
        f"{r['watcher_polls']} polls"
    )
    print(line, flush=True)
    return {"bench": "propagation", **r, "verdict": v, "line": line}


# -- g. many-clients -------------------------------------------------------------------------------


class Worker:
    """One ``bench/many_clients.py`` load-generator process (line protocol on stdin/stdout)."""

    def __init__(self, proc: asyncio.subprocess.Process, index: int, stderr: IO[bytes]) -> None:
        self.proc = proc
        self.index = index
        self.stderr = stderr

    async def receive(self, verb: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        got, _, rest = line.decode().strip().partition(" ")
        if got != verb:
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"worker {self.index}: expected {verb!r}, got {line[:200]!r} {tail}")
        return cast(dict[str, Any], json.loads(rest))

    async def send(self, verb: str, obj: dict[str, Any] | None = None) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{verb} {json.dumps(obj or {})}\n".encode())
        await self.proc.stdin.drain()

    async def stop(self) -> dict[str, Any] | None:
        """Ask it to close its clients and exit; SIGKILL by PID if it does not within 60 s."""
        bye: dict[str, Any] | None = None
        if self.proc.returncode is None:
            try:
                await self.send("quit")
                bye = await self.receive("bye", 60)
                await asyncio.wait_for(self.proc.wait(), 10)
            except (TimeoutError, RuntimeError, ConnectionError) as exc:
                log(f"many-clients: worker {self.index} pid {self.proc.pid} did not stop ({exc!r}): SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        self.stderr.close()
        return bye


async def many_clients_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    apps = [f"bench.many.svc-{k}" for k in range(a.mc_apps)]
    config = ClientConfig(start_timeout=30, request_timeout=30)
    per_worker = [a.mc_clients // a.mc_procs + (w < a.mc_clients % a.mc_procs) for w in range(a.mc_procs)]
    cpu_start = cpu_seconds(srv.pid)
    async with AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-mc-ctl", config=config) as ctl:
        for k, app in enumerate(apps):
            for j in range(a.mc_instances):
                await ctl.register(app, [f"http://10.1.{k}.{j + 1}:8000"], hostname=f"svc{k}-{j:02d}")
        rss0 = await settle_rss(srv.pid)
        fds0 = open_fds(srv.pid)
        log(
            f"many-clients: server RSS {rss0 / 2**20:.1f} MiB, {fds0} fds; starting {a.mc_clients:,} clients "
            f"in {a.mc_procs} processes ({a.mc_concurrency} starting at a time in each)"
        )
        workers: list[Worker] = []
        byes: list[dict[str, Any] | None] = []
        try:
            cpu0, t0 = cpu_seconds(srv.pid), time.monotonic()
            for w, count in enumerate(per_worker):
                stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in Worker.stop()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(BENCH_DIR / "many_clients.py"),
                    *("--addr", srv.addr, "--env", ENV, "--zone", ZONE, "--index", str(w)),
                    *("--clients", str(count), "--apps", ",".join(apps), "--expect", str(a.mc_instances)),
                    *("--concurrency", str(a.mc_concurrency)),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )
                workers.append(Worker(proc, w, stderr))
            log(f"many-clients: workers pids {[wk.proc.pid for wk in workers]}")
            readies = await asyncio.gather(*(wk.receive("ready", 600) for wk in workers))
            start_s = time.monotonic() - t0
            started = sum(r["clients"] for r in readies)
            start_errors = sum(r["errors"] for r in readies)
            log(f"many-clients: {started:,} clients ready after {start_s:.1f} s, {start_errors} errors")
            # Held: every client has one poll parked (one connection each, plus its idle keep-alive one).
            fds_held = await settle(lambda: open_fds(srv.pid), within=30, step=0.5, stable=4)
            rss1 = await settle_rss(srv.pid)
            cpu1 = cpu_seconds(srv.pid)
            log(
                f"many-clients: server {fds_held - fds0:+} fds, RSS {rss1 / 2**20:.1f} MiB; "
                f"idle hold for {a.mc_idle:g} s"
            )
            await asyncio.sleep(a.mc_idle)
            cpu2 = cpu_seconds(srv.pid)

            # The change: one new instance in each app, all at once; every client must see all of them.
            targets = {app: f"svc{k}-new" for k, app in enumerate(apps)}
            for wk in workers:
                await wk.send("arm", targets)
            await asyncio.gather(*(wk.receive("armed", 30) for wk in workers))
            await asyncio.sleep(0.2)
            cpu3, tc = cpu_seconds(srv.pid), time.monotonic()
            await asyncio.gather(
                *(
                    ctl.register(app, [f"http://10.1.{k}.200:8000"], hostname=targets[app])
                    for k, app in enumerate(apps)
                )
            )
            t_reg = time.monotonic()
            dones = await asyncio.gather(*(wk.receive("done", 120) for wk in workers))
            cpu4 = cpu_seconds(srv.pid)
            rss2 = rss_bytes(srv.pid)
        finally:
            for wk in workers:
                byes.append(await wk.stop())
        cpu_end = cpu_seconds(srv.pid)
    arrivals = sorted(t - tc for d in dones for t in d["arrivals"])
    missing = sum(d["missing"] for d in dones)
    change_errors = sum(d["errors"] for d in dones)
    close_errors = sum(b["close_errors"] for b in byes if b is not None)
    samples = [s for r in [*readies, *dones] for s in r["samples"]][:5]
    expected = started * len(apps)
    return {
        "clients": a.mc_clients,
        "started": started,
        "procs": a.mc_procs,
        "apps": len(apps),
        "instances_per_app": a.mc_instances,
        "start_s": start_s,
        "start_errors": start_errors,
        "errors": change_errors,
        "close_errors": close_errors,
        "error_samples": samples,
        "fds_held": fds_held - fds0,
        "rss_before": rss0,
        "rss_held": rss1,
        "rss_after_change": rss2,
        "cpu_start_s": cpu1 - cpu0,
        "cpu_idle_s": cpu2 - cpu1,
        "idle_s": a.mc_idle,
        "idle_cpu_share": (cpu2 - cpu1) / a.mc_idle,
        "cpu_change_s": cpu4 - cpu3,
        "clients_cpu_change_s": sum(d["cpu_s"] for d in dones),
        "cpu_total_s": cpu_end - cpu_start,
        "changes_expected": expected,
        "changes_seen": len(arrivals),
        "missing": missing,
        "registers_answered_ms": (t_reg - tc) * 1000,
        "first_ms": arrivals[0] * 1000 if arrivals else float("nan"),
        "median_ms": _pct(arrivals, 0.5) * 1000 if arrivals else float("nan"),
        "all_seen_ms": arrivals[-1] * 1000 if arrivals else float("nan"),
        "polls_sent_before": sum(r["polls_sent"] for r in readies),
        "polls_sent_after": sum(d["polls_sent"] for d in dones),
    }


def bench_many_clients(a: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(a.mc_clients * 4 + 1024)
    with discoverd("--env", ENV, "--zone", ZONE) as srv:
        r = run_async(many_clients_async(srv, a))
        server_log = [ln for ln in srv.stderr_tail(1_000_000).splitlines() if ln.strip()]
    r["server_log_lines"] = len(server_log)
    r["server_log_sample"] = server_log[:3]
    ok = r["errors"] == 0 and r["missing"] == 0 and r["changes_seen"] == r["changes_expected"]
    v = "MET" if ok else "MISSED"
    line = (
        f"many-clients: {r['started']:,}/{r['clients']:,} AsyncClients in {r['procs']} processes, each "
        f"watching {r['apps']} apps ({r['instances_per_app']} instances each); started in "
        f"{r['start_s']:.1f} s | server: RSS {r['rss_before'] / 2**20:.1f} → {r['rss_held'] / 2**20:.1f} MiB "
        f"held ({r['fds_held']:+} fds) → {r['rss_after_change'] / 2**20:.1f} MiB after the change; CPU "
        f"{r['cpu_start_s']:.2f} s during start-up, {r['cpu_idle_s']:.2f} s in {r['idle_s']:g} s idle hold "
        f"({r['idle_cpu_share']:.1%} of a core), {r['cpu_change_s']:.2f} s for the change, "
        f"{r['cpu_total_s']:.2f} s in all | change (1 register in each app, concurrently; client "
        f"processes used {r['clients_cpu_change_s']:.2f} s CPU meanwhile): "
        f"{r['changes_seen']:,}/{r['changes_expected']:,} (client, app) saw it, all within "
        f"{r['all_seen_ms']:.0f} ms (first {r['first_ms']:.0f}, median {r['median_ms']:.0f}; registers "
        f"answered {r['registers_answered_ms']:.0f} ms) | client polls sent: {r['polls_sent_before']:,} "
        f"until ready, {r['polls_sent_after']:,} at the end | errors {r['errors']} (+{r['close_errors']} "
        f"while closing), missing {r['missing']}, server log lines {r['server_log_lines']} "
        f"(target: no errors: {v})"
    )
    if r["error_samples"]:
        line += f" | e.g. {r['error_samples'][:2]}"
    print(line, flush=True)
    return {"bench": "many-clients", **r, "verdict": v, "line": line}


# -- h. cluster benchmarks (3 peered nodes) ----------------------------------------------------------

CPROP_APPID = "bench.cprop.svc"
RQ_APPS = 10


def node(hostname: str, *extra: str) -> Child:
    """One cluster node (``--env dev --zone sh001``), named by its ``--hostname``."""
    cmd = [sys.executable, "-m", "discoverd", "serve", "--addr", "127.0.0.1:0", "--hostname", hostname]
    return Child([*cmd, "--env", ENV, "--zone", ZONE, "--log-level", "warning", *extra], f"node {hostname}")


class Cluster:
    """Nodes A, B, C of one zone, peered as README.md "Running a cluster" shows: A alone, B with
    ``--nodes A``, C with ``--nodes A,B``; A learns B and C from their ``infra.discovery`` registrations.
    Formed when every node's ``GET /discovery/nodes`` lists all three addresses. Stopped by PID."""

    def __init__(self, names: Sequence[str] = ("A", "B", "C"), extra: Sequence[str] = ()) -> None:
        self.names = list(names)
        self.extra = list(extra)
        self.nodes: list[Child] = []

    def __enter__(self) -> Cluster:
        try:
            for name in self.names:
                peers = ",".join(n.addr for n in self.nodes)
                self.nodes.append(node(name, *(("--nodes", peers) if peers else ()), *self.extra).start())
            t0 = time.monotonic()
            self.wait_formed()
            log(f"cluster {' '.join(n.addr for n in self.nodes)} formed in {time.monotonic() - t0:.2f} s")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.stop()

    def wait_formed(self, within: float = 30.0) -> None:
        want = {n.addr for n in self.nodes}
        deadline = time.monotonic() + within
        while True:
            seen = [{d["addr"] for d in api(n.addr, "GET", "/discovery/nodes")["data"]} for n in self.nodes]
            if all(s >= want for s in seen):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster not formed after {within:.0f} s: nodes lists {seen}, want {want}"
                )
            time.sleep(0.05)


def parse_metrics(text: str) -> dict[str, float]:
    """``/metrics`` samples by name with labels: ``discoverd_replication_pending{peer="…"}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metrics(addr: str) -> dict[str, float]:
    status, body = http_call(addr, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics on {addr} -> HTTP {status}")
    return parse_metrics(body.decode())


REPL_FIELDS = ("pending", "dropped", "sent", "failed")


def repl_stats(m: dict[str, float], peer: str) -> dict[str, int]:
    """The replication gauges of one peer (-1 when the node does not export them)."""
    suffix = {"pending": ""}  # the others are counters: ``_total``
    return {
        f: int(m.get(f'discoverd_replication_{f}{suffix.get(f, "_total")}{{peer="{peer}"}}', -1))
        for f in REPL_FIELDS
    }


def fetch_hosts(addr: str, appid: str) -> set[str]:
    """Hostnames of ``appid`` (status 1) on one node; empty when the node does not know the app."""
    _, body = http_call(addr, "GET", "/discovery/fetch", [("env", ENV), ("appid", appid), ("status", "1")])
    obj = json.loads(body)
    if obj.get("code") != 0:
        return set()
    return {i["hostname"] for items in obj["data"]["instances"].values() for i in items}


def wait_sync(what: str, cond: Callable[[], bool], within: float = 30.0, step: float = 0.05) -> float:
    """Poll ``cond`` until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > within:
            raise RuntimeError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - t0


def has_host(node: Child, appid: str, hostname: str) -> bool:
    return hostname in fetch_hosts(node.addr, appid)


def has_instances(node: Child, count: int) -> bool:
    return metrics(node.addr)["discoverd_instances"] >= count


def queues_empty(src: Child, peers: Sequence[Child]) -> bool:
    m = metrics(src.addr)
    return all(repl_stats(m, p.addr)["pending"] == 0 for p in peers)


def _stats_ms(v: list[float]) -> dict[str, float]:
    v = sorted(v)
    return {"p50_ms": _pct(v, 0.5) * 1000, "p99_ms": _pct(v, 0.99) * 1000, "max_ms": v[-1] * 1000}


# -- h1. cluster-propagation -------------------------------------------------------------------------


async def cluster_propagation_async(cl: Cluster, a: argparse.Namespace) -> dict[str, Any]:
    na, nb, nc = cl.nodes
    watchers = (nb, nc)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:

        async def call(
            method: str, node: Child, path: str, form: Sequence[tuple[str, str]]
        ) -> dict[str, Any]:
            url = f"{node.url}{path}"
            if method == "POST":
                resp = await s.post(url, data=list(form))
            else:
                resp = await s.get(url, params=list(form))
            async with resp:
                body = await resp.read()
            return cast(dict[str, Any], json.loads(body))

        async def latest(node: Child) -> int:
            doc = await call(
                "GET", node, "/discovery/fetch", [("env", ENV), ("appid", CPROP_APPID), ("status", "1")]
            )
            if doc.get("code") != 0:
                raise RuntimeError(f"fetch on {node.name}: {doc}")
            return int(doc["data"]["latest_timestamp"])

        async def held(node: Child) -> int:
            async with s.get(f"{node.url}/metrics") as resp:
                return int(parse_metrics(await resp.text())["discoverd_held_polls"])

        async def watch(node: Child, since: int, host: str, present: bool) -> float:
            """Long-poll ``node`` from ``since`` until ``host`` is (not) in the answer; its arrival."""
            form = [("env", ENV), ("appid", CPROP_APPID), ("latest_timestamp", str(since))]
            form.append(("hostname", f"bench-cprop-watch-{node.name[-1]}"))
            while True:
                doc = await call("GET", node, "/discovery/polls", form)
                now = time.perf_counter()
                if doc.get("code") == -304:
                    continue
                if doc.get("code") != 0:
                    raise RuntimeError(f"poll on {node.name}: {str(doc)[:300]}")
                info = doc["data"][CPROP_APPID]
                hosts = {i["hostname"] for items in info["instances"].values() for i in items}
                if (host in hosts) == present:
                    return now
                form[2] = ("latest_timestamp", str(info["latest_timestamp"]))

        async def change(
            action: str, form: list[tuple[str, str]], host: str
        ) -> tuple[float, list[float], float]:
            """Park a poll on B and C, send ``action`` to A; (register RTT, [B, C] delays, both-visible)."""
            since = [await latest(w) for w in watchers]
            before = [await held(w) for w in watchers]
            tasks = [
                asyncio.create_task(watch(w, ts, host, action == "register"))
                for w, ts in zip(watchers, since, strict=True)
            ]
            deadline = time.monotonic() + 10
            while [await held(w) for w in watchers] != [b + 1 for b in before]:
                if time.monotonic() > deadline or any(t.done() for t in tasks):
                    for t in tasks:
                        t.cancel()
                    raise RuntimeError(f"polls not parked on B and C ({before}); done early: {tasks}")
                await asyncio.sleep(0.002)
            t0 = time.perf_counter()
            doc = await call("POST", na, f"/discovery/{action}", form)
            rtt = time.perf_counter() - t0
            if doc.get("code") != 0:
                raise RuntimeError(f"{action} on A: {doc}")
            arrivals = await asyncio.wait_for(asyncio.gather(*tasks), 10)
            delays = [t - t0 for t in arrivals]
            return rtt, delays, max(delays)

        anchor = service_instance(CPROP_APPID, 0)
        anchor.hostname = "cprop-anchor"
        doc = await call("POST", na, "/discovery/register", anchor.form())
        if doc.get("code") != 0:
            raise RuntimeError(f"anchor register: {doc}")
        for w in watchers:
            await wait_until(partial(has_host, w, CPROP_APPID, "cprop-anchor"), 10, "the anchor")
        both: list[float] = []
        per_node: list[list[float]] = [[], []]
        rtts: list[float] = []
        gone: list[float] = []
        for i in range(a.cprop_rounds):
            spec = service_instance(CPROP_APPID, i + 1)
            spec.hostname = f"cprop-{i:04d}"
            rtt, delays, worst = await change("register", spec.form(), spec.hostname)
            rtts.append(rtt)
            both.append(worst)
            for k, d in enumerate(delays):
                per_node[k].append(d)
            cancel = [("zone", ZONE), ("env", ENV), ("appid", CPROP_APPID), ("hostname", spec.hostname)]
            _, _, worst = await change("cancel", cancel, spec.hostname)
            gone.append(worst)
    return {
        "rounds": len(both),
        "both": _stats_ms(both),
        "on_b": _stats_ms(per_node[0]),
        "on_c": _stats_ms(per_node[1]),
        "register_rtt": _stats_ms(rtts),
        "cancel_both": _stats_ms(gone),
    }


def bench_cluster_propagation(a: argparse.Namespace) -> dict[str, Any]:
    with Cluster() as cl:
        log(f"cluster-propagation: {a.cprop_rounds} rounds: register on A → long polls parked on B and C")
        r = run_async(cluster_propagation_async(cl, a))
        errors = [ln for n in cl.nodes for ln in n.stderr_tail(100_000).splitlines() if ln.strip()]
    both, b, c, rtt, gone = r["both"], r["on_b"], r["on_c"], r["register_rtt"], r["cancel_both"]
    v = verdict("cluster_propagation", both["p99_ms"])
    line = (
        f"cluster-propagation ({r['rounds']} rounds, 3 nodes; register on A → a long poll parked on B and on "
        f"C answers): visible on both: p50 {both['p50_ms']:.2f} ms, p99 {both['p99_ms']:.2f} ms, max "
        f"{both['max_ms']:.2f} ms (target p99 <= 50 ms: {v}) | on B p50 {b['p50_ms']:.2f} / p99 "
        f"{b['p99_ms']:.2f} ms, on C p50 {c['p50_ms']:.2f} / p99 {c['p99_ms']:.2f} ms | register answered "
        f"by A: p50 {rtt['p50_ms']:.2f}, p99 {rtt['p99_ms']:.2f} ms | cancel on A → gone on both: p50 "
        f"{gone['p50_ms']:.2f}, p99 {gone['p99_ms']:.2f}, max {gone['max_ms']:.2f} ms | node log lines "
        f"{len(errors)}"
    )
    print(line, flush=True)
    return {"bench": "cluster-propagation", **r, "node_log": errors[:5], "verdict": v, "line": line}


# -- h2. cluster-renew -------------------------------------------------------------------------------


def prepare_renew(addr: str) -> str:
    """Register the renewed instance (and a neighbour), check one renew; returns the answer size."""
    api(addr, "POST", "/discovery/register", service_instance(RENEW_APPID, 1).form())
    ins = service_instance(RENEW_APPID, 1)
    spec = Spec(appid=RENEW_APPID, hostname=RENEW_HOST, addrs=ins.addrs, metadata=ins.metadata)
    api(addr, "POST", "/discovery/register", spec.form())
    renew = [("zone", ZONE), ("env", ENV), ("appid", RENEW_APPID), ("hostname", RENEW_HOST)]
    _, body = http_call(addr, "POST", "/discovery/renew", renew)
    if json.loads(body).get("code") != 0:
        raise RuntimeError(f"renew check failed: {body!r}")
    return f"{len(body)} B answer"


def bench_cluster_renew(a: argparse.Namespace) -> dict[str, Any]:
    lua_args = [ZONE, ENV, RENEW_APPID, RENEW_HOST]
    with node("single") as single:
        prepare_renew(single.addr)
        log(f"cluster-renew: wrk -t{a.threads} -c{a.connections} -d{a.duration}s renew on a single node")
        one = run_wrk(single, "renew.lua", lua_args, a)
    with Cluster() as cl:
        na, nb, nc = cl.nodes
        prepare_renew(na.addr)
        for peer in (nb, nc):
            wait_sync(f"the instance on {peer.name}", partial(has_host, peer, RENEW_APPID, RENEW_HOST))
        wait_sync("A's replication queues to drain", lambda: queues_empty(na, (nb, nc)))
        peers = (("B", nb), ("C", nc))
        m0 = metrics(na.addr)
        cpu_b0, cpu_c0, t0 = cpu_seconds(nb.pid), cpu_seconds(nc.pid), time.monotonic()
        log(f"cluster-renew: the same wrk run on node A of the cluster (B {nb.addr}, C {nc.addr})")
        three = run_wrk(na, "renew.lua", lua_args, a)
        wall = time.monotonic() - t0
        peers_cpu = [(cpu_seconds(p.pid) - c0) / wall for p, c0 in ((nb, cpu_b0), (nc, cpu_c0))]
        m1 = metrics(na.addr)
        sent = {k: repl_stats(m1, p.addr)["sent"] - repl_stats(m0, p.addr)["sent"] for k, p in peers}
        drain_s = wait_sync("A's replication queues to drain", lambda: queues_empty(na, (nb, nc)))
        m2 = metrics(na.addr)
        repl = {k: repl_stats(m2, p.addr) for k, p in peers}
        errors = [ln for n in cl.nodes for ln in n.stderr_tail(100_000).splitlines() if ln.strip()]
    ratio = three.rps / one.rps
    v = verdict("cluster_renew", ratio)
    line = (
        f"cluster-renew (wrk -t{a.threads} -c{a.connections} -d{a.duration}s, renew of one instance): single "
        f"node {one.short()} | node A of 3 {three.short()}; B {peers_cpu[0]:.0%}, C {peers_cpu[1]:.0%} of a "
        f"core | cluster/single {ratio:.2f} (target >= 0.60: {v}) | replicated renews sent during the run: "
        f"to B {sent['B']:,}, to C {sent['C']:,} (coalesced; queues drained {drain_s:.2f} s after wrk) | "
        f"3 nodes + wrk on {os.cpu_count()} shared cores | node log lines {len(errors)}"
    )
    print(line, flush=True)
    return {
        "bench": "cluster-renew",
        "single_rps": one.rps,
        "single": one.short(),
        "cluster_rps": three.rps,
        "cluster": three.short(),
        "ratio": ratio,
        "peers_cpu": peers_cpu,
        "replicated_sent": sent,
        "replication": repl,
        "drain_s": drain_s,
        "node_log": errors[:5],
        "verdict": v,
        "line": line,
    }


# -- h3. replication-queue ---------------------------------------------------------------------------


def rq_spec(i: int, version: str = "v1.0.0") -> Spec:
    spec = service_instance(f"bench.rq.svc-{i % RQ_APPS}", i)
    spec.hostname = f"rq-{i:05d}-7f9c4d5b"
    spec.version = version
    return spec


def rq_ident(i: int) -> list[tuple[str, str]]:
    return [
        ("zone", ZONE),
        ("env", ENV),
        ("appid", f"bench.rq.svc-{i % RQ_APPS}"),
        ("hostname", rq_spec(i).hostname),
    ]


async def replication_queue_async(cl: Cluster, a: argparse.Namespace) -> dict[str, Any]:
    na, nb, nc = cl.nodes
    n, rounds, churn, conns = a.rq_instances, a.rq_renews, a.rq_churn, a.mem_connections
    loop = asyncio.get_running_loop()
    host, _, port = na.addr.rpartition(":")
    pipes: list[Pipeline] = []
    for _ in range(conns):
        _, proto = await loop.create_connection(Pipeline, host, int(port))
        pipes.append(proto)

    async def send(requests: list[bytes]) -> None:
        await asyncio.gather(*(pipes[c].send(requests[c::conns]) for c in range(conns) if requests[c::conns]))

    def failures() -> list[str]:
        return [f for p in pipes for f in p.failures]

    await send([register_request(na.addr, rq_spec(i)) for i in range(n)])
    base = int(metrics(nc.addr)["discoverd_instances"]) - n  # the nodes' own infra.discovery records
    for peer in (nb, nc):
        await wait_until(partial(has_instances, peer, n + base), 30, f"{n} instances on {peer.name}", 0.1)
    await wait_until(lambda: queues_empty(na, (nb, nc)), 30, "A's queues to drain", 0.1)
    rss0 = await settle_rss(na.pid)
    before = repl_stats(metrics(na.addr), nb.addr)
    log(
        f"replication-queue: {n:,} instances on A, B and C; A RSS {rss0 / 2**20:.1f} MiB; "
        f"kill -9 B (pid {nb.pid})"
    )
    os.kill(nb.pid, signal.SIGKILL)
    assert nb.proc is not None
    nb.proc.wait(10)

    samples: list[tuple[float, int, int, int, int]] = []  # (t, rss, pending B, dropped B, pending C)
    t_start = time.monotonic()

    async def sampler() -> None:
        async with aiohttp.ClientSession() as s:
            while True:
                async with s.get(f"{na.url}/metrics") as resp:
                    m = parse_metrics(await resp.text())
                rb, rc = repl_stats(m, nb.addr), repl_stats(m, nc.addr)
                samples.append(
                    (
                        time.monotonic() - t_start,
                        rss_bytes(na.pid),
                        rb["pending"],
                        rb["dropped"],
                        rc["pending"],
                    )
                )
                await asyncio.sleep(0.1)

    sample_task = asyncio.create_task(sampler())
    ops = {"renew": 0, "cancel": 0, "register": 0}
    per_round = a.rq_seconds / rounds
    slow_rounds = 0
    try:
        for r in range(rounds):
            t_round = time.monotonic()
            out = {(r * churn + k) % n for k in range(churn)}
            await send([post_request(na.addr, "/discovery/cancel", rq_ident(i)) for i in sorted(out)])
            await send(
                [post_request(na.addr, "/discovery/renew", rq_ident(i)) for i in range(n) if i not in out]
            )
            await send([register_request(na.addr, rq_spec(i, f"v1.{r + 1}.0")) for i in sorted(out)])
            ops["cancel"] += len(out)
            ops["renew"] += n - len(out)
            ops["register"] += len(out)
            if failures():
                raise RuntimeError(f"A answered {len(failures())} requests with an error: {failures()[:3]}")
            left = per_round - (time.monotonic() - t_round)
            if left > 0:
                await asyncio.sleep(left)
            else:
                slow_rounds += 1
        work_s = time.monotonic() - t_start
        await asyncio.sleep(0.5)
    finally:
        sample_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sample_task
        for p in pipes:
            if p.transport is not None:
                p.transport.close()
    rss1 = await settle_rss(na.pid)
    after = repl_stats(metrics(na.addr), nb.addr)
    c_drain = await settle(lambda: repl_stats(metrics(na.addr), nc.addr)["pending"], within=10, step=0.1)
    a_count, c_count = metrics(na.addr)["discoverd_instances"], metrics(nc.addr)["discoverd_instances"]
    return {
        "instances": n,
        "rounds": rounds,
        "ops": ops,
        "work_s": work_s,
        "slow_rounds": slow_rounds,
        "rss_before": rss0,
        "rss_max": max(s[1] for s in samples),
        "rss_after": rss1,
        "pending_b_before": before["pending"],
        "pending_b_max": max(s[2] for s in samples),
        "pending_b_after": after["pending"],
        "dropped_b": after["dropped"] - before["dropped"],
        "failed_b": after["failed"] - before["failed"],
        "pending_c_max": max(s[4] for s in samples),
        "pending_c_after": c_drain,
        "instances_a": a_count,
        "instances_c": c_count,
        "samples": len(samples),
        "trace": [
            (round(t, 1), round(rss / 2**20, 1), pb)
            for t, rss, pb, _, _ in samples[:: max(1, len(samples) // 12)]
        ],
    }


def bench_replication_queue(a: argparse.Namespace) -> dict[str, Any]:
    extra = ("--replication-queue", str(a.rq_queue_limit)) if a.rq_queue_limit else ()
    with Cluster(extra=extra) as cl:
        r = run_async(replication_queue_async(cl, a))
        log_a = [ln for ln in cl.nodes[0].stderr_tail(1_000_000).splitlines() if ln.strip()]
    limit = a.rq_queue_limit or 10_000
    bound = min(r["instances"] + 10, limit)
    ok = r["pending_b_max"] <= bound and r["instances_a"] == r["instances_c"]
    v = "MET" if ok else "MISSED"
    grow = (r["rss_after"] - r["rss_before"]) / 2**20
    line = (
        f"replication-queue ({r['instances']:,} instances on A; B killed -9; then {r['rounds']} renews of "
        f"every instance = {r['rounds'] * 30 / 60:.0f} min of 30 s renews, compressed into "
        f"{r['work_s']:.0f} s, plus {r['ops']['cancel']} cancels and {r['ops']['register']} re-registers; "
        f"{sum(r['ops'].values()):,} "
        f"writes): A's queue for dead B: {r['pending_b_before']} → max {r['pending_b_max']:,} → "
        f"{r['pending_b_after']:,} pending at the end (target <= {bound:,}: one op per instance, "
        f"at most the queue limit {limit:,}: {v}), "
        f"{r['dropped_b']:,} dropped (queue full or 10 failed attempts), {r['failed_b']} failed sends | "
        f"A RSS "
        f"{r['rss_before'] / 2**20:.1f} → max {r['rss_max'] / 2**20:.1f} → {r['rss_after'] / 2**20:.1f} MiB "
        f"({grow:+.1f} MiB) | queue for live C: max {r['pending_c_max']:,}, {r['pending_c_after']} at the "
        f"end; instances A {r['instances_a']:.0f} / C {r['instances_c']:.0f} | A log lines {len(log_a)}"
    )
    print(line, flush=True)
    return {"bench": "replication-queue", **r, "node_log": log_a[:5], "verdict": v, "line": line}


# -- i. gossip (memberlist nodes) -------------------------------------------------------------------


def bench_gossip(a: argparse.Namespace) -> dict[str, Any]:
    """``bench/gossip_bench.py`` as a child process (its own event loop and CPU account), read back as JSON.

    It starts its nodes (and, with ``--gossip-procs``, its worker processes) itself and stops them; this
    process waits at most 10 minutes, then SIGKILLs it by PID.
    """
    script = BENCH_DIR / "gossip_bench.py"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gossip.json"
        cmd = [sys.executable, str(script), "--preset", a.gossip_preset, "--scale", str(a.gossip_scale)]
        cmd += ["--nodes", str(a.gossip_nodes), "--repeat", str(a.gossip_repeat)]
        cmd += ["--procs", str(a.gossip_procs), "--json", str(out)]
        log(f"gossip: {' '.join(cmd[1:])}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)  # progress goes to our stderr
        try:
            table, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError("gossip_bench.py did not finish within 600 s") from None
        if not out.exists():
            raise RuntimeError(f"gossip_bench.py exited {proc.returncode} without results")
        r = json.loads(out.read_text())
    f, j = r["formula"], r["join"]
    if j["converged"]:
        join = (
            f"join {j['seconds']:.2f} s (median node {j['median_node']:.3f} s) vs gossip estimate "
            f"{f['join']:.3f} s = {j['seconds'] / f['join']:.1f}× (push/pull {f['push_pull']:.1f} s)"
        )
    else:
        join = (
            f"join NOT CONVERGED ({j.get('missing_pairs')} member pairs missing after {j['timeout']:.0f} s)"
        )
    parts = [f"gossip ({r['nodes']} nodes, {r['preset']} ÷ {r['scale']:g}, {r['procs']} process(es)): {join}"]
    fails = [x for x in r.get("failure", []) if x["all_dead"] is not None]
    if fails:
        med = statistics.median(x["all_dead"] for x in fails)
        ratio = statistics.median(x["ratio"] for x in fails)
        parts.append(
            f"failure → all DEAD median {med:.2f} s of {len(r['failure'])} vs probe + min "
            f"{fails[0]['expected']:.2f} s = {ratio:.2f}× (max bound {fails[0]['max_bound']:.2f} s)"
        )
    idle = r.get("idle")
    if idle:
        parts.append(
            f"idle {idle['cpu_pct_per_node']:.3f} % of a core per node (÷ scale "
            f"{idle['cpu_pct_per_node_scale1']:.3f} %), {idle['packets_per_s_per_node']:.1f} pkt/s per node"
        )
    if "refutations_total" in r:
        parts.append(f"{r['refutations_total']} refutations, {len(r['false_deaths_total'])} false deaths")
    line = " | ".join(parts)
    print(line, flush=True)
    return {"bench": "gossip", **r, "table": table.decode(errors="replace"), "line": line}


# -- driver ----------------------------------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "renew": bench_renew,
    "fetch": bench_fetch,
    "polls": bench_polls,
    "memory": bench_memory,
    "client-fetch": bench_client_fetch,
    "propagation": bench_propagation,
    "many-clients": bench_many_clients,
    "cluster-propagation": bench_cluster_propagation,
    "cluster-renew": bench_cluster_renew,
    "replication-queue": bench_replication_queue,
    "gossip": bench_gossip,
}


def parser() -> argparse.ArgumentParser:
    """The command line of the benchmarks (``bench/ab.py`` adds its own options to it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("bench", nargs="*", help=f"benchmarks to run: {', '.join(BENCHES)} (default: all)")
    p.add_argument("--all", action="store_true", help="run every benchmark (the default)")
    p.add_argument("--duration", type=int, default=10, help="wrk seconds per run (10)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the baseline runs")
    p.add_argument("--fetch-instances", type=int, default=20, help="instances of the fetched app (20)")
    p.add_argument("--polls", type=int, default=10_000, help="held polls in the fan-out benchmark")
    p.add_argument("--poll-hold", type=float, default=120.0, help="server --poll-hold for the fan-out")
    p.add_argument("--poll-batch", type=int, default=500, help="polls opened per batch while parking")
    p.add_argument(
        "--poll-clients",
        default="aiohttp,raw",
        help="fan-out clients to run, in order: aiohttp (one task per poll) and/or raw (asyncio+httptools)",
    )
    p.add_argument(
        "--sources",
        default=",".join(f"127.0.0.{i}" for i in range(1, 9)),
        help="client source addresses for the polls (spread the ephemeral ports)",
    )
    p.add_argument("--instances", type=int, default=100_000, help="instances in the memory benchmark")
    p.add_argument("--per-app", type=int, default=100, help="instances per appid in the memory benchmark")
    p.add_argument("--mem-connections", type=int, default=4, help="pipelined connections for the registers")
    p.add_argument("--mem-window", type=int, default=128, help="requests in flight per connection")
    p.add_argument("--cf-calls", type=int, default=100_000, help="cached AsyncClient.fetch calls timed")
    p.add_argument("--cf-sync-calls", type=int, default=10_000, help="sync Client.fetch calls timed")
    p.add_argument("--prop-rounds", type=int, default=200, help="register/cancel rounds in propagation")
    p.add_argument("--prop-gap", type=float, default=0.02, help="seconds between changes in propagation")
    p.add_argument("--mc-clients", type=int, default=1000, help="AsyncClients in many-clients")
    p.add_argument("--mc-procs", type=int, default=4, help="load-generator processes in many-clients")
    p.add_argument("--mc-apps", type=int, default=5, help="apps every client watches in many-clients")
    p.add_argument("--mc-instances", type=int, default=3, help="instances per app in many-clients")
    p.add_argument(
        "--mc-idle", type=float, default=40.0, help="seconds of idle hold measured (> the 30 s poll hold)"
    )
    p.add_argument("--mc-concurrency", type=int, default=25, help="clients starting at once per process")
    p.add_argument("--cprop-rounds", type=int, default=200, help="register rounds in cluster-propagation")
    p.add_argument("--rq-instances", type=int, default=1000, help="instances registered in replication-queue")
    p.add_argument(
        "--rq-renews",
        type=int,
        default=20,
        help="renews of every instance in replication-queue (20 = 10 min)",
    )
    p.add_argument("--rq-churn", type=int, default=10, help="instances cancelled + re-registered per round")
    p.add_argument(
        "--rq-seconds", type=float, default=60.0, help="seconds the replication-queue load is spread over"
    )
    p.add_argument(
        "--rq-queue-limit",
        type=int,
        default=0,
        help="nodes' --replication-queue in replication-queue (default)",
    )
    p.add_argument("--gossip-preset", choices=("local", "lan", "wan"), default="local", help="gossip preset")
    p.add_argument(
        "--gossip-scale", type=float, default=5.0, help="gossip: divide every interval by this (5)"
    )
    p.add_argument("--gossip-nodes", type=int, default=32, help="gossip cluster size (32)")
    p.add_argument("--gossip-repeat", type=int, default=3, help="gossip failure-detection rounds (3)")
    p.add_argument("--gossip-procs", type=int, default=1, help="gossip worker processes (1 = one loop)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser()
    ns = p.parse_args(argv)
    unknown = [b for b in ns.bench if b not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    names = list(BENCHES) if a.all or not a.bench else list(dict.fromkeys(a.bench))
    for s in a.sources.split(","):
        if s and not s.startswith("127."):
            raise SystemExit(f"--sources must be loopback addresses, got {s}")
    results: list[dict[str, Any]] = []
    failed = 0
    with contextlib.suppress(KeyboardInterrupt):
        for name in names:
            t0 = time.monotonic()
            try:
                res = BENCHES[name](a)
            except Exception as exc:
                failed += 1
                print(f"{name}: FAILED: {exc}", flush=True)
                res = {"bench": name, "error": str(exc)}
            res["seconds"] = round(time.monotonic() - t0, 1)
            log(f"{name} took {res['seconds']} s")
            results.append(res)
    if a.json is not None:
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "argv": sys.argv}
        a.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
