"""What a serving ``discoverd serve`` with default flags has imported: nothing it does not use.

The server runs in a child process through the CLI's ``main`` (what the console script calls), with
a thread that prints ``sys.modules`` each time the test writes a line to the child's stdin. The
default node has no peers, no Redis or gossip registry, no xDS and no httpx: none of their libraries
may be loaded. ``/metrics`` loads prometheus_client at the first scrape, not before.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from discoverd.server.http_answers import http_date

WRAPPER = """
import json, sys, threading

def report():
    for _ in sys.stdin:
        print(json.dumps(sorted(sys.modules)), flush=True)

threading.Thread(target=report, daemon=True).start()
from discoverd.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: Libraries of features the default configuration does not use (gossip, Redis, xDS, httpx).
UNUSED = ("cryptography", "msgpack", "redis", "grpc", "google.protobuf", "envoy", "httpx")
#: Loaded only when used: the peers' HTTP client, the /metrics exposition, the dashboard's version.
ON_FIRST_USE = ("aiohttp", "prometheus_client", "importlib.metadata")


class Child:
    def __init__(self, proc: subprocess.Popen[bytes], addr: str) -> None:
        self.proc = proc
        self.addr = addr

    def modules(self) -> set[str]:
        """The names in the serving process's ``sys.modules`` now."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()
        names: list[str] = json.loads(read_line(self.proc, within=10.0))
        return set(names)

    def get(self, path: str) -> int:
        host, _, port = self.addr.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()


def read_line(proc: subprocess.Popen[bytes], within: float) -> bytes:
    """One stdout line of ``proc``, failing the test after ``within`` seconds."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + within
    line = b""
    try:
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"no line from the server within {within:g} s: {line!r}"
            chunk = os.read(proc.stdout.fileno(), 1)
            assert chunk, f"the server exited: {line!r}"
            line += chunk
    finally:
        sel.close()
    return line


@pytest.fixture
def child() -> Iterator[Child]:
    """``discoverd serve --addr 127.0.0.1:0`` (default flags otherwise), ready to report its modules."""
    argv = ["serve", "--addr", "127.0.0.1:0", "--log-level", "warning"]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = read_line(proc, within=30.0).decode()
        assert first.startswith("discoverd listening on "), first
        yield Child(proc, first.rsplit(" ", 1)[1].strip())
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def loaded(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {n for n in names if n in modules or any(m.startswith(n + ".") for m in modules)}


def test_a_default_node_loads_only_what_it_uses(child: Child) -> None:
    assert child.get("/health") == 200
    assert child.get("/discovery/fetch/all") == 200  # answering a read needs nothing more
    modules = child.modules()
    assert {"httptools", "orjson"} <= modules  # the server's own (a sanity check of the report)
    assert loaded(modules, UNUSED) == set()
    assert loaded(modules, ON_FIRST_USE) == set()


def test_metrics_load_prometheus_client_at_the_first_scrape(child: Child) -> None:
    assert "prometheus_client" not in child.modules()
    assert child.get("/metrics") == 200
    after = child.modules()
    assert "prometheus_client" in after
    assert loaded(after, UNUSED) == set()


def test_the_date_header_is_what_email_utils_formats() -> None:
    """``http_date`` replaces ``email.utils.formatdate(usegmt=True)`` (not imported by the server)."""
    rng = random.Random(7)
    moments = [0, 59, 86_399, 951_782_400, 1_709_164_800, 2**31, 4_102_444_800]
    moments += [rng.randrange(0, 2**34) for _ in range(2000)]
    for t in moments:
        assert http_date(t) == formatdate(t, usegmt=True).encode(), t
