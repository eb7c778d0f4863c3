"""discoverd.integrations.gunicorn: a real gunicorn (2 workers, listening addresses on port 0)
whose master registers through the hooks of its gunicorn.conf.py: sync workers with a WSGI app, and
gunicorn's ASGI workers with a FastAPI app whose lifespan then only discovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from discoverd import Client, Instance, Status
from discoverd.testing import ServerProcess
from tests.integrations.support import ENV, FAST, ZONE, Child, gone, wait_until

APPID, OTHER, OTHER_ADDR = "guni.web", "guni.other", "http://10.9.3.1:8000"

CONF = """
from discoverd import ClientConfig
from discoverd.integrations.gunicorn import hooks

bind = {bind!r}
workers = 2
worker_class = {worker_class!r}
graceful_timeout = 10
control_socket_disable = True
when_ready, on_exit = hooks(
    {appid!r},
    hostname="guni-1",
    metadata={{"weight": "5"}},
    config=ClientConfig(renew_interval=0.2, request_timeout=2.0, start_timeout={start_timeout!r}),
)
"""

# The application answers its worker's pid and what the worker holds of discoverd. ``/hold`` keeps
# its worker busy until the test creates the file ``go``: a second ``/hold`` then has to be taken by
# the other worker, so the test sees both workers serve at once without timing anything.
APP = """
import json, os, pathlib, threading, time

from discoverd.integrations import gunicorn as discoverd_gunicorn

HOLD = pathlib.Path(os.environ["HOLD_DIR"])


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        (HOLD / str(os.getpid())).touch()
        deadline = time.monotonic() + 30
        while not (HOLD / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    body = json.dumps({
        "pid": os.getpid(),
        "threads": [t.name for t in threading.enumerate()],
        "registration": discoverd_gunicorn.registration() is not None,
        "marker": os.environ.get("DISCOVERD_MASTER_REGISTERED"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""

# A FastAPI app for gunicorn's ASGI workers: its lifespan gives no addresses and registers nothing
# (the master did); the handler resolves another app through the worker's own client.
ASGI_APP = f"""
import os

from fastapi import FastAPI, Request

from discoverd import ClientConfig
from discoverd.integrations import asgi as discoverd_asgi

app = FastAPI(lifespan=discoverd_asgi.lifespan(appid={APPID!r}, config=ClientConfig(start_timeout=5.0)))


@app.get("/")
async def root(request: Request):
    client = discoverd_asgi.get_client(request)
    return {{
        "pid": os.getpid(),
        "resolved": [i.addrs for i in await client.fetch({OTHER!r})],
        "registrations": len(client.registrations),
    }}
"""


@pytest.fixture
def checker(registry: ServerProcess) -> Iterator[Client]:
    with Client([registry.addr], env=ENV, zone=ZONE, hostname="guni-checker", config=FAST) as c:
        c.register(OTHER, [OTHER_ADDR])
        yield c


def start_gunicorn(
    tmp_path: Path,
    node: str,
    app: str,
    *,
    bind: list[str],
    worker_class: str = "sync",
    start_timeout: float = 5.0,
) -> Child:
    """gunicorn on ``app`` (the text of app.py); the registry and identity come from the
    environment, as the client reads them (DISCOVERY_NODES, DEPLOY_ENV, ZONE)."""
    (tmp_path / "hold").mkdir(exist_ok=True)
    (tmp_path / "app.py").write_text(app)
    conf = CONF.format(appid=APPID, bind=bind, worker_class=worker_class, start_timeout=start_timeout)
    (tmp_path / "gunicorn.conf.py").write_text(conf)
    env = {"DISCOVERY_NODES": node, "DEPLOY_ENV": ENV, "ZONE": ZONE, "HOLD_DIR": str(tmp_path / "hold")}
    return Child(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), **env},
        log=tmp_path / "gunicorn.log",
    )


@pytest.fixture
def gunicorn(registry: ServerProcess, tmp_path: Path) -> Iterator[Child]:
    child = start_gunicorn(tmp_path, registry.addr, APP, bind=["127.0.0.1:0", "127.0.0.1:0"])
    try:
        yield child
    finally:
        child.close()


def registered(checker: Client, appid: str = APPID) -> list[Instance]:
    return checker.fetch(appid, status=Status.ALL)


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


@contextmanager
def both_workers_holding(url: str, hold: Path) -> Iterator[list[dict[str, Any]]]:
    """Two concurrent ``/hold`` requests, held while the block runs (each worker has taken one:
    a sync worker serves one request at a time); the answers are in the list after the block."""
    for leftover in hold.iterdir():  # from a previous round
        leftover.unlink()
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(get(f"{url}/hold"))) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(list(hold.iterdir())) == 2, "both workers holding a request")
        yield answers
    finally:
        (hold / "go").touch()
        for t in threads:
            t.join(30)


