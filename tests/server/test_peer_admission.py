"""Peer admission on running nodes: a flood of fake ``infra.discovery`` registrations stays bounded
(targets, time, memory, log volume, shutdown), the caps and re-admission, what a peer secret
admits, and the aggregated failure log of a dead peer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from discoverd.model import INFRA_APPID
from discoverd.server.peers import PeerLog
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.helpers import eventually

SECRET = "peer-s"


def closed_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nobody listens on (bound, then closed: connections are refused)."""
    ports: set[int] = set()
    while len(ports) < n:
        batch = [socket.socket() for _ in range(min(200, n - len(ports)))]
        for s in batch:
            s.bind(("127.0.0.1", 0))
            ports.add(s.getsockname()[1])
        for s in batch:
            s.close()
    return sorted(ports)[:n]


def infra(hostname: str, zone: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "zone": zone,
        "env": "dev",
        "appid": INFRA_APPID,
        "hostname": hostname,
        "status": "1",
        "addrs": f"http://127.0.0.1:{port}",
        **extra,
    }


async def post(
    session: aiohttp.ClientSession, addr: str, path: str, form: dict[str, str], token: str = ""
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(f"http://{addr}/discovery/{path}", data=form, headers=headers) as r:
        code: int = orjson.loads(await r.read())["code"]
        return code


# -- the flood ---------------------------------------------------------------------------------------

FAKE_ZONES = 1000
FAKE_OWN = 500
CAP = 16  # the defaults of max_peers_per_zone and max_peer_zones


def vm_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def metric_lines(text: str, name: str) -> dict[str, float]:
    pattern = re.compile(rf'^{name}\{{peer="([^"]+)"\}} (\S+)$', re.M)
    return {m[1]: float(m[2]) for m in pattern.finditer(text)}


async def metrics(session: aiohttp.ClientSession, addr: str) -> str:
    async with session.get(f"http://{addr}/metrics") as r:
        return await r.text()


def log_records(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in server.stderr_text().splitlines() if ln.startswith("{")]


async def flood(session: aiohttp.ClientSession, addr: str, forms: list[dict[str, str]]) -> None:
    """Post every form from 8 concurrent senders of one client; each must be accepted."""
    queue = list(reversed(forms))

    async def sender() -> None:
        while queue:
            assert await post(session, addr, "register", queue.pop()) == 0

    await asyncio.gather(*(sender() for _ in range(8)))


async def timed(session: aiohttp.ClientSession, method: str, url: str, form: dict[str, str]) -> float:
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"data": form} if method == "POST" else {"params": form}
    async with session.request(method, url, **kwargs) as r:
        assert orjson.loads(await r.read())["code"] == 0
    return time.perf_counter() - started


async def failed_sends(session: aiohttp.ClientSession, addr: str, at_least: float, deadline: float) -> float:
    """Poll ``/metrics`` until the node counted ``at_least`` failed sends in all; returns the count."""
    while True:
        text = await metrics(session, addr)
        failed = sum(metric_lines(text, "discoverd_replication_failed_total").values())
        if failed >= at_least:
            return failed
        assert time.monotonic() < deadline, f"only {failed:.0f} failed sends"
        await asyncio.sleep(0.05)


