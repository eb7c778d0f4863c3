"""A 3-node cluster of real processes: replication, repair, failures and restarts (spec §6)."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from discoverd.client.async_client import AsyncClient
from discoverd.client.config import ClientConfig
from discoverd.testing import ServerProcess
from tests.cluster.conftest import Cluster, eventually, get, hosts, post, register


def test_register_cancel_and_set_propagate(cluster: Cluster) -> None:
    assert register(cluster.a.addr, "h1", addrs="http://10.0.0.1:80,grpc://10.0.0.1:90")["code"] == 0
    eventually(lambda: all(hosts(x) == ["h1"] for x in cluster.addrs), what="register on every node")
    data = get(cluster.c.addr, "fetch", env="dev", appid="svc", status="1")["data"]
    assert data["instances"]["sh001"][0]["addrs"] == ["http://10.0.0.1:80", "grpc://10.0.0.1:90"]
    key = {"zone": "sh001", "env": "dev", "appid": "svc", "hostname": "h1"}
    assert post(cluster.b.addr, "set", {**key, "status": "2", "metadata": '{"color":"blue"}'})["code"] == 0

    def set_everywhere() -> bool:
        for x in cluster.addrs:
            ins = get(x, "fetch", env="dev", appid="svc", status="3")["data"]["instances"]["sh001"][0]
            if (ins["status"], ins["metadata"].get("color")) != (2, "blue"):
                return False
        return True

    eventually(set_everywhere, what="set on every node")
    assert post(cluster.c.addr, "cancel", key)["code"] == 0
    eventually(lambda: all(hosts(x) == [] for x in cluster.addrs), what="cancel on every node")


def test_renews_replicate_and_keep_instances_alive() -> None:
    with ExitStack() as stack:
        c = Cluster(stack, ["--evict-after", "1", "--evict-interval", "0.2", "--self-renew-interval", "0.2"])
        register(c.a.addr, "alive")
        register(c.a.addr, "silent")
        eventually(lambda: all(hosts(x) == ["alive", "silent"] for x in c.addrs), what="replicated")
        key = {"zone": "sh001", "env": "dev", "appid": "svc", "hostname": "alive"}

        def renew_and_check() -> bool:
            assert post(c.a.addr, "renew", key)["code"] == 0
            return all(hosts(x) == ["alive"] for x in c.addrs)

        eventually(
            renew_and_check, within=15, what="silent evicted everywhere, alive kept by replicated renews"
        )


def test_killed_node_loses_nothing_for_the_others(cluster: Cluster) -> None:
    names = [f"h{i:03d}" for i in range(120)]
    for i, name in enumerate(names):
        if i == 40:
            cluster.b.kill()
        assert register(cluster.a.addr if i % 2 else cluster.c.addr, name)["code"] == 0
    eventually(
        lambda: hosts(cluster.a.addr) == names and hosts(cluster.c.addr) == names, what="all on A and C"
    )


def test_restarted_empty_node_syncs_from_a_peer(cluster: Cluster) -> None:
    for i in range(30):
        register(cluster.a.addr, f"h{i:02d}")
    eventually(lambda: len(hosts(cluster.b.addr)) == 30, what="replicated to B")
    cluster.b.kill()
    register(cluster.a.addr, "while-b-was-down")
    b = cluster.restart_b("--enable-protect")
    assert hosts(b.addr) == sorted([f"h{i:02d}" for i in range(30)] + ["while-b-was-down"])


def test_diverged_copies_converge_through_renews(cluster: Cluster) -> None:
    register(cluster.a.addr, "h1", version="v1")
    eventually(lambda: all(hosts(x) == ["h1"] for x in cluster.addrs), what="replicated")
    key = {"zone": "sh001", "env": "dev", "appid": "svc", "hostname": "h1"}
    # B gets a newer copy behind the others' backs (replication=true: no fan-out)
    newer = get(cluster.b.addr, "fetch", env="dev", appid="svc", status="3")["data"]["instances"]["sh001"][0]
    register(
        cluster.b.addr,
        "h1",
        version="v2",
        replication="true",
        dirty_timestamp=str(newer["dirty_timestamp"] + 10),
    )

    def version(addr: str) -> str:
        answer = get(addr, "fetch", env="dev", appid="svc", status="3")
        if answer["code"] != 0:
            return ""
        return str(answer["data"]["instances"]["sh001"][0]["version"])

    assert version(cluster.a.addr) == "v1"
    assert post(cluster.a.addr, "renew", key)["code"] == 0  # B answers -409: A adopts v2
    eventually(lambda: version(cluster.a.addr) == "v2", what="A adopts B's newer copy")
    # C lost it behind the others' backs: the next renew from A pushes a register (-404 repair)
    assert post(cluster.c.addr, "cancel", {**key, "replication": "true"})["code"] == 0
    assert hosts(cluster.c.addr) == []
    assert post(cluster.a.addr, "renew", key)["code"] == 0
    eventually(lambda: version(cluster.c.addr) == "v2", what="C gets the copy back")


def test_client_watching_through_a_dead_node_switches_and_misses_nothing(cluster: Cluster) -> None:
    async def scenario() -> None:
        cfg = ClientConfig(request_timeout=2, start_timeout=5, backoff_base=0.05, backoff_cap=0.3)
        async with AsyncClient(
            [cluster.b.addr], env="dev", zone="sh001", hostname="cons", config=cfg
        ) as cons:
            assert sorted(cons.nodes.nodes) == sorted(cluster.addrs)
            cons.nodes._index = cons.nodes.nodes.index(cluster.b.addr)  # make sure it polls B
            watch = cons.watch("svc")
            register(cluster.a.addr, "first")
            assert [i.hostname for i in await asyncio.wait_for(anext(watch), 5)] == ["first"]
            cluster.b.kill()
            register(cluster.c.addr, "second")
            got = await asyncio.wait_for(anext(watch), 10)
            assert sorted(i.hostname for i in got) == ["first", "second"]
            assert cons.nodes.current != cluster.b.addr

    asyncio.run(scenario())


def test_two_zones_fan_out_one_way() -> None:
    with ExitStack() as stack:
        far = stack.enter_context(ServerProcess(["--hostname", "Z2", "--env", "dev", "--zone", "sh002"]))
        near = stack.enter_context(
            ServerProcess(
                ["--hostname", "Z1", "--env", "dev", "--zone", "sh001", "--zones", f"sh002={far.addr}"]
            )
        )
        register(near.addr, "h1")
        eventually(lambda: hosts(far.addr) == ["h1"], what="cross-zone replication")
        # the far zone got it with from_zone=true: it must not send it back (nor loop)
        assert register(far.addr, "h2", zone="sh002")["code"] == 0
        eventually(lambda: hosts(near.addr) == ["h1", "h2"], what="far zone replicates its own writes")
        infra = get(near.addr, "fetch", env="dev", appid="infra.discovery", status="1")["data"]["instances"]
        assert sorted(infra) == ["sh001", "sh002"]
        assert [n["addr"] for n in get(near.addr, "nodes")["data"]] == [near.addr]


def test_metrics_show_the_queue_of_a_dead_peer(cluster: Cluster) -> None:
    from urllib.request import urlopen

    def value(name: str, peer: str) -> float:
        with urlopen(f"http://{cluster.a.addr}/metrics", timeout=5) as r:
            text = r.read().decode()
        line = next(x for x in text.splitlines() if x.startswith(f'{name}{{peer="{peer}"}}'))
        return float(line.rsplit(" ", 1)[1])

    def metric(name: str, peer: str) -> int:
        return int(value(name, peer))

    dead = cluster.b.addr
    cluster.b.kill()
    for i in range(50):
        register(cluster.a.addr, f"q{i:02d}")
    eventually(lambda: metric("discoverd_replication_failed_total", dead) > 0, what="A notices B is gone")
    assert metric("discoverd_replication_pending", dead) >= 40  # queued, waiting for B
    eventually(lambda: metric("discoverd_replication_pending", cluster.c.addr) == 0, what="C is served")
    assert metric("discoverd_replication_sent_total", cluster.c.addr) >= 50
    lag = value("discoverd_replication_lag_seconds", dead)  # B's oldest change keeps waiting
    eventually(lambda: value("discoverd_replication_lag_seconds", dead) > lag, what="B's lag grows")
    assert value("discoverd_replication_lag_seconds", cluster.c.addr) == 0.0
