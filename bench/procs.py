"""Child processes and /proc readings: servers on OS-assigned ports, stopped by PID; RSS, CPU, fds.

Every process a benchmark starts is stopped by its PID (SIGTERM, then SIGKILL after a timeout), never
by name. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from bench.harness import log, log_lines, settle

BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- /proc ---------------------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_rss(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants, in bytes."""
    return sum(rss_bytes(p) for p in tree(pid))


def tree_fds(pid: int) -> int:
    """Open file descriptors of ``pid`` and its descendants."""
    return sum(open_fds(p) for p in tree(pid))


async def settle_rss(pid: int) -> int:
    """The RSS of ``pid`` once it stopped moving (3 equal samples 100 ms apart, at most 10 s)."""
    return await settle(lambda: rss_bytes(pid))


def children_cpu() -> float:
    """User + system CPU time of this process's waited-for children."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def raise_fd_limit(need: int) -> int:
    """Raise the soft RLIMIT_NOFILE to ``need`` (at most the hard limit); RuntimeError if that is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < need:
        raise RuntimeError(f"fd limit {soft} < {need} needed (hard limit {hard})")
    return soft


def free_port() -> int:
    """A TCP port of 127.0.0.1 the OS just handed out (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- stopping by PID -----------------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM by PID, SIGKILL if it does not exit within ``timeout`` s; returns once it exited."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL an asyncio child by PID (if it still runs) and wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()


async def reap(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Wait up to ``timeout`` s for an asyncio child to exit, then SIGKILL it by PID."""
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        await kill(proc)


# -- line-protocol children (asyncio) ------------------------------------------------------------------------


async def spawn_piped(*cmd: str, stderr: IO[bytes] | None = None) -> asyncio.subprocess.Process:
    """Start ``cmd`` with pipes on its stdin and stdout (one line per message)."""
    return await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr
    )


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 120.0) -> str:
    """The child's next stdout line, stripped; TimeoutError after ``timeout`` s."""
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()


async def write_line(proc: asyncio.subprocess.Process, text: str) -> None:
    """Send ``text`` and a newline to the child's stdin."""
    assert proc.stdin is not None
    proc.stdin.write(text.encode() + b"\n")
    await proc.stdin.drain()


# -- servers -------------------------------------------------------------------------------------------------


def read_fd_line(fd: int, timeout: float) -> str:
    """One line from ``fd`` (byte by byte, nothing read past it), or what came within ``timeout`` s."""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = b""
    try:
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 1)
            if not chunk:
                break
            line += chunk
    finally:
        sel.close()
    return line.decode(errors="replace").strip()


class Child:
    """A server child process whose first stdout line ends with ``listening on HOST:PORT``; stopped by
    PID. Its stderr goes to a temporary file (:meth:`stderr_tail`)."""

    def __init__(self, cmd: Sequence[str], name: str) -> None:
        self.cmd = list(cmd)
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr = ""
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """Its PID (it must have been started)."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.addr}"

    def start(self, timeout: float = 15.0) -> Child:
        """Start it and read its address; RuntimeError (after stopping it) if none came in ``timeout`` s."""
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        assert self.proc.stdout is not None
        line = read_fd_line(self.proc.stdout.fileno(), timeout)
        host_port = line.rsplit(" ", 1)[-1]
        if " listening on " not in line or ":" not in host_port:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {line!r} {self.stderr_tail()}")
        self.addr = host_port
        log(f"{self.name} pid {self.pid} on {self.addr}")
        return self

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters it wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def log_lines(self, limit: int = 100_000) -> list[str]:
        """The non-blank lines of its stderr (the last ``limit`` characters)."""
        return log_lines(self.stderr_tail(limit))

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit within ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        stop_process(proc, timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def discoverd(*extra: str) -> Child:
    """A ``discoverd serve`` child; ``BENCH_SERVER_ARGS`` (space-separated) adds flags (``bench/ab.py``)."""
    cmd = [sys.executable, "-m", "discoverd", "serve", "--addr", "127.0.0.1:0", "--hostname", "bench-node"]
    more = os.environ.get("BENCH_SERVER_ARGS", "").split()
    return Child([*cmd, "--log-level", "warning", *extra, *more], "discoverd")


def baseline() -> Child:
    """The hello-world baseline server (``bench/baseline_server.py``)."""
    return Child([sys.executable, str(BENCH_DIR / "baseline_server.py"), "--addr", "127.0.0.1:0"], "baseline")
