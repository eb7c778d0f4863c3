"""``/metrics``: values follow the registry, the counters, polls, eviction, replication and snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from discoverd.server.latency import LATENCY_BUCKETS, LatencyTable
from discoverd.server.metrics import RegistryCounts, latency_family
from discoverd.server.runner import Node
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.helpers import Wire

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
RENEW = "/discovery/renew"


async def scrape(http: aiohttp.ClientSession, addr: str, accept: str = "") -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus_client's own parser (which must accept it)."""
    headers = {"Accept": accept} if accept else {}
    async with http.get(f"http://{addr}/metrics", headers=headers) as r:
        assert r.status == 200
        text = await r.text()
    if accept:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
        return {}
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def until(probe: Callable[[], Awaitable[bool]], within: float = 5.0, what: str = "condition") -> None:
    """Await ``probe`` until it holds; fails the test after ``within`` seconds (no blind sleeps)."""
    deadline = time.monotonic() + within
    while not await probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def ident(appid: str, hostname: str, env: str = "dev", zone: str = "sh001") -> dict[str, str]:
    return {"zone": zone, "env": env, "appid": appid, "hostname": hostname}


async def test_output_parses_and_follows_registers_renews_cancels_sets(
    node: Node, http: aiohttp.ClientSession
) -> None:
    wire = Wire(http, node.address)
    before = await scrape(http, node.address)
    assert value(before, "discoverd_registers_total") == 0  # the node's own registration is no request
    assert value(before, "discoverd_instances") == 1
    await wire.register("a", "h1")
    await wire.register("a", "h2", zone="sh002")
    await wire.register("b", "h1", env="prod")
    await wire.register("b", "h1", env="prod")  # replaced, not added
    await wire.post("renew", ident("a", "h1"))
    await wire.post("renew", ident("a", "h1"))
    body, _ = await wire.post("renew", ident("a", "nobody"))
    assert body["code"] == -404
    body, _ = await wire.post("set", {**ident("a", "h1"), "status": "2"})
    assert body["code"] == 0
    body, _ = await wire.post("cancel", ident("a", "h2", zone="sh002"))
    assert body["code"] == 0
    body, _ = await wire.post("cancel", ident("a", "h2", zone="sh002"))
    assert body["code"] == -404  # nothing removed: not counted
    m = await scrape(http, node.address)
    assert value(m, "discoverd_registers_total") == 4
    assert value(m, "discoverd_renews_total") == 3
    assert value(m, "discoverd_sets_total") == 1
    assert value(m, "discoverd_cancels_total") == 1
    assert value(m, "discoverd_instances") == 3  # a/h1, b/h1 (prod), infra.discovery
    assert value(m, "discoverd_apps") == 3
    assert value(m, "discoverd_instances_by_zone", env="dev", zone="sh001", status="waiting") == 1
    assert value(m, "discoverd_instances_by_zone", env="dev", zone="sh001", status="up") == 1
    assert value(m, "discoverd_instances_by_zone", env="prod", zone="sh001", status="up") == 1
    assert value(m, "discoverd_instances_by_zone", env="dev", zone="sh002", status="up") is None
    assert value(m, "discoverd_apps_by_zone", env="dev", zone="sh001") == 2
    assert value(m, "discoverd_apps_by_env", env="prod") == 1
    assert value(m, "discoverd_guard_expected_renews") == 2 * 4 - 2  # +2 per new instance, -2 per cancel
    assert value(m, "discoverd_guard_renews_this_window") == 2
    assert value(m, "discoverd_node_info", region="sh", zone="sh001", env="dev", hostname="node-test",
                 advertise=node.address) == 1  # fmt: skip
    assert value(m, "discoverd_snapshot_age_seconds") is None  # no --data-dir


async def test_openmetrics_is_served_when_asked(node: Node, http: aiohttp.ClientSession) -> None:
    await scrape(http, node.address, accept="application/openmetrics-text; version=1.0.0")
    async with http.post(f"http://{node.address}/metrics") as r:
        assert r.status == 405


async def test_polls_answered_not_modified_refused_and_held(http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(poll_hold=5.0, max_polls=1)) as node:
        wire = Wire(http, node.address)
        await wire.register("a", "h1")
        q = [("env", "dev"), ("hostname", "c"), ("appid", "a"), ("latest_timestamp", "0")]
        body, _ = await wire.get("polls", q)
        assert body["code"] == 0
        latest = str(body["data"]["a"]["latest_timestamp"])
        q[-1] = ("latest_timestamp", latest)
        m = await scrape(http, node.address)
        assert value(m, "discoverd_poll_answers_total") == 1
        assert value(m, "discoverd_held_polls") == 0
        assert value(m, "discoverd_held_polls_limit") == 1

        held = asyncio.ensure_future(wire.get("polls", q))

        async def is_held() -> bool:
            return value(await scrape(http, node.address), "discoverd_held_polls") == 1

        await until(is_held, what="the poll to be held")
        body, _ = await wire.get("polls", q)
        assert body["code"] == -503  # max_polls=1
        assert value(await scrape(http, node.address), "discoverd_polls_refused_total") == 1
        await wire.register("a", "h2")
        body, _ = await held
        assert body["code"] == 0
        m = await scrape(http, node.address)
        assert value(m, "discoverd_poll_answers_total") == 2
        assert value(m, "discoverd_held_polls") == 0
        # a poll that expires: the hold is cut short by the client's timeout header
        fresh = (await wire.get("polls", [*q[:3], ("latest_timestamp", "0")]))[0]["data"]["a"][
            "latest_timestamp"
        ]
        body, _ = await wire.get(
            "polls", [*q[:3], ("latest_timestamp", str(fresh))], {"x1-bmspy-timeout": "300"}
        )
        assert body["code"] == -304
        m = await scrape(http, node.address)
        assert value(m, "discoverd_poll_not_modified_total") == 1
        assert value(m, "discoverd_poll_answers_total") == 3


