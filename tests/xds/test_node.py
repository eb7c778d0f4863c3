"""The xDS server inside a node (``--xds``): started and stopped with it, on /metrics and the dashboard,
and from the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import aiohttp
import grpc
import pytest

from discoverd.server.xds import protos
from tests.helpers import eventually
from tests.xds.harness import RawAds, xds_node


async def test_streams_show_on_metrics_and_the_dashboard(http: aiohttp.ClientSession) -> None:
    async with xds_node() as (node, _), RawAds(node.xds_address) as ads:
        await ads.send(protos.LISTENER, "demo.svc", node_id="py-1", zone="sh001", env="dev")
        await ads.recv()  # the (empty: unknown app) answer: the stream is open
        dash = node.dashboard
        assert dash is not None
        await eventually(lambda: len(dash.view.xds_clients()) == 1, what="the stream on the dashboard")
        (client,) = dash.view.xds_clients()
        assert (client["node_id"], client["zone"], client["env"]) == ("py-1", "sh001", "dev")
        assert client["watching"]["listener"] == ["demo.svc"]
        async with http.get(f"http://{node.address}/metrics") as r:
            text = await r.text()
        assert "discoverd_xds_streams 1.0" in text
        assert 'discoverd_xds_pushes_total{type="listener"}' in text
        async with http.get(f"http://{node.address}/dashboard/api/state") as r:
            state = (await r.json(content_type=None))["data"]
        assert [c["node_id"] for c in state["xds"]] == ["py-1"]


def test_serve_with_xds_prints_both_addresses_and_stops_on_sigterm() -> None:
    cmd = [sys.executable, "-m", "discoverd", "serve", "--addr", "127.0.0.1:0", "--xds", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith("discoverd listening on 127.0.0.1:")
        assert second.startswith("discoverd xds listening on 127.0.0.1:")
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0 and time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_streams_beyond_max_polls_are_refused() -> None:
    async with (
        xds_node(max_polls=2) as (node, xds),
        RawAds(node.xds_address) as a,
        RawAds(node.xds_address) as b,
    ):
        for ads in (a, b):
            await ads.send(protos.LISTENER, "demo.svc", node_id="held")
            await ads.recv()
        await eventually(lambda: xds.stats().streams == 2, what="two open streams")
        async with RawAds(node.xds_address) as c:
            await c.send(protos.LISTENER, "demo.svc", node_id="third")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await c.recv()
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert xds.stats().streams == 2
