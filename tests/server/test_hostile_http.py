"""Hostile clients against the HTTP front, over real sockets on 127.0.0.1.

Each test runs the attack while legitimate requests keep being answered, and checks that the hostile
connections are closed within a deadline and that the server's memory stays bounded (``VmRSS`` of a
``discoverd serve`` child process):

* a client that pipelines requests and never reads their answers (write flow control, send deadline);
* clients that send their headers or body a byte at a time, or nothing (header and body deadlines);
* many connections (the global cap; the per-address cap only under pressure; the fd limit raised);
* running out of file descriptors (accept errors reported once, service resumes);
* HTTP details: HEAD answers without a body, one answer to ``Upgrade``/``CONNECT``, ``100 Continue``
  never ahead of earlier answers, the pipeline cap behind a held request, idle keep-alive reaping
  (held requests exempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import select
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson
import pytest

from discoverd.server.http import SLICE
from discoverd.testing import ServerProcess, fast_config, running_node
from tests.cluster.conftest import get, register
from tests.helpers import eventually

IDENTITY = ["--hostname", "hostile", "--env", "dev", "--zone", "sh001"]
MIB = 1024 * 1024


# -- helpers ------------------------------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_conn(addr: str, source: str = "127.0.0.1", rcvbuf: int = 0) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    return sock


def split_answers(data: bytes, methods: Sequence[str] = ()) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP answers in ``data``: (status, headers, body); ``methods[i]`` HEAD means no body."""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"truncated answer: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        status = int(lines[0].split()[1])
        method = methods[len(out)] if len(out) < len(methods) else "GET"
        length = 0 if method == "HEAD" or status == 100 else int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def exchange(addr: str, raw: bytes, *, source: str = "127.0.0.1", within: float = 5.0) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it."""
    with open_conn(addr, source) as sock:
        sock.settimeout(within)
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def served(addr: str, source: str = "127.0.0.1") -> bool:
    """A legitimate request on a new connection is answered 200."""
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    try:
        return exchange(addr, raw, source=source).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def fetch_ok(addr: str, appid: str = "svc") -> bool:
    return bool(get(addr, "fetch", env="dev", appid=appid, status="1")["code"] == 0)


def closed_by_server(sock: socket.socket) -> bool:
    """Without blocking: True once the server closed ``sock`` (EOF or reset), data read is dropped."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def wait_closed(socks: Sequence[socket.socket], within: float, tick: Callable[[], None]) -> float:
    """Poll until every socket was closed by the server, calling ``tick`` in between; returns the
    seconds it took (fails after ``within``)."""
    started = time.monotonic()
    left = set(socks)
    while left:
        assert time.monotonic() - started < within, f"{len(left)} connection(s) still open after {within} s"
        left = {s for s in left if not closed_by_server(s)}
        tick()
        select.select(list(left), [], [], 0.05)
    return time.monotonic() - started