async def test_evictions_are_counted(http: aiohttp.ClientSession) -> None:
    cfg = fast_config(evict_interval=0.1, evict_after=0.3, protect_threshold=0.01, self_renew_interval=0.05)
    async with running_node(cfg) as node:
        wire = Wire(http, node.address)
        await wire.register("a", "silent1")
        await wire.register("a", "silent2")
        assert value(await scrape(http, node.address), "discoverd_evictions_total") == 0

        async def evicted() -> bool:
            m = await scrape(http, node.address)
            return value(m, "discoverd_evictions_total") == 2 and value(m, "discoverd_instances") == 1

        await until(evicted, what="both silent instances evicted")
        m = await scrape(http, node.address)
        assert value(m, "discoverd_instances_by_zone", env="dev", zone="sh001", status="up") == 1
        assert value(m, "discoverd_guard_protecting") == 0
        assert value(m, "discoverd_apps_by_zone", env="dev", zone="sh001") == 1


async def test_guard_protecting_is_reported(http: aiohttp.ClientSession) -> None:
    cfg = fast_config(evict_interval=0.1, evict_after=0.2, self_renew_interval=5.0)
    async with running_node(cfg) as node:
        wire = Wire(http, node.address)
        for i in range(5):
            await wire.register("a", f"h{i}")

        async def protecting() -> bool:
            return value(await scrape(http, node.address), "discoverd_guard_protecting") == 1

        await until(protecting, what="self-preservation")
        m = await scrape(http, node.address)
        assert value(m, "discoverd_guard_needed_renews") == int(12 * 0.85)
        assert value(m, "discoverd_guard_threshold") == 0.85
        assert value(m, "discoverd_guard_renews_last_window") == 0
        assert value(m, "discoverd_evictions_total") == 0


async def test_latency_histogram_counts_requests_per_endpoint(
    node: Node, http: aiohttp.ClientSession
) -> None:
    wire = Wire(http, node.address)
    await wire.register("a", "h1")
    before = await scrape(http, node.address)
    for _ in range(7):
        await wire.post("renew", ident("a", "h1"))
    for _ in range(3):
        await wire.get("fetch", {"env": "dev", "appid": "a", "status": "1"})
    async with http.get(f"http://{node.address}/discovery/nothing-here") as r:
        assert r.status == 404
    m = await scrape(http, node.address)

    def count(samples: Samples, endpoint: str) -> float:
        got = value(samples, "discoverd_request_duration_seconds_count", endpoint=endpoint)
        assert got is not None
        return got

    assert count(m, RENEW) - count(before, RENEW) == 7
    assert count(m, "/discovery/fetch") - count(before, "/discovery/fetch") == 3
    inf = value(m, "discoverd_request_duration_seconds_bucket", endpoint=RENEW, le="+Inf")
    assert inf == count(m, RENEW)
    cumulative = [
        value(m, "discoverd_request_duration_seconds_bucket", endpoint=RENEW, le=repr(b))
        for b in LATENCY_BUCKETS
    ]
    assert all(c is not None for c in cumulative)
    assert cumulative == sorted(cumulative)  # type: ignore[type-var]
    assert (value(m, "discoverd_request_duration_seconds_sum", endpoint=RENEW) or 0) > 0
    endpoints = {dict(labels).get("endpoint") for name, labels in m if name.startswith("discoverd_request_")}
    assert endpoints == set(node.routes.paths(protocol=True))  # bounded: the protocol paths only


def test_latency_table_ignores_unknown_paths_and_buckets_edges() -> None:
    table = LatencyTable({RENEW: None}.keys(), bounds=(0.001, 0.01))
    table.observe("/evil/" + "x" * 100, 0.5)
    table.observe(RENEW, 0.001)  # on the bound: le="0.001"
    table.observe(RENEW, 0.002)
    table.observe(RENEW, 5.0)
    fam = latency_family(table)
    got = {(s.name, s.labels.get("le")): s.value for s in fam.samples}
    assert {s.labels["endpoint"] for s in fam.samples} == {RENEW}
    assert got[("discoverd_request_duration_seconds_bucket", "0.001")] == 1
    assert got[("discoverd_request_duration_seconds_bucket", "0.01")] == 2
    assert got[("discoverd_request_duration_seconds_bucket", "+Inf")] == 3
    assert got[("discoverd_request_duration_seconds_count", None)] == 3
    assert got[("discoverd_request_duration_seconds_sum", None)] == 5.003


