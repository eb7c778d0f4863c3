"""A real ``redis-server`` for the tests: on 127.0.0.1, an OS-assigned free port, no persistence.

``redis-server`` cannot listen on port 0, so a free port is found by binding a socket to port 0 and
closing it; when the server then fails to bind (someone took the port meanwhile) another port is tried.
Started and stopped by PID (``subprocess.Popen``); readiness is a real ``PING`` answered ``+PONG``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ping(port: int) -> bool:
    """Whether a redis-server on ``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; :meth:`kill` / :meth:`restart` for failure tests, :meth:`stop` at the end."""

    def __init__(self, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (`make test` installs it: scripts/sysdeps.sh test)")
        self.dir = tempfile.TemporaryDirectory(prefix="discoverd-redis-")
        self.port = port or 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def __repr__(self) -> str:
        pid = None if self.proc is None else self.proc.pid
        return f"<RedisServer 127.0.0.1:{self.port} pid={pid}>"

    def url(self, db: int | None = None, query: str = "") -> str:
        path = "" if db is None else f"/{db}"
        return f"redis://127.0.0.1:{self.port}{path}{'?' + query if query else ''}"

    def start(self, within: float = 10.0) -> None:
        """Start (again, on the same port when it had one); waits until it answers ``PING``."""
        for _ in range(5):
            port = self.port or free_port()
            proc = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir.name, "--loglevel", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + within
            while proc.poll() is None and not ping(port):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            if proc.poll() is None and ping(port):
                self.proc, self.port = proc, port
                return
            self._reap(proc)
            if self.port:  # a restart on a fixed port: retrying elsewhere would change the test
                break
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port or '<free port>'}")

    def kill(self) -> None:
        """SIGKILL the server (no goodbye to clients); waits until it is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        """Stop the server by PID and remove its directory. Idempotent."""
        if self.proc is not None:
            self._reap(self.proc)
            self.proc = None
        self.dir.cleanup()

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