async def latencies(session: aiohttp.ClientSession, addr: str) -> tuple[list[float], list[float]]:
    """Seconds for 50 legitimate registers, then 50 fetches."""
    base = f"http://{addr}/discovery"
    legit = {"zone": "sh001", "env": "dev", "appid": "svc", "status": "1", "addrs": "http://10.0.0.1:80"}
    reg = [
        await timed(session, "POST", f"{base}/register", {**legit, "hostname": f"h{i}"}) for i in range(50)
    ]
    query = {"env": "dev", "appid": "svc", "status": "1"}
    fetch = [await timed(session, "GET", f"{base}/fetch", query) for _ in range(50)]
    return reg, fetch


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
async def test_a_flood_of_fake_peers_leaves_the_node_healthy() -> None:
    ports = closed_ports(FAKE_ZONES + FAKE_OWN)
    forms = [infra(f"fake{i}", f"fake{i}", ports[i]) for i in range(FAKE_ZONES)]
    forms += [infra(f"own{i}", "sh001", ports[FAKE_ZONES + i]) for i in range(FAKE_OWN)]
    args = ["--hostname", "N", "--env", "dev", "--zone", "sh001", "--log-format", "json"]
    with ServerProcess(args) as server:
        assert server.pid is not None
        rss_before = vm_rss_mb(server.pid)
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            await flood(session, server.addr, forms)
            burst = time.perf_counter() - started
            targets = metric_lines(await metrics(session, server.addr), "discoverd_replication_pending")
            # the fake peers refuse connections: every target fails; then more failures, no more lines
            deadline = time.monotonic() + 30
            failed = await failed_sends(session, server.addr, 5 * len(targets), deadline)
            lines_then = len(server.stderr_text().splitlines())
            failed = await failed_sends(session, server.addr, failed + 2 * len(targets), deadline)
            lines_now = len(server.stderr_text().splitlines())
            reg, fetch = await latencies(session, server.addr)
            rss = vm_rss_mb(server.pid)
        records = log_records(server)
        stop_started = time.perf_counter()
        assert server.stop(timeout=10) == 0
        stop = time.perf_counter() - stop_started
    peer_sets = [r for r in records if r.get("event") == "peers"]
    replication_lines = [r for r in records if r["logger"] == "discoverd.replication"]
    ignored_lines = [r for r in records if "ignored as" in r["message"]]
    print(
        f"\nflood: {len(forms)} registrations in {burst:.2f} s; {len(targets)} targets; register p50 "
        f"{statistics.median(reg) * 1e3:.2f} ms, fetch p50 {statistics.median(fetch) * 1e3:.2f} ms; "
        f"RSS {rss_before:.0f} -> {rss:.0f} MB; {lines_now} log lines ({len(replication_lines)} "
        f"replication, {len(ignored_lines)} ignored-peer); {failed:.0f} failed sends; stop {stop:.2f} s"
    )
    # replication targets: the caps (own-zone addresses, other zones, nodes per zone)
    last = peer_sets[-1]
    assert len(last["own"]) == CAP and len(last["zones"]) == CAP
    assert all(len(addrs) <= CAP for addrs in last["zones"].values())
    assert len(targets) == 2 * CAP, sorted(targets)
    assert burst < 5.0, f"{len(forms)} registrations took {burst:.2f} s"
    assert statistics.median(reg) < 0.01 and statistics.median(fetch) < 0.01
    assert max(reg + fetch) < 0.5
    assert rss - rss_before < 100, f"RSS grew from {rss_before:.0f} to {rss:.0f} MB"
    assert lines_now - lines_then <= len(targets) + 4  # at most a first "dropped" line per target
    assert len(replication_lines) <= 2 * len(targets)
    assert len(ignored_lines) <= 2
    assert lines_now <= len(forms) + 250  # one event line per registration, plus a bounded rest
    assert stop < 2.0, f"SIGTERM took {stop:.2f} s"


# -- caps and re-admission ---------------------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_caps_admit_the_first_arrivals_and_a_freed_slot_goes_to_the_next(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="discoverd.cluster")
    ports = closed_ports(7)
    config = fast_config(max_peers_per_zone=2, max_peer_zones=1)
    async with running_node(config) as node:
        for i in range(4):
            assert await post(session, node.address, "register", infra(f"o{i}", "sh001", ports[i])) == 0
        for i, zone in enumerate(("za", "zb", "zc")):
            assert await post(session, node.address, "register", infra(f"z{i}", zone, ports[4 + i])) == 0
        own = [f"127.0.0.1:{p}" for p in ports[:4]]
        assert sorted(node.replicator.own) == sorted(own[:2])
        assert list(node.replicator.remote) == ["za"]
        assert node.membership.ignored == 2 + 2
        form = {"zone": "sh001", "env": "dev", "appid": INFRA_APPID, "hostname": "o0"}
        assert await post(session, node.address, "cancel", form) == 0
        await eventually(lambda: sorted(node.replicator.own) == sorted(own[1:3]), what="o2 takes o0's slot")
        form = {"zone": "za", "env": "dev", "appid": INFRA_APPID, "hostname": "z0"}
        assert await post(session, node.address, "cancel", form) == 0
        await eventually(lambda: list(node.replicator.remote) == ["zb"], what="zb takes za's slot")
    ignored = [r for r in caplog.records if "ignored as" in r.getMessage()]
    assert len(ignored) == 1, [r.getMessage() for r in ignored]  # four ignored, one line


# -- with a peer secret ------------------------------------------------------------------------------


