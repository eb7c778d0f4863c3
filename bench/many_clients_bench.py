"""``many-clients``: 1,000 ``AsyncClient``s in load-generator processes (``bench/many_clients.py``) watching
5 apps on one server: start-up, idle hold and one change seen by every (client, app); server CPU and RSS."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from typing import IO, Any, cast

from bench.harness import log, log_lines, mib, pct, result, run_loop, settle
from bench.node_api import ENV, ZONE
from bench.procs import (
    BENCH_DIR,
    Child,
    cpu_seconds,
    discoverd,
    kill,
    open_fds,
    raise_fd_limit,
    read_line,
    rss_bytes,
    settle_rss,
    spawn_piped,
    write_line,
)
from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``many-clients``."""
    p.add_argument("--mc-clients", type=int, default=1000, help="AsyncClients in many-clients")
    p.add_argument("--mc-procs", type=int, default=4, help="load-generator processes in many-clients")
    p.add_argument("--mc-apps", type=int, default=5, help="apps every client watches in many-clients")
    p.add_argument("--mc-instances", type=int, default=3, help="instances per app in many-clients")
    p.add_argument(
        "--mc-idle", type=float, default=40.0, help="seconds of idle hold measured (> the 30 s poll hold)"
    )
    p.add_argument("--mc-concurrency", type=int, default=25, help="clients starting at once per process")


class Worker:
    """One ``bench/many_clients.py`` load-generator process (line protocol on stdin/stdout)."""

    def __init__(self, proc: asyncio.subprocess.Process, index: int, stderr: IO[bytes]) -> None:
        self.proc = proc
        self.index = index
        self.stderr = stderr

    async def receive(self, verb: str, timeout: float) -> dict[str, Any]:
        """The next message, which must be ``verb``; RuntimeError (with its stderr) otherwise."""
        line = await read_line(self.proc, timeout)
        got, _, rest = line.partition(" ")
        if got != verb:
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"worker {self.index}: expected {verb!r}, got {line[:200]!r} {tail}")
        return cast(dict[str, Any], json.loads(rest))

    async def send(self, verb: str, obj: dict[str, Any] | None = None) -> None:
        """Send one message: ``verb`` and a JSON object."""
        await write_line(self.proc, f"{verb} {json.dumps(obj or {})}")

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
                await kill(self.proc)
        self.stderr.close()
        return bye


