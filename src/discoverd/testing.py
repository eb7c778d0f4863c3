"""Helpers for testing code that uses discoverd: real servers on loopback, OS-assigned ports.

* :func:`running_node` — a node inside the current event loop (fast; for most tests);
* :class:`ServerProcess` — ``discoverd serve`` as a child process, for tests that kill, signal or
  restart a server. Always stopped by PID (``stop`` = SIGTERM, ``kill`` = SIGKILL).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO

from discoverd.config import ServerConfig
from discoverd.server.runner import Node, running_node

__all__ = ["Node", "ServerConfig", "ServerProcess", "fast_config", "running_node"]


def fast_config(**changes: object) -> ServerConfig:
    """A config for tests: loopback, any free port, fixed identity; override what you test."""
    base = ServerConfig(addr="127.0.0.1:0", zone="sh001", region="sh", env="dev", hostname="node-test")
    return base.replace(**changes)


class ServerProcess:
    """``python -m discoverd serve`` in a child process; the port is read from its first line.

    Use as a context manager; ``args`` are extra command-line flags. Blocks in :meth:`start` until
    the server printed its address (or raises ``RuntimeError`` with its stderr after ``timeout``).
    """

    def __init__(self, args: Sequence[str] = (), *, addr: str = "127.0.0.1:0") -> None:
        self.args = ["--addr", addr, *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.addr = ""

    def __repr__(self) -> str:
        return f"<ServerProcess pid={self.pid} addr={self.addr!r}>"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float = 15.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "discoverd", "serve", *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # a file, not a pipe: a chatty server never blocks on a full pipe
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
        sel.close()
        text = line.decode().strip()
        if not text.startswith("discoverd listening on "):
            self.kill()
            err = self.stderr_text()
            if self._stderr is not None:
                self._stderr.close()
            raise RuntimeError(f"server did not start: {text!r} {err}")
        self.addr = text.rsplit(" ", 1)[1]
        return self

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (no graceful stop) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr_text(self) -> str:
        """What the process wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.kill()
        finally:
            if self.proc is not None and self.proc.stdout is not None:
                self.proc.stdout.close()
            if self._stderr is not None:
                self._stderr.close()