async def test_with_a_peer_secret_only_peer_authenticated_registrations_become_peers(
    session: aiohttp.ClientSession,
) -> None:
    fake, peer, far = (f"127.0.0.1:{p}" for p in closed_ports(3))
    async with running_node(fast_config(peer_secret=SECRET)) as node:
        a = node.address
        form = infra("fake", "sh001", int(fake.rsplit(":", 1)[1]))
        assert await post(session, a, "register", form) == 0  # a client's: stored, not a peer
        assert node.registry.get(INFRA_APPID, "dev", "sh001", "fake") is not None
        assert node.membership.ignored == 1
        form = infra("far", "sh002", int(far.rsplit(":", 1)[1]), from_zone="true")
        assert await post(session, a, "register", form) == -401  # another zone's forward needs it too
        assert await post(session, a, "register", form, SECRET) == 0
        form = infra("peer", "sh001", int(peer.rsplit(":", 1)[1]), replication="true")
        assert await post(session, a, "register", form, SECRET) == 0
        await eventually(lambda: list(node.replicator.own) == [peer], what="the peer is replicated to")
        assert node.replicator.remote["sh002"].addrs == [far]
        assert fake not in node.replicator.own and node.membership.ignored == 1


async def test_with_a_peer_secret_a_clients_infra_registration_is_not_forwarded(
    session: aiohttp.ClientSession,
) -> None:
    async with running_node(fast_config(hostname="B", peer_secret=SECRET)) as b:
        config = fast_config(hostname="A", peer_secret=SECRET, nodes=(b.address,))
        async with running_node(config) as a:
            fake = infra("fake", "sh001", closed_ports(1)[0])
            assert await post(session, a.address, "register", fake) == 0
            svc = {**fake, "appid": "svc", "hostname": "h1"}
            assert await post(session, a.address, "register", svc) == 0
            to_b = a.replicator.own[b.address]
            await eventually(
                lambda: (
                    b.registry.get("svc", "dev", "sh001", "h1") is not None
                    and not len(to_b.queue)
                    and not to_b.busy
                ),
                what="A sent everything it queued for B",
            )
            assert b.registry.get(INFRA_APPID, "dev", "sh001", "fake") is None
            assert list(b.replicator.own) == [a.address]  # A (its own registration), not the fake


# -- a dead peer's failures --------------------------------------------------------------------------


async def test_a_dead_peers_failures_are_logged_once_then_summarised(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="discoverd.replication")
    dead = f"127.0.0.1:{closed_ports(1)[0]}"
    async with running_node(fast_config(nodes=(dead,))) as node:
        for i in range(30):
            form = {"zone": "sh001", "env": "dev", "appid": "svc", "hostname": f"h{i}", "status": "1"}
            assert await post(session, node.address, "register", {**form, "addrs": "http://10.0.0.1:80"}) == 0
        await eventually(lambda: node.replicator.stats()[dead]["failed"] >= 8, what="several failed sends")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replication to")]
    assert len(lines) == 1, lines  # the first failure; the next ones are counted for the summary
    assert lines[0].startswith(f"replication to {dead} failed")


def test_peer_log_keeps_one_window_per_peer_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="discoverd.replication")
    now = [0.0]
    plog = PeerLog(lambda: now[0], interval=60.0)
    for second in range(120):
        now[0] = float(second)
        plog.failed("a:1", "a:1", "refused")
        plog.failed("zone:z2", "b:1", "timeout")
        plog.refused("a:1", -401, "unauthorized")
    plog.dropped("a:1", "register", 10)
    plog.forget("a:1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "replication to a:1 failed: refused",
        "replication to zone:z2 failed: b:1: timeout",
        "replication to a:1 refused (-401 unauthorized): check peer_secret on both nodes",
        "replication to a:1: 60 more failed send(s) in the last 60 s; last: refused",
        "replication to zone:z2: 60 more failed send(s) in the last 60 s; last: b:1: timeout",
        "replication to a:1: 60 more operation(s) refused in the last 60 s; last: -401 unauthorized "
        "(check peer_secret on both nodes)",
        "replication to a:1: dropped an operation after its last attempt (register after 10 attempts)",
        "replication to a:1: 59 more failed send(s) in the last 59 s; last: refused",
        "replication to a:1: 59 more operation(s) refused in the last 59 s; last: -401 unauthorized "
        "(check peer_secret on both nodes)",
    ]