def per_worker(a: argparse.Namespace) -> list[int]:
    """How many of ``--mc-clients`` each of ``--mc-procs`` processes runs."""
    return [a.mc_clients // a.mc_procs + (w < a.mc_clients % a.mc_procs) for w in range(a.mc_procs)]


async def spawn_workers(srv: Child, a: argparse.Namespace, apps: list[str], workers: list[Worker]) -> None:
    """Start the load generators, appending each to ``workers`` as soon as it runs."""
    for w, count in enumerate(per_worker(a)):
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in Worker.stop()
        proc = await spawn_piped(
            sys.executable,
            str(BENCH_DIR / "many_clients.py"),
            *("--addr", srv.addr, "--env", ENV, "--zone", ZONE, "--index", str(w)),
            *("--clients", str(count), "--apps", ",".join(apps), "--expect", str(a.mc_instances)),
            *("--concurrency", str(a.mc_concurrency)),
            stderr=stderr,
        )
        workers.append(Worker(proc, w, stderr))


async def register_apps(ctl: AsyncClient, apps: list[str], instances: int) -> None:
    """Register (and keep alive through ``ctl``) ``instances`` instances of every app."""
    for k, app in enumerate(apps):
        for j in range(instances):
            await ctl.register(app, [f"http://10.1.{k}.{j + 1}:8000"], hostname=f"svc{k}-{j:02d}")


async def start_clients(
    srv: Child, a: argparse.Namespace, apps: list[str], workers: list[Worker], m: dict[str, Any]
) -> list[dict[str, Any]]:
    """Start the load generators and wait until every client is ready; their ``ready`` messages."""
    m["cpu0"], t0 = cpu_seconds(srv.pid), time.monotonic()
    await spawn_workers(srv, a, apps, workers)
    log(f"many-clients: workers pids {[wk.proc.pid for wk in workers]}")
    readies = await asyncio.gather(*(wk.receive("ready", 600) for wk in workers))
    m["start_s"] = time.monotonic() - t0
    m["started"] = sum(r["clients"] for r in readies)
    m["start_errors"] = sum(r["errors"] for r in readies)
    log(
        f"many-clients: {m['started']:,} clients ready after {m['start_s']:.1f} s, {m['start_errors']} errors"
    )
    return readies


async def idle_hold(srv: Child, a: argparse.Namespace, m: dict[str, Any]) -> None:
    """Every client has one poll parked (one connection each, plus its idle keep-alive one): read the
    server's fds, RSS and CPU, then hold ``--mc-idle`` seconds."""
    m["fds_held"] = await settle(lambda: open_fds(srv.pid), within=30, step=0.5, stable=4)
    m["rss1"] = await settle_rss(srv.pid)
    m["cpu1"] = cpu_seconds(srv.pid)
    log(
        f"many-clients: server {m['fds_held'] - m['fds0']:+} fds, RSS {mib(m['rss1'])} MiB; "
        f"idle hold for {a.mc_idle:g} s"
    )
    await asyncio.sleep(a.mc_idle)
    m["cpu2"] = cpu_seconds(srv.pid)


async def change(
    ctl: AsyncClient, srv: Child, apps: list[str], workers: list[Worker], m: dict[str, Any]
) -> list[dict[str, Any]]:
    """One new instance in each app, all at once; every client must see all of them. Their ``done``s."""
    targets = {app: f"svc{k}-new" for k, app in enumerate(apps)}
    for wk in workers:
        await wk.send("arm", targets)
    await asyncio.gather(*(wk.receive("armed", 30) for wk in workers))
    await asyncio.sleep(0.2)
    m["cpu3"], m["tc"] = cpu_seconds(srv.pid), time.monotonic()
    await asyncio.gather(
        *(
            ctl.register(app, [f"http://10.1.{k}.200:8000"], hostname=targets[app])
            for k, app in enumerate(apps)
        )
    )
    m["t_reg"] = time.monotonic()
    dones = await asyncio.gather(*(wk.receive("done", 120) for wk in workers))
    m["cpu4"] = cpu_seconds(srv.pid)
    m["rss2"] = rss_bytes(srv.pid)
    return dones


async def many_clients_async(srv: Child, a: argparse.Namespace) -> dict[str, Any]:
    """The whole many-clients run against ``srv``; its figures (:func:`record`)."""
    apps = [f"bench.many.svc-{k}" for k in range(a.mc_apps)]
    config = ClientConfig(start_timeout=30, request_timeout=30)
    m: dict[str, Any] = {"cpu_start": cpu_seconds(srv.pid)}
    async with AsyncClient([srv.addr], env=ENV, zone=ZONE, hostname="bench-mc-ctl", config=config) as ctl:
        await register_apps(ctl, apps, a.mc_instances)
        m["rss0"] = await settle_rss(srv.pid)
        m["fds0"] = open_fds(srv.pid)
        log(
            f"many-clients: server RSS {mib(m['rss0'])} MiB, {m['fds0']} fds; starting {a.mc_clients:,} "
            f"clients in {a.mc_procs} processes ({a.mc_concurrency} starting at a time in each)"
        )
        workers: list[Worker] = []
        byes: list[dict[str, Any] | None] = []
        try:
            readies = await start_clients(srv, a, apps, workers, m)
            await idle_hold(srv, a, m)
            dones = await change(ctl, srv, apps, workers, m)
        finally:
            for wk in workers:
                byes.append(await wk.stop())
        m["cpu_end"] = cpu_seconds(srv.pid)
    return record(a, len(apps), m, (readies, dones, byes))


def record(
    a: argparse.Namespace,
    apps: int,
    m: dict[str, Any],
    msgs: tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any] | None]],
) -> dict[str, Any]:
    """The figures from the measurements ``m`` and the workers' ``ready``, ``done`` and ``bye`` messages."""
    readies, dones, byes = msgs
    arrivals = sorted(t - m["tc"] for d in dones for t in d["arrivals"])
    nan = float("nan")
    return {
        "clients": a.mc_clients,
        "started": m["started"],
        "procs": a.mc_procs,
        "apps": apps,
        "instances_per_app": a.mc_instances,
        "start_s": m["start_s"],
        "start_errors": m["start_errors"],
        "errors": sum(d["errors"] for d in dones),
        "close_errors": sum(b["close_errors"] for b in byes if b is not None),
        "error_samples": [s for r in [*readies, *dones] for s in r["samples"]][:5],
        "fds_held": m["fds_held"] - m["fds0"],
        "rss_before": m["rss0"],
        "rss_held": m["rss1"],
        "rss_after_change": m["rss2"],
        "cpu_start_s": m["cpu1"] - m["cpu0"],
        "cpu_idle_s": m["cpu2"] - m["cpu1"],
        "idle_s": a.mc_idle,
        "idle_cpu_share": (m["cpu2"] - m["cpu1"]) / a.mc_idle,
        "cpu_change_s": m["cpu4"] - m["cpu3"],
        "clients_cpu_change_s": sum(d["cpu_s"] for d in dones),
        "cpu_total_s": m["cpu_end"] - m["cpu_start"],
        "changes_expected": m["started"] * apps,
        "changes_seen": len(arrivals),
        "missing": sum(d["missing"] for d in dones),
        "registers_answered_ms": (m["t_reg"] - m["tc"]) * 1000,
        "first_ms": arrivals[0] * 1000 if arrivals else nan,
        "median_ms": pct(arrivals, 0.5) * 1000 if arrivals else nan,
        "all_seen_ms": arrivals[-1] * 1000 if arrivals else nan,
        "polls_sent_before": sum(r["polls_sent"] for r in readies),
        "polls_sent_after": sum(d["polls_sent"] for d in dones),
    }


def line(r: dict[str, Any], v: str) -> str:
    """The result line."""
    text = (
        f"many-clients: {r['started']:,}/{r['clients']:,} AsyncClients in {r['procs']} processes, each "
        f"watching {r['apps']} apps ({r['instances_per_app']} instances each); started in "
        f"{r['start_s']:.1f} s | server: RSS {mib(r['rss_before'])} → {mib(r['rss_held'])} MiB "
        f"held ({r['fds_held']:+} fds) → {mib(r['rss_after_change'])} MiB after the change; CPU "
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
        text += f" | e.g. {r['error_samples'][:2]}"
    return text


def bench_many_clients(a: argparse.Namespace) -> dict[str, Any]:
    """The ``many-clients`` benchmark; its result record."""
    raise_fd_limit(a.mc_clients * 4 + 1024)
    with discoverd("--env", ENV, "--zone", ZONE) as srv:
        r = run_loop(many_clients_async(srv, a))
        server_log = log_lines(srv.stderr_tail(1_000_000))
    r["server_log_lines"] = len(server_log)
    r["server_log_sample"] = server_log[:3]
    ok = r["errors"] == 0 and r["missing"] == 0 and r["changes_seen"] == r["changes_expected"]
    v = "MET" if ok else "MISSED"
    return result("many-clients", line(r, v), **r, verdict=v)