async def test_snapshot_age_with_a_data_dir(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(data_dir=str(tmp_path), snapshot_interval=0.1)) as node:

        async def saved() -> bool:
            m = await scrape(http, node.address)
            return value(m, "discoverd_snapshot_unsaved_changes") == 0 and (
                value(m, "discoverd_snapshot_age_seconds") is not None
            )

        await until(saved, what="the first snapshot")
        m = await scrape(http, node.address)
        age = value(m, "discoverd_snapshot_age_seconds")
        assert age is not None and 0 <= age < 5
        first = value(m, "discoverd_snapshot_last_save_timestamp_seconds")
        assert first is not None and abs(first - time.time()) < 5
        await Wire(http, node.address).register("a", "h1")

        async def saved_again() -> bool:
            m = await scrape(http, node.address)
            last = value(m, "discoverd_snapshot_last_save_timestamp_seconds") or 0
            return last > (first or 0) and value(m, "discoverd_snapshot_unsaved_changes") == 0

        await until(saved_again, what="a snapshot with the new instance")


async def test_replication_metrics_of_a_two_node_cluster(http: aiohttp.ClientSession) -> None:
    with ServerProcess(["--hostname", "A", "--env", "dev", "--zone", "sh001"]) as a:
        cfg = fast_config(hostname="B", nodes=(a.addr,), self_renew_interval=0.1)
        async with running_node(cfg) as b:
            wire = Wire(http, b.address)
            for i in range(3):
                assert (await wire.register("svc", f"h{i}"))["code"] == 0

            async def delivered() -> bool:
                m = await scrape(http, b.address)
                return (value(m, "discoverd_replication_sent_total", peer=a.addr) or 0) >= 4 and value(
                    m, "discoverd_replication_pending", peer=a.addr
                ) == 0

            await until(delivered, what="B's writes sent to A")
            m = await scrape(http, b.address)
            assert value(m, "discoverd_replication_peer_up", peer=a.addr) == 1
            assert value(m, "discoverd_replication_failed_total", peer=a.addr) == 0
            assert value(m, "discoverd_replication_dropped_total", peer=a.addr) == 0
            a.kill()
            for i in range(20):
                assert (await wire.register("svc", f"q{i}"))["code"] == 0

            async def stuck() -> bool:
                m = await scrape(http, b.address)
                return (value(m, "discoverd_replication_failed_total", peer=a.addr) or 0) > 0

            await until(stuck, what="B noticing A is gone")
            m = await scrape(http, b.address)
            assert (value(m, "discoverd_replication_pending", peer=a.addr) or 0) >= 10
            assert value(m, "discoverd_replication_peer_up", peer=a.addr) == 0


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (n, labels), _ in samples.items() if n == name}


async def test_client_chosen_env_and_zone_labels_are_capped(http: aiohttp.ClientSession) -> None:
    async with running_node(fast_config(max_label_values=3)) as node:
        wire = Wire(http, node.address)
        for i in range(4):  # "big" has 4 instances in sh001: kept; the invented ones fold into "other"
            await wire.register("a", f"big-{i}", env="big")
        for i in range(40):
            await wire.register("a", "h1", env=f"env{i:02d}", zone=f"zone{i:02d}")
        m = await scrape(http, node.address)
    envs = label_values(m, "discoverd_instances_by_zone", "env")
    zones = label_values(m, "discoverd_instances_by_zone", "zone")
    assert len(envs) <= 4 and len(zones) <= 4  # 3 named values + "other"
    assert "big" in envs and "sh001" in zones and "other" in envs and "other" in zones
    total = sum(v for (n, _), v in m.items() if n == "discoverd_instances_by_zone")
    assert total == value(m, "discoverd_instances") == 45  # nothing lost by folding (+ infra.discovery)
    apps = sum(v for (n, _), v in m.items() if n == "discoverd_apps_by_env")
    assert apps == value(m, "discoverd_apps") and len(label_values(m, "discoverd_apps_by_env", "env")) <= 4


def test_folding_keeps_the_values_with_the_most_instances() -> None:
    counts = RegistryCounts(
        instances={("a", "z1", "up"): 5, ("b", "z2", "up"): 3, ("c", "z3", "up"): 1, ("c", "z1", "up"): 1},
        apps_by_zone={("a", "z1"): 1, ("b", "z2"): 1, ("c", "z3"): 1, ("c", "z1"): 1},
        apps_by_env={"a": 1, "b": 1, "c": 2},
    )
    folded = counts.folded(2)
    assert folded.instances == {("a", "z1", "up"): 5, ("b", "z2", "up"): 3, ("other", "other", "up"): 1,
                                ("other", "z1", "up"): 1}  # fmt: skip
    assert folded.apps_by_env == {"a": 1, "b": 1, "other": 2}
    assert counts.folded(10) == counts
