"""The client commands of the CLI against a real server process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from urllib.request import urlopen

import pytest

from discoverd.testing import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(["--hostname", "cli-node", "--env", "dev", "--zone", "sh001"]) as srv:
        yield srv


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "discoverd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fetch_hosts(server: ServerProcess, appid: str) -> list[str]:
    out = cli("fetch", appid, "--nodes", server.addr, "--env", "dev", "--status", "3")
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["hostname"] for line in out.stdout.splitlines()]


def test_register_until_interrupted_then_cancel(server: ServerProcess) -> None:
    cmd = [
        sys.executable,
        "-m",
        "discoverd",
        "register",
        "cli.svc",
        "http://10.0.0.1:80",
        "grpc://10.0.0.1:90",
    ]
    cmd += ["--metadata", '{"weight":"7"}', "--nodes", server.addr, "--env", "dev", "--zone", "sh001"]
    cmd += ["--hostname", "cli-inst"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["registered"]["hostname"] == "cli-inst"
        assert first["registered"]["addrs"] == ["http://10.0.0.1:80", "grpc://10.0.0.1:90"]
        assert fetch_hosts(server, "cli.svc") == ["cli-inst"]
        out = cli("fetch", "cli.svc", "--nodes", server.addr, "--env", "dev")
        assert json.loads(out.stdout.splitlines()[0])["metadata"] == {"weight": "7"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert json.loads(proc.stdout.readline()) == {"cancelled": "cli-inst"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    assert fetch_hosts(server, "cli.svc") == []


def test_watch_prints_changes(server: ServerProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "discoverd", "watch", "watched.svc", "--nodes", server.addr, "--env", "dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # whether the watcher is already polling or still starting, its first line is this list
        data = b"zone=sh001&env=dev&appid=watched.svc&hostname=w1&status=1&addrs=http://x:1"
        with urlopen(f"http://{server.addr}/discovery/register", data=data, timeout=10) as r:
            assert json.loads(r.read())["code"] == 0
        assert proc.stdout is not None
        assert [i["hostname"] for i in json.loads(proc.stdout.readline())] == ["w1"]
        data = b"zone=sh001&env=dev&appid=watched.svc&hostname=w2&status=1&addrs=http://x:2"
        with urlopen(f"http://{server.addr}/discovery/register", data=data, timeout=10) as r:
            assert json.loads(r.read())["code"] == 0
        assert sorted(i["hostname"] for i in json.loads(proc.stdout.readline())) == ["w1", "w2"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def test_nodes_lists_the_server(server: ServerProcess) -> None:
    out = cli("nodes", "--nodes", server.addr, "--env", "dev")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0]) == {"addr": server.addr, "status": 0, "zone": "sh001"}


def test_unreachable_nodes_fail_with_one_line() -> None:
    out = cli("fetch", "x", "--nodes", "127.0.0.1:9", "--start-timeout", "0.3")
    assert out.returncode == 1
    assert out.stderr.strip() == "discoverd: no registry node answered within 0.3s (tried 127.0.0.1:9)"
