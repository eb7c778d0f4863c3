"""Load generators: wrk runs (with the server's and wrk's CPU share) and pipelined keep-alive requests."""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import httptools

from bench.harness import TARGETS, log, result, verdict
from bench.node_api import FORM, Spec
from bench.procs import BENCH_DIR, Child, baseline, children_cpu, cpu_seconds, discoverd

LUA_DIR = BENCH_DIR / "lua"

# -- wrk -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles, errors and CPU shares (of one core)."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: str
    server_cpu: float
    wrk_cpu: float

    def short(self) -> str:
        """The figures as one phrase of a result line."""
        s = (
            f"{self.rps:,.0f} req/s (p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"server CPU {self.server_cpu:.0%}, wrk CPU {self.wrk_cpu:.0%} of a core)"
        )
        return s + (f" ERRORS: {self.errors}" if self.errors else "")


def _ms(text: str) -> float:
    """A wrk duration (``2.37ms``, ``850.00us``, ``1.02s``) in milliseconds; NaN if unreadable."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def _wrk_cmd(url: str, lua: str, lua_args: Sequence[str], a: argparse.Namespace) -> list[str]:
    """The wrk command line; RuntimeError if wrk is not installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (make sysdeps)")
    opts = [f"-t{a.threads}", f"-c{a.connections}", f"-d{a.duration}s", "--latency"]
    return [wrk, *opts, "-s", str(LUA_DIR / lua), url, "--", *lua_args]


def _percentile_ms(text: str, label: str) -> float:
    """The latency of wrk's ``--latency`` row ``label`` (``50%``), in ms; NaN if missing."""
    m = re.search(rf"^\s*{label}\s+(\S+)", text, re.M)
    return _ms(m.group(1)) if m else float("nan")


def _parse_wrk(text: str, server_cpu: float, wrk_cpu: float) -> WrkResult:
    """The figures of wrk's output."""
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = "; ".join(
        line.strip() for line in text.splitlines() if "Socket errors" in line or "Non-2xx" in line
    )
    p50, p99 = _percentile_ms(text, "50%"), _percentile_ms(text, "99%")
    return WrkResult(rps, total, p50, p99, errors, server_cpu, wrk_cpu)


def run_wrk(server: Child, lua: str, lua_args: Sequence[str], a: argparse.Namespace) -> WrkResult:
    """``wrk -t{threads} -c{connections} -d{duration}s --latency -s bench/lua/LUA URL -- ARGS`` against
    ``server``; RuntimeError if wrk is missing or failed."""
    cmd = _wrk_cmd(server.url, lua, lua_args, a)
    cpu0, wcpu0, t0 = cpu_seconds(server.pid), children_cpu(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 30, check=False)
    wall = time.monotonic() - t0
    cpu1, wcpu1 = cpu_seconds(server.pid), children_cpu()
    if out.returncode != 0 or "Requests/sec:" not in out.stdout:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout} {out.stderr}")
    return _parse_wrk(out.stdout, (cpu1 - cpu0) / wall, (wcpu1 - wcpu0) / wall)


def throughput(
    name: str, a: argparse.Namespace, setup: Callable[[Child], str], lua: str, lua_args: Sequence[str]
) -> dict[str, Any]:
    """wrk on a fresh ``discoverd serve`` prepared by ``setup`` (which returns a detail for the line),
    then (unless ``--no-baseline``) the same run on the baseline; prints and returns the result record."""
    with discoverd() as srv:
        detail = setup(srv)
        log(f"{name}: wrk -t{a.threads} -c{a.connections} -d{a.duration}s -s bench/lua/{lua} on discoverd")
        d = run_wrk(srv, lua, lua_args, a)
    res: dict[str, Any] = {"rps": d.rps, "discoverd": d.short(), "detail": detail}
    line = f"{name}: discoverd {d.short()}"
    if a.baseline:
        with baseline() as base:
            log(f"{name}: same wrk run on the hello-world baseline")
            b = run_wrk(base, lua, lua_args, a)
        res |= {"baseline_rps": b.rps, "baseline": b.short(), "ratio": d.rps / b.rps}
        line += f" | baseline {b.rps:,.0f} req/s | discoverd/baseline {d.rps / b.rps:.2f}"
    res["verdict"] = verdict(name, d.rps)
    line += f" | target >= {TARGETS[name][1]:,.0f} req/s: {res['verdict']} | {detail}"
    return result(name, line, **res)


# -- pipelined keep-alive requests -------------------------------------------------------------------------


class Pipeline(asyncio.Protocol):
    """One keep-alive connection sending pipelined requests and counting the answers; an answer that is
    not HTTP 200 with ``code 0`` is kept in :attr:`failures`."""

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
        """Write ``requests`` at once; returns when every one of them was answered."""
        assert self.transport is not None
        self.waiting_for = self.answered + len(requests)
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(b"".join(requests))
        await self.done


async def open_pipelines(addr: str, count: int) -> list[Pipeline]:
    """``count`` keep-alive connections to ``addr``, opened one after the other."""
    loop = asyncio.get_running_loop()
    host, _, port = addr.rpartition(":")
    pipes: list[Pipeline] = []
    for _ in range(count):
        _, proto = await loop.create_connection(Pipeline, host, int(port))
        pipes.append(proto)
    return pipes


def close_pipelines(pipes: Sequence[Pipeline]) -> None:
    """Close the connections of :func:`open_pipelines`."""
    for p in pipes:
        if p.transport is not None:
            p.transport.close()


async def send_spread(pipes: Sequence[Pipeline], requests: Sequence[bytes]) -> None:
    """Deal ``requests`` round-robin over ``pipes``, all sent at once; returns when all were answered."""
    conns = len(pipes)
    await asyncio.gather(*(pipes[c].send(requests[c::conns]) for c in range(conns) if requests[c::conns]))


def failures(pipes: Sequence[Pipeline]) -> list[str]:
    """Every failed answer of these connections so far."""
    return [f for p in pipes for f in p.failures]


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
    """``POST /discovery/register`` of ``spec`` as raw bytes."""
    return post_request(addr, "/discovery/register", spec.form())
