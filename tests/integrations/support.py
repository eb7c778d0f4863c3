"""Helpers of the integration tests: the registry's identity, client timings, child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from discoverd import ClientConfig

ENV, ZONE = "dev", "sh001"
FAST = ClientConfig(
    renew_interval=0.2, request_timeout=2.0, start_timeout=5.0, backoff_base=0.05, backoff_cap=0.2
)
"""Client timings for the applications under test: renewals every 0.2 s, quick failures."""


def wait_until(check: Callable[[], bool], what: str, within: float = 15.0) -> None:
    """Poll ``check`` until it holds (no blind sleep as synchronisation); fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Child:
    """A child process with its output in a file (shown when an assertion about it fails)."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        assert self.proc.poll() is None, (
            f"pid {self.pid} exited with {self.proc.returncode}:\n{self.output()}"
        )
        return True

    def signal(self, sig: int, timeout: float = 20.0) -> int:
        """Send ``sig`` to the child and wait for its exit status."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


def gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
