"""Structured logs: text and JSON lines, registry events, and the request id relayed into them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.request import Request, urlopen

import aiohttp
import pytest

from discoverd.core.events import Registered, Source
from discoverd.errors import ConfigError
from discoverd.model import Instance
from discoverd.server import logs
from discoverd.server.eventlog import EventLog
from discoverd.server.logs import RequestScope
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.helpers import Wire

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
Setup = Callable[..., io.StringIO]
"""``configure(log_format, log_level="info")``."""


@pytest.fixture
def configure() -> Iterator[Setup]:
    """``configure(fmt)`` points the node's logging at a fresh buffer; the root logger is restored after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    def setup(fmt: str, level: str = "info") -> io.StringIO:
        stream = io.StringIO()
        logs.configure(fast_config(log_format=fmt, log_level=level), stream=stream)
        return stream

    yield setup
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line, parsed: each must be one JSON object with the four fixed fields."""
    out = []
    for line in stream.getvalue().splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict)
        assert {"time", "level", "logger", "message"} <= doc.keys(), doc
        out.append(doc)
    return out


def events(stream: io.StringIO, kind: str) -> list[dict[str, Any]]:
    return [d for d in json_lines(stream) if d.get("event") == kind]


async def until(probe: Callable[[], Awaitable[bool] | bool], within: float = 5.0, what: str = "it") -> None:
    deadline = time.monotonic() + within
    while True:
        got = probe()
        if got if isinstance(got, bool) else await got:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def key(appid: str, hostname: str) -> dict[str, str]:
    return {"zone": "sh001", "env": "dev", "appid": appid, "hostname": hostname}


async def post(http: aiohttp.ClientSession, addr: str, path: str, data: Any, **headers: str) -> Any:
    async with http.post(f"http://{addr}/discovery/{path}", data=data, headers=headers) as r:
        return await r.json(content_type=None)


async def test_json_lines_carry_the_request_id_of_writes(
    configure: Setup, http: aiohttp.ClientSession
) -> None:
    stream = configure("json")
    async with running_node(fast_config()) as node:
        reg = {**key("a", "h1"), "status": "1", "addrs": "http://10.0.0.1:80"}
        assert (await post(http, node.address, "register", reg, **{"X-Request-Id": "req-42"}))["code"] == 0
        assert (await post(http, node.address, "register", reg))["code"] == 0  # not new: no line
        lines_before = len(json_lines(stream))
        for _ in range(20):
            assert (await post(http, node.address, "renew", key("a", "h1")))["code"] == 0
        await Wire(http, node.address).get("fetch", {"env": "dev", "appid": "a", "status": "1"})
        assert len(json_lines(stream)) == lines_before  # renews and reads log nothing
        body = await post(http, node.address, "set", {**key("a", "h1"), "status": "2"})
        assert body["code"] == 0
        assert (await post(http, node.address, "cancel", key("a", "h1"), traceparent=TRACEPARENT))[
            "code"
        ] == 0
        assert (await post(http, node.address, "cancel", key("a", "h1")))["code"] == -404  # no line
    [register] = events(stream, "register")
    assert register["request_id"] == "req-42"
    assert register["level"] == "INFO" and register["logger"] == "discoverd.events"
    assert register["message"] == "registered a/h1"
    assert (register["appid"], register["hostname"], register["zone"], register["env"]) == (
        "a",
        "h1",
        "sh001",
        "dev",
    )
    assert register["addrs"] == ["http://10.0.0.1:80"]
    assert register["replication"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", register["time"])
    [set_] = events(stream, "set")
    assert "request_id" not in set_
    assert (set_["hostname"], set_["status"]) == (["h1"], ["2"])
    [cancel] = events(stream, "cancel")
    assert cancel["request_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"  # the trace id


async def test_text_lines_are_one_line_per_event(configure: Setup, http: aiohttp.ClientSession) -> None:
    stream = configure("text")
    async with running_node(fast_config()) as node:
        reg = {**key("a", "h1"), "status": "1", "addrs": "http://10.0.0.1:80"}
        await post(http, node.address, "register", reg, **{"X-Request-Id": "abc-1"})
    logging.getLogger("discoverd.test").warning("two\nlines", extra={"why": 'a "b" c', "n": 3, "empty": ""})
    lines = stream.getvalue().splitlines()
    [line] = [x for x in lines if " discoverd.events " in x]
    pattern = (
        r"\S+Z INFO discoverd\.events registered a/h1 event=register appid=a env=dev zone=sh001 hostname=h1 "
    )
    assert re.match(pattern, line), line
    assert "addrs=http://10.0.0.1:80 " in line and line.endswith(" request_id=abc-1")
    assert lines[-1].endswith(r' WARNING discoverd.test two\nlines why="a \"b\" c" n=3 empty=""')


async def test_unusable_request_ids_are_not_relayed(configure: Setup, http: aiohttp.ClientSession) -> None:
    stream = configure("json")
    async with running_node(fast_config()) as node:
        for i, rid in enumerate(("x" * 129, "two words", "caf\u00e9")):
            reg = {**key("a", f"h{i}"), "status": "1", "addrs": "http://10.0.0.1:80"}
            assert (await post(http, node.address, "register", reg, **{"X-Request-Id": rid}))["code"] == 0
        reg = {**key("a", "t"), "status": "1", "addrs": "http://10.0.0.1:80"}
        await post(http, node.address, "register", reg, traceparent="garbage")
    registered = events(stream, "register")
    assert len(registered) == 4
    assert all("request_id" not in r for r in registered)
    assert logs.request_id.get() == ""  # nothing leaked out of a request


async def test_guard_changes_are_logged(configure: Setup, http: aiohttp.ClientSession) -> None:
    stream = configure("json")
    cfg = fast_config(evict_interval=0.1, evict_after=0.2, self_renew_interval=5.0)
    async with running_node(cfg) as node:
        wire = Wire(http, node.address)
        for i in range(3):
            await wire.register("a", f"h{i}")
        await until(lambda: bool(events(stream, "guard")), what="a guard line")
    guard = events(stream, "guard")[0]
    assert guard["protecting"] is True
    assert guard["needed_renews"] == int(8 * 0.85) and guard["renews_last_window"] == 0
    assert guard["message"].startswith("self-preservation on")


async def test_peer_up_and_lost_are_logged(configure: Setup, http: aiohttp.ClientSession) -> None:
    stream = configure("json")
    with ServerProcess(["--hostname", "A", "--env", "dev", "--zone", "sh001"]) as a:
        async with running_node(fast_config(hostname="B", nodes=(a.addr,), self_renew_interval=0.1)) as b:

            def peer(status: str) -> bool:
                return any(e["peer"] == a.addr and e["status"] == status for e in events(stream, "peer"))

            await until(lambda: peer("UP"), what="A is UP")
            a.kill()
            await Wire(http, b.address).register("svc", "h1")  # something to send to A
            await until(lambda: peer("LOST"), within=10, what="A is LOST")
    assert [e["status"] for e in events(stream, "peer")] == ["UP", "LOST"]


def test_configure_replaces_its_handler_and_checks_the_level(configure: Setup) -> None:
    configure("json")
    stream = configure("text", "warning")
    root = logging.getLogger()
    assert sum(isinstance(h, logging.StreamHandler) and h.stream is stream for h in root.handlers) == 1
    assert len([h for h in root.handlers if type(h).__module__ == logs.__name__]) == 1
    logging.getLogger("discoverd.test").info("hidden")
    logging.getLogger("discoverd.test").warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    with pytest.raises(ConfigError, match="log_level"):
        logs.configure(fast_config(log_level="loud"))


def test_serve_logs_json_lines_with_the_request_id() -> None:
    with ServerProcess(["--hostname", "J", "--env", "dev", "--log-format", "json"]) as srv:
        form = "zone=sh001&env=dev&appid=a&hostname=h1&status=1&addrs=http://10.0.0.1:80"
        req = Request(
            f"http://{srv.addr}/discovery/register", data=form.encode(), headers={"X-Request-Id": "cli-7"}
        )
        with urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["code"] == 0
        srv.stop()
        text = srv.stderr_text()
    docs = [json.loads(line) for line in text.splitlines()]
    assert any(d.get("event") == "register" and d.get("request_id") == "cli-7" for d in docs), text
    assert any(d["message"].startswith("discoverd stopped") for d in docs)


def test_serve_refuses_an_unknown_log_level() -> None:
    cmd = [sys.executable, "-m", "discoverd", "serve", "--addr", "127.0.0.1:0", "--log-level", "loud"]
    done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    assert done.returncode == 2
    assert b"log_level" in done.stderr


async def test_a_register_storm_is_summarised(configure: Setup, http: aiohttp.ClientSession) -> None:
    """Past the per-second budget, write lines are counted and written as one ``suppressed`` line;
    every register is accounted for, one by one or in a summary."""
    stream = configure("json")
    storm = 300
    async with running_node(fast_config()) as node:
        regs = [{**key("storm", f"h{i}"), "status": "1", "addrs": "http://10.0.0.1:80"} for i in range(storm)]
        answers = await asyncio.gather(*(post(http, node.address, "register", r) for r in regs))
        assert all(a["code"] == 0 for a in answers)

        def accounted() -> int:
            summarised = sum(s["counts"].get("register", 0) for s in events(stream, "suppressed"))
            return len(events(stream, "register")) + int(summarised)

        await until(lambda: accounted() == storm, within=10.0, what="every register logged or summarised")
    [*_, last] = events(stream, "suppressed")
    assert last["apps"] == ["storm"] and last["level"] == "INFO"
    assert len(events(stream, "register")) < storm


def test_the_write_budget_writes_one_summary_per_window(configure: Setup) -> None:
    """The event log's own clock and timer (injected): 150 registers in one window → 100 lines and,
    when the window ends, one summary of 50; the next window starts with lines again."""
    stream = configure("json")
    now = [100.0]
    timers: list[tuple[float, Callable[[], None]]] = []
    loop = asyncio.new_event_loop()
    try:

        def call_later(delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
            timers.append((delay, fn))
            return loop.call_later(delay, fn)

        log = EventLog(RequestScope(), call_later, clock=lambda: now[0])
        for i in range(150):
            log.on_event(Registered(_instance(f"h{i}"), Source.CLIENT, True))
        assert len(events(stream, "register")) == 100 and not events(stream, "suppressed")
        [(delay, fire)] = timers
        assert delay == 1.0
        now[0] += delay
        fire()
        [summary] = events(stream, "suppressed")
        assert summary["counts"] == {"register": 50} and summary["apps"] == ["a"]
        log.on_event(Registered(_instance("late"), Source.CLIENT, True))
        assert len(events(stream, "register")) == 101 and len(timers) == 1
    finally:
        loop.close()


def _instance(hostname: str) -> Instance:
    return Instance(zone="sh001", env="dev", appid="a", hostname=hostname, addrs=["http://10.0.0.1:80"])