def test_master_registers_one_instance_for_its_addresses_workers_never_touch_it(
    gunicorn: Child, checker: Client, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    wait_until(lambda: gunicorn.alive() and len(registered(checker)) == 1, "the master's registration")
    (mine,) = registered(checker)
    assert (mine.hostname, mine.metadata) == ("guni-1", {"weight": "5"})
    assert len(mine.addrs) == 2 and all(a.startswith("http://127.0.0.1:") for a in mine.addrs)
    for url in mine.addrs:  # both bound addresses serve (the master listens before registering)
        assert get(url)["pid"] != gunicorn.pid

    # both workers serve at once, and the registry holds exactly one instance
    with both_workers_holding(mine.addrs[0], hold) as answers:
        assert [i.hostname for i in registered(checker)] == ["guni-1"]
    workers = {a["pid"] for a in answers}
    assert len(workers) == 2 and gunicorn.pid not in workers
    for a in answers:  # nothing of the master's client is alive or held in a worker
        assert "discoverd-portal" not in a["threads"] and a["registration"] is False
        assert a["marker"] == str(gunicorn.pid)

    # one worker leaves gracefully (its atexit handlers run), the other is killed
    graceful, killed = sorted(workers)
    os.kill(graceful, signal.SIGTERM)
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: gone(graceful) and gone(killed), "both workers gone")
    with both_workers_holding(mine.addrs[1], hold) as replacements:  # two new workers serve
        pass
    assert len({a["pid"] for a in replacements} - workers) == 2

    # still the same registration (never cancelled and re-registered), and still renewed
    (after,) = registered(checker)
    assert after.reg_timestamp == mine.reg_timestamp
    wait_until(lambda: registered(checker)[0].renew_timestamp > after.renew_timestamp, "the master renewing")
    assert registered(checker)[0].reg_timestamp == mine.reg_timestamp

    # SIGTERM to the master: graceful stop, on_exit cancels
    assert gunicorn.signal(signal.SIGTERM) == 0, gunicorn.output()
    assert registered(checker) == []
    assert "discoverd: registered guni.web at" in gunicorn.output()
    assert "discoverd: cancelled guni.web" in gunicorn.output()


def test_asgi_workers_discover_only_under_the_registering_master(
    registry: ServerProcess, checker: Client, tmp_path: Path
) -> None:
    child = start_gunicorn(tmp_path, registry.addr, ASGI_APP, bind=["127.0.0.1:0"], worker_class="asgi")
    try:
        wait_until(lambda: child.alive() and len(registered(checker)) == 1, "the master's registration")
        wait_until(lambda: child.output().count("ASGI server listening") == 2, "both workers started")
        (mine,) = registered(checker)
        answers = [get(mine.addrs[0]) for _ in range(4)]
        assert all(a["resolved"] == [[OTHER_ADDR]] and a["registrations"] == 0 for a in answers)
        assert child.pid not in {a["pid"] for a in answers}
        assert [i.hostname for i in registered(checker)] == ["guni-1"]
        assert child.signal(signal.SIGTERM) == 0, child.output()
        assert registered(checker) == []
    finally:
        child.close()


def test_master_stops_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
    child = start_gunicorn(
        tmp_path, f"127.0.0.1:{dead.getsockname()[1]}", APP, bind=["127.0.0.1:0"], start_timeout=0.3
    )
    try:
        assert child.proc.wait(30) != 0
        assert "Unavailable" in child.output() and "Booting worker" not in child.output()
    finally:
        child.close()
        dead.close()
