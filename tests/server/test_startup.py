"""Start-up and stop of ``discoverd serve`` as a process: nothing is served before the snapshot is
restored, SIGTERM ends it cleanly at any moment, and an address in use is one line of error."""

from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from discoverd.core.registry_state import RegistryState
from discoverd.core.snapshot import encode_snapshot
from discoverd.model import Instance
from discoverd.server.snapshot import SnapshotStore
from discoverd.testing import ServerProcess

IDENTITY = ["--hostname", "boot", "--env", "dev", "--zone", "sh001"]
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Spawn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Starts ``discoverd serve`` with the given flags (stdout, stderr piped); whatever a test left
    running is killed by PID at its end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "discoverd", "serve", *args]
        started.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def catches_sigterm(pid: int) -> bool:
    """Whether the process installed a handler for SIGTERM (``SigCgt`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    return False


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A port that accepts connections (into its backlog) and never answers: a peer that hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def ended_cleanly(proc: subprocess.Popen[bytes], within: float) -> tuple[str, str]:
    """Wait (at most ``within`` s) for the exit: status 0 and no traceback; returns (stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"still running {within} s after SIGTERM") from None
    text = err.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
    return out.decode(), text


def test_sigterm_right_after_the_process_starts_exits_cleanly(spawn: Spawn) -> None:
    """From the first line of ``serve`` on: before it (the interpreter's start and ``import
    discoverd``) SIGTERM keeps its default action, an exit by the signal before anything is bound."""
    proc = spawn("--addr", "127.0.0.1:0", *IDENTITY)
    wait_for(lambda: catches_sigterm(proc.pid), 10, "the SIGTERM handler")
    proc.send_signal(signal.SIGTERM)
    ended_cleanly(proc, 10)


def test_sigterm_while_the_start_up_sync_waits_for_a_silent_peer_exits_at_once(
    silent_peer: int, spawn: Spawn
) -> None:
    port = free_port()
    nodes = f"127.0.0.1:{silent_peer},127.0.0.1:{port}"
    proc = spawn("--addr", f"127.0.0.1:{port}", "--nodes", nodes, "--sync-timeout", "30", *IDENTITY)
    wait_for(lambda: accepts(port), 10, "the port to accept")  # bound and accepting, syncing: not ready
    assert proc.poll() is None
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = ended_cleanly(proc, 10)
    assert time.monotonic() - stopped < 4.5  # not the sync timeout (30 s), nor a peer request's (5 s)
    assert "listening on" not in out  # it never became ready
    assert "discoverd stopped" in err


def test_sigterm_while_serving_stops_gracefully() -> None:
    with ServerProcess(IDENTITY) as srv:
        assert srv.stop() == 0
        err = srv.stderr_text()
    assert "discoverd stopped" in err and "Traceback" not in err


def test_an_address_in_use_is_one_line_and_status_1() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "discoverd", "serve", "--addr", f"127.0.0.1:{port}", *IDENTITY],
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"discoverd: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
    ]


def snapshot_of(data_dir: Path, apps: int, per_app: int) -> None:
    reg = RegistryState()
    now = time.time_ns()
    for a in range(apps):
        for i in range(per_app):
            ins = Instance(
                zone="sh001", env="dev", appid=f"app-{a:03d}", hostname=f"h{i:03d}", addrs=["http://x:1"]
            )
            reg.register(ins, now)
    SnapshotStore(str(data_dir)).save(encode_snapshot(reg, taken_at=now))


def test_no_read_of_a_snapshotted_app_is_answered_404_during_start_up(tmp_path: Path, spawn: Spawn) -> None:
    snapshot_of(tmp_path, apps=200, per_app=100)  # 20,000 instances to restore
    port = free_port()
    proc = spawn("--addr", f"127.0.0.1:{port}", "--data-dir", str(tmp_path), *IDENTITY)
    request = b"GET /discovery/fetch?env=dev&appid=app-199&status=1 HTTP/1.1\r\nConnection: close\r\n\r\n"
    codes: list[int] = []
    ready_at = 0.0
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        deadline = time.monotonic() + 20
        while len(codes) < 50 or not ready_at:  # from the first accept until well after ready
            assert time.monotonic() < deadline and proc.poll() is None, "no start"
            if not ready_at and sel.select(0):
                ready_at = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(request)
                    answer = b"".join(iter(lambda: s.recv(65536), b""))
            except ConnectionRefusedError:
                continue  # not accepting yet: try again at once
            doc = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
            codes.append(doc["code"])
            assert doc["code"] == 0 and len(doc["data"]["instances"]["sh001"]) == 100, doc
    finally:
        sel.close()
        proc.send_signal(signal.SIGTERM)
    ended_cleanly(proc, 10)
    assert set(codes) == {0}