def eventually_sync(check: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def fd_soft_limit(soft: int) -> Iterator[None]:
    """Lower this process's soft fd limit (children inherit it) for the duration of the block."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


class LimitedServer:
    """``discoverd serve`` started under ``RLIMIT_NOFILE`` = (``fds``, ``fds``): ServerProcess cannot
    set limits the child may not raise. Stopped by PID."""

    def __init__(self, args: Sequence[str], fds: int) -> None:
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop
        self._final = ""
        limit = (fds, fds)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "discoverd", "serve", "--addr", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=self._err,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit),  # noqa: PLW1509
        )
        try:
            assert self.proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(self.proc.stdout, selectors.EVENT_READ)
                assert sel.select(15), "the server did not start"
            line = self.proc.stdout.readline().decode()
            assert line.startswith("discoverd listening on "), line + self.stderr()
        except BaseException:
            self.stop()
            raise
        self.addr = line.split()[-1]

    def stderr(self) -> str:
        if self._err.closed:
            return self._final
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL after 10 s); returns the exit status; keeps what stderr held."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self._final = self.stderr()
            self._err.close()


# -- one client that never reads ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hardened() -> Iterator[ServerProcess]:
    """A server with 1 s deadlines, shared by the tests of this module that need only that."""
    flags = ["--header-timeout", "1", "--body-timeout", "1", "--send-timeout", "1"]
    with ServerProcess([*IDENTITY, *flags]) as srv:
        yield srv


def test_a_client_that_never_reads_its_answers_is_cut_off_with_bounded_memory(
    hardened: ServerProcess,
) -> None:
    addr, pid = hardened.addr, hardened.pid
    assert pid is not None
    meta = orjson.dumps({"blob": "x" * 400}).decode()
    for i in range(60):
        assert register(addr, f"big-{i:02d}", appid="big", metadata=meta)["code"] == 0
    one = len(
        exchange(
            addr, b"GET /discovery/fetch?env=dev&appid=big&status=1 HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
    )
    assert one > 28_000  # a ~29 KB answer, as in the measured attack
    base = rss(pid)
    hostile = open_conn(addr, rcvbuf=4096)
    hostile.setblocking(False)
    request = b"GET /discovery/fetch?env=dev&appid=big&status=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    burst, sent, peak, reset = request * 100, 0, base, False
    started = last_check = time.monotonic()
    while time.monotonic() - started < 15 and not reset:
        try:
            sent += hostile.send(burst)
        except BlockingIOError:
            select.select([], [hostile], [], 0.05)  # the server stopped reading: wait for its verdict
        except (ConnectionResetError, BrokenPipeError):
            reset = True
        peak = max(peak, rss(pid))
        assert peak - base < 60 * MIB, f"server RSS grew by {(peak - base) / MIB:.0f} MiB"
        if time.monotonic() - last_check > 0.5:
            assert fetch_ok(addr, "big")  # others are served meanwhile
            last_check = time.monotonic()
    elapsed = time.monotonic() - started
    hostile.close()
    assert reset, f"the connection was not closed after {elapsed:.1f} s ({sent} bytes of requests sent)"
    assert elapsed < 10
    assert fetch_ok(addr, "big")


def send_deadline_closes(addr: str) -> int:
    """``discoverd_http_connections_expired_total{deadline="send"}`` from ``/metrics``."""
    text = exchange(addr, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").decode()
    found = re.search(r'^discoverd_http_connections_expired_total\{deadline="send"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def test_pipelined_polls_never_read_are_cut_off_while_changes_wake_them(hardened: ServerProcess) -> None:
    """20 connections pipeline 300 polls each of a ~29 KB app and never read; changes keep waking them."""
    addr, pid = hardened.addr, hardened.pid
    assert pid is not None
    meta = orjson.dumps({"blob": "x" * 400}).decode()
    for i in range(60):
        assert register(addr, f"pb-{i:02d}", appid="polled", metadata=meta)["code"] == 0
    base, before = rss(pid), send_deadline_closes(addr)
    poll = (
        b"GET /discovery/polls?env=dev&hostname=c&appid=polled&latest_timestamp=0 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    hostile = [open_conn(addr, rcvbuf=4096) for _ in range(20)]
    for sock in hostile:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.send(poll * 300)
    started, peak = time.monotonic(), base
    while time.monotonic() - started < 15 and send_deadline_closes(addr) - before < len(hostile):
        assert register(addr, f"churn-{time.monotonic_ns()}", appid="polled")["code"] == 0  # wake them all
        peak = max(peak, rss(pid))
        assert peak - base < 80 * MIB, f"server RSS grew by {(peak - base) / MIB:.0f} MiB"
        assert fetch_ok(addr, "polled")  # others are served meanwhile
    elapsed = time.monotonic() - started
    for sock in hostile:
        sock.close()
    assert send_deadline_closes(addr) - before >= len(hostile), f"still open after {elapsed:.1f} s"
    assert elapsed < 10
    assert fetch_ok(addr, "polled")


# -- slow clients -----------------------------------------------------------------------------------


def test_slow_headers_slow_bodies_and_silent_connections_are_closed_at_their_deadlines(
    hardened: ServerProcess,
) -> None:
    addr, pid = hardened.addr, hardened.pid
    assert pid is not None
    base = rss(pid)
    header = b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    body_head = b"POST /discovery/renew HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
    body_head += b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    opened = time.monotonic()
    silent = [open_conn(addr) for _ in range(10)]
    slow_headers = [open_conn(addr) for _ in range(20)]
    slow_bodies = [open_conn(addr) for _ in range(20)]
    for s in slow_bodies:
        s.sendall(body_head)
    sent = 0
    checks = 0

    def trickle() -> None:
        nonlocal sent, checks
        for s in slow_headers:  # one more byte each, never finishing the headers
            with contextlib.suppress(OSError):
                s.send(header[sent % len(header) : sent % len(header) + 1])
        for s in slow_bodies:
            with contextlib.suppress(OSError):
                s.send(b"a")
        sent += 1
        checks += 1
        if checks % 5 == 0:
            assert served(addr)
        assert rss(pid) - base < 30 * MIB

    wait_closed([*silent, *slow_headers, *slow_bodies], within=6.0, tick=trickle)
    assert time.monotonic() - opened >= 1.0  # no deadline is enforced early (1 s each here)
    for s in (*silent, *slow_headers, *slow_bodies):
        s.close()
    assert served(addr)


async def test_idle_keep_alive_connections_are_reaped_but_held_requests_are_not() -> None:
    async with running_node(fast_config(idle_timeout=0.5, poll_hold=30.0)) as node:
        host, port = node.address.rsplit(":", 1)
        idle_r, idle_w = await asyncio.open_connection(host, int(port))
        idle_w.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answers(idle_r, ["GET"]))[0][2] == b"ok"
        idle_since = time.monotonic()
        _, held_w = await asyncio.open_connection(host, int(port))
        held_w.write(POLL)
        await eventually(lambda: node.polls.waiters.count == 1, what="the poll held")
        assert await asyncio.wait_for(idle_r.read(), 5) == b""  # closed by the server
        assert time.monotonic() - idle_since >= 0.45
        assert node.polls.waiters.count == 1 and len(node.http.connections) == 1  # the held one stays
        idle_w.close()
        held_w.close()


# -- many connections -----------------------------------------------------------------------------


def hold(addr: str, source: str) -> socket.socket | None:
    """A keep-alive connection with one answered request, or None when the server closed it."""
    sock = open_conn(addr, source)
    sock.settimeout(5)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    except OSError:
        answer = b""
    if answer.startswith(b"HTTP/1.1 200"):
        return sock
    sock.close()
    return None


def test_connection_caps_apply_globally_and_per_address_only_under_pressure() -> None:
    flags = [*IDENTITY, "--max-connections", "40", "--max-conns-per-host", "10"]
    # started with a soft fd limit of 256: the server raises its own to the hard limit
    with fd_soft_limit(256), ServerProcess(flags) as srv:
        assert srv.pid is not None
        limits = Path(f"/proc/{srv.pid}/limits").read_text()
        soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
        assert soft == hard and int(soft) > 256
        assert f"file descriptors: soft limit {soft} (hard {hard}); max_connections 40" in srv.stderr_text()
        # no pressure below 30 open (75 % of 40): one address may hold 30, three times its cap of 10
        mine = [hold(srv.addr, "127.0.0.1") for _ in range(30)]
        assert all(mine)
        assert hold(srv.addr, "127.0.0.1") is None  # under pressure now, and over its cap
        theirs = [hold(srv.addr, "127.0.0.2") for _ in range(10)]
        assert all(theirs)  # another address is still served up to its own cap
        assert hold(srv.addr, "127.0.0.2") is None
        assert hold(srv.addr, "127.0.0.3") is None  # 40 open: nobody gets in
        for s in mine[:5]:
            assert s is not None
            s.close()
        eventually_sync(lambda: served(srv.addr, "127.0.0.3"), what="a freed slot")
        for s in (*mine[5:], *theirs):
            assert s is not None
            s.close()
        srv.stop()
        err = srv.stderr_text()
    refused = int(re.search(r"connections refused (\d+),", err).group(1))  # type: ignore[union-attr]
    assert refused >= 3 and err.count("connections refused at accept") == 1, err  # one line for all


def test_running_out_of_file_descriptors_is_reported_once_and_service_resumes() -> None:
    srv = LimitedServer([*IDENTITY, "--max-connections", "1000"], fds=64)
    hogs: list[socket.socket] = []
    try:
        assert "max_connections 1000 is above the" in srv.stderr()
        hogs = [open_conn(srv.addr) for _ in range(80)]  # more than the server has descriptors for
        eventually_sync(lambda: "accept failed" in srv.stderr(), what="the accept error report")
        for s in hogs:
            s.close()
        eventually_sync(lambda: served(srv.addr), what="service after the descriptors were freed")
    finally:
        for s in hogs:
            s.close()
        status = srv.stop()
    err = srv.stderr()
    assert status == 0, err
    assert err.count("accept failed") == 1, err  # one line per 10 s at most (test_limits.py)
    assert int(re.search(r"accept errors (\d+)", err).group(1)) >= 1, err  # type: ignore[union-attr]


# -- HTTP details (a node in this process) --------------------------------------------------------------


def complete(data: bytes, methods: Sequence[str]) -> list[tuple[int, dict[str, str], bytes]] | None:
    """Every answer in ``data`` once it holds at least as many whole answers as ``methods``, else None."""
    try:
        answers = split_answers(data, methods)
    except AssertionError:
        return None
    whole = [
        len(body) == (0 if m == "HEAD" or status == 100 else int(h.get("content-length", "0")))
        for (status, h, body), m in zip(answers, methods, strict=False)
    ]
    return answers if len(whole) == len(methods) and all(whole) else None


async def read_answers(
    reader: asyncio.StreamReader, methods: Sequence[str]
) -> list[tuple[int, dict[str, str], bytes]]:
    """Read the answers of ``methods`` (pipelined, in order) from ``reader``."""
    data = b""
    while (answers := complete(data, methods)) is None:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, f"closed after {data[-300:]!r}"
        data += chunk
    return answers


async def until_closed(
    addr: str, raw: bytes, methods: Sequence[str]
) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``raw`` on a new connection; the answers the server writes before it closes it."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return split_answers(data, methods)


async def test_head_answers_carry_headers_but_no_body_and_pipelining_stays_in_step() -> None:
    async with running_node(fast_config()) as node:
        raw = b"HEAD /discovery/nodes HTTP/1.1\r\nHost: x\r\n\r\n"
        raw += b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\n\r\n"
        raw += b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nPOST /discovery/fetch HTTP/1.1\r\nHost: x\r\n\r\n"
        raw += b"HEAD /discovery/renew HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answers = await until_closed(node.address, raw, ["HEAD", "GET", "HEAD", "POST", "HEAD"])
        (h1, hh, hb), (g1, _, gb), (h2, h2h, h2b), (p, _, _), (h3, _, h3b) = answers
        assert (h1, g1, h2, p, h3) == (200, 200, 200, 405, 405)
        assert hb == h2b == h3b == b""  # no body on HEAD, whatever the handler answered
        assert int(hh["content-length"]) == len(gb) > 0 and orjson.loads(gb)["code"] == 0
        assert h2h["content-length"] == "2"  # "ok"


async def test_upgrade_and_connect_get_one_answer_in_order() -> None:
    async with running_node(fast_config()) as node:
        upgrade = (
            b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        assert [a[0] for a in await until_closed(node.address, upgrade, ["GET"])] == [400]
        connect = b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
        assert [a[0] for a in await until_closed(node.address, connect, ["CONNECT"])] == [405]
        first = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        answers = await until_closed(node.address, first + upgrade, ["GET", "GET"])
        assert [a[0] for a in answers] == [200, 400] and answers[0][2] == b"ok"


POLL = b"GET /discovery/polls?env=dev&hostname=c&appid=woken&latest_timestamp=0 HTTP/1.1\r\nHost: x\r\n\r\n"
FORM = b"zone=sh001&env=dev&appid=woken&hostname=h1&status=1&addrs=http%3A%2F%2F10.0.0.1%3A80"
REGISTER = (
    b"POST /discovery/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: %d\r\n" % len(FORM)
)


async def test_100_continue_is_not_written_ahead_of_earlier_answers() -> None:
    async with running_node(fast_config(poll_hold=30.0)) as node:
        host, port = node.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(POLL + REGISTER + b"Expect: 100-continue\r\n\r\n")  # a held poll, then a POST
        await eventually(lambda: node.polls.waiters.count == 1, what="the poll held")
        writer.write(FORM)  # the client stops waiting for 100 Continue, as clients do
        other = FORM.replace(b"h1", b"h9")
        await until_closed(node.address, REGISTER + b"Connection: close\r\n\r\n" + other, ["POST"])
        answers = await read_answers(reader, ["GET", "POST"])  # woken by the other register
        writer.close()
        assert [a[0] for a in answers] == [200, 200]
        assert orjson.loads(answers[0][2])["code"] == 0 and orjson.loads(answers[1][2])["code"] == 0
        # at the head of a connection, 100 Continue is written at once, then the answer
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(REGISTER.replace(b"h1", b"h2") + b"Expect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(FORM.replace(b"h1", b"h2"))
        assert [a[0] for a in await read_answers(reader, ["POST"])] == [200]
        writer.close()


async def test_the_pipeline_cap_holds_behind_a_held_request() -> None:
    async with running_node(fast_config(poll_hold=30.0, max_pipeline=4)) as node:
        host, port = node.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(POLL + health * 300)  # 10 KB of requests behind a held poll, in one write
        await eventually(lambda: node.polls.waiters.count == 1, what="the poll held")
        (conn,) = node.http.connections
        await eventually(lambda: conn.waiting >= 4, what="the pipeline filled")
        assert conn.waiting <= 4 + SLICE // len(health) + 1  # at most one slice beyond the cap
        _, w = await asyncio.open_connection(host, int(port))
        w.write(REGISTER + b"\r\n" + FORM)  # wakes the poll: everything behind it is answered
        answers = await read_answers(reader, ["GET"] * 301)
        w.close()
        writer.close()
        assert orjson.loads(answers[0][2])["code"] == 0
        assert {a[2] for a in answers[1:]} == {b"ok"}
