"""Drive the Go memberlist test peer (``tests/gossip/harness``, binary ``mlharness``) from asyncio tests.

Building: :func:`build_harness` compiles the peer once per source digest into a per-user temp directory
(``$TMPDIR/discoverd-mlharness-<uid>/<digest>/mlharness``) through ``scripts/build_harness.sh``; the
``mlharness_bin`` fixture in ``conftest.py`` skips when Go is missing (fails instead when ``CI`` is set).

Running: :class:`GoNode` starts ``mlharness node <flags>`` and speaks its line protocol. Every stdout line
is a JSON event (``{"event": ...}``), kept in :attr:`GoNode.events` in arrival order; commands are JSON
lines on stdin, each tagged with an ``id`` that the peer echoes on its answer event (``members``,
``health``, ``services``) and on the final ``ok``/``error`` event. On exit the process is killed (SIGKILL
by PID) and the context manager raises :class:`GoNodeError` if the process had exited by itself with a
non-zero status or if its stderr shows a Go panic / fatal error — so a test that crashes the Go peer fails
even when its own assertions passed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS_SRC = REPO_ROOT / "tests" / "gossip" / "harness" / "src"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_harness.sh"
MEMBERLIST_SRC = Path("/usr/share/gocode/src/github.com/hashicorp/memberlist")
PANIC_MARKERS = ("panic:", "fatal error:", "[signal SIG")

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class GoNodeError(AssertionError):
    """The Go peer misbehaved: exited unexpectedly, panicked, or an expected event never came."""


class GoCommandError(GoNodeError):
    """The Go peer answered a command with ``{"event": "error"}``; ``error`` is its message."""

    def __init__(self, cmd: str, error: str) -> None:
        super().__init__(f"command {cmd!r} failed: {error}")
        self.cmd = cmd
        self.error = error


def go_missing() -> str | None:
    """Why the Go peer cannot be built here (``None`` when ``go`` and the memberlist sources exist)."""
    if shutil.which("go") is None:
        return "Go is not installed (apt-get install golang-go; see scripts/sysdeps.sh test)"
    if not MEMBERLIST_SRC.is_dir():
        return f"{MEMBERLIST_SRC} is missing (apt-get install golang-github-hashicorp-memberlist-dev)"
    return None


def source_digest() -> str:
    """A digest of the harness's Go sources and build script; a new digest means a rebuild."""
    h = hashlib.sha256()
    for path in sorted([*HARNESS_SRC.rglob("*.go"), BUILD_SCRIPT]):
        h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_harness() -> Path:
    """Build (or reuse) the binary for the current sources; raises :class:`GoNodeError` on build failure."""
    root = Path(tempfile.gettempdir()) / f"discoverd-mlharness-{os.getuid()}"
    binary = root / source_digest() / "mlharness"
    if binary.is_file():
        return binary
    tmp = binary.with_name(f"mlharness.{os.getpid()}.tmp")
    env = {**os.environ, "HARNESS_GOCACHE": str(root / ".gocache")}
    proc = subprocess.run(
        ["sh", str(BUILD_SCRIPT), str(tmp)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise GoNodeError(f"building the Go harness failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    tmp.replace(binary)  # atomic: concurrent builders never see a half-written binary
    return binary


def unique_name(prefix: str = "go") -> str:
    """A node name unlikely to collide with any other process's node on this machine."""
    return f"{prefix}-{secrets.token_hex(4)}"


def b64(data: bytes) -> str:
    """Base64 as the harness uses for ``data`` fields."""
    return base64.b64encode(data).decode()


class GoNode:
    """One ``mlharness node`` process; ``async with GoNode(binary, "-name", "a") as a: ...``.

    ``args`` are the harness's node flags (see ``main.go``: ``-name``, ``-preset``, ``-key``, ``-join``,
    ``-micro``, ...). After entering, :attr:`name`, :attr:`addr` and :attr:`port` come from the ``ready``
    event; :attr:`address` is ``"addr:port"`` for joins.
    """

    def __init__(self, binary: Path, *args: str, ready_timeout: float = 10.0) -> None:
        self.binary = binary
        self.args = args
        self.ready_timeout = ready_timeout
        self.events: list[Event] = []
        self.name = ""
        self.addr = ""
        self.port = 0
        self._stderr = bytearray()
        self._cond = asyncio.Condition()
        self._eof = False
        self._expect_exit = False
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def address(self) -> str:
        return f"{self.addr}:{self.port}"

    @property
    def pid(self) -> int:
        return self._process().pid

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    def _process(self) -> asyncio.subprocess.Process:
        if self._proc is None:
            raise GoNodeError("the Go node is not running (use it as an async context manager)")
        return self._proc

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(
            str(self.binary),
            "node",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 << 20,
        )
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        try:
            ready = await self.wait_for(lambda e: e["event"] == "ready", self.ready_timeout)
        except BaseException:
            await self._stop()
            raise
        self.name, self.addr, self.port = str(ready["name"]), str(ready["addr"]), int(ready["port"])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _read_stdout(self) -> None:
        stream = self._process().stdout
        assert stream is not None
        try:
            async for raw in stream:
                try:
                    event = json.loads(raw)
                except ValueError:
                    event = {"event": "_unparsed", "line": raw.decode(errors="replace")}
                if not isinstance(event, dict) or "event" not in event:
                    event = {"event": "_unparsed", "line": raw.decode(errors="replace")}
                async with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        finally:
            async with self._cond:
                self._eof = True
                self._cond.notify_all()

    async def _read_stderr(self) -> None:
        stream = self._process().stderr
        assert stream is not None
        while chunk := await stream.read(65536):
            self._stderr += chunk

    def _failure(self) -> str | None:
        """What went wrong with the process, judged from its exit status and stderr (None = fine)."""
        rc = self._process().returncode
        if any(marker in self.stderr for marker in PANIC_MARKERS):
            return "the Go node panicked"
        if rc is not None and rc != 0 and not self._expect_exit:
            return f"the Go node exited unexpectedly with status {rc}"
        return None

    async def _stop(self) -> None:
        proc = self._process()
        if self._eof and proc.returncode is None:  # stdout closed: the process is exiting by itself
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
        problem = self._failure()
        if proc.returncode is None:
            self._expect_exit = True
            proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()
        await asyncio.gather(*self._readers)
        problem = problem or self._failure()
        if problem:
            raise GoNodeError(f"{problem} ({self.name or self.args}); stderr:\n{self.stderr[-4000:]}")

    async def wait_for(self, pred: Predicate, timeout: float = 10.0) -> Event:
        """The first event (already received or future) for which ``pred`` holds.

        Raises :class:`GoNodeError` on timeout or when the process's stdout ends without a match.
        """
        seen = 0
        try:
            async with asyncio.timeout(timeout), self._cond:
                while True:
                    for event in self.events[seen:]:
                        if pred(event):
                            return event
                    seen = len(self.events)
                    if self._eof:
                        raise GoNodeError(
                            f"{self.name or self.args} ended its output without the awaited event; "
                            f"last events {self.events[-5:]}; stderr:\n{self.stderr[-4000:]}"
                        )
                    await self._cond.wait()
        except TimeoutError:
            raise GoNodeError(
                f"{self.name or self.args}: no matching event within {timeout} s; "
                f"last events {self.events[-5:]}"
            ) from None

    async def wait_event(self, event: str, timeout: float = 10.0, **fields: Any) -> Event:
        """``wait_for`` an event of that kind whose given fields have exactly the given values."""
        return await self.wait_for(
            lambda e: e.get("event") == event and all(e.get(k) == v for k, v in fields.items()), timeout
        )

    async def command(self, cmd: Mapping[str, Any], timeout: float = 10.0) -> Event:
        """Send one command; return its answer event (e.g. ``members``) or else its ``ok`` event.

        Raises :class:`GoCommandError` when the peer answers ``error``.
        """
        cmd_id = next(self._ids)
        line = json.dumps({**cmd, "id": cmd_id}).encode() + b"\n"
        stdin = self._process().stdin
        assert stdin is not None
        try:
            async with self._write_lock:
                stdin.write(line)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise GoNodeError(f"{self.name}: stdin closed ({e}); stderr:\n{self.stderr[-4000:]}") from e
        final = await self.wait_for(
            lambda e: e.get("id") == cmd_id and e.get("event") in ("ok", "error"), timeout
        )
        if final["event"] == "error":
            raise GoCommandError(str(cmd.get("cmd")), str(final.get("error")))
        answers = [e for e in self.events if e.get("id") == cmd_id and e is not final]
        return answers[-1] if answers else final

    async def members(self) -> list[Event]:
        """Alive and suspect members as the Go node sees them (``name, addr, port, state, meta``)."""
        members: list[Event] = (await self.command({"cmd": "members"}))["members"]
        return members

    async def join(self, *addrs: str, timeout: float = 10.0) -> int:
        """Join through the given ``host:port`` seeds; returns how many were contacted."""
        return int((await self.command({"cmd": "join", "addrs": list(addrs)}, timeout))["joined"])

    async def broadcast(self, data: bytes) -> None:
        """Queue a user broadcast (delivered by gossip; arrives as ``msg`` events at peers)."""
        await self.command({"cmd": "broadcast", "data": b64(data)})

    async def send_reliable(self, node: str, data: bytes) -> None:
        await self.command({"cmd": "send-reliable", "node": node, "data": b64(data)})

    async def leave(self, timeout_ms: int = 1000) -> None:
        await self.command({"cmd": "leave", "timeout_ms": timeout_ms}, timeout_ms / 1000 + 10)

    async def update_meta(self, meta: str) -> None:
        await self.command({"cmd": "update-meta", "meta": meta})

    async def health(self) -> int:
        return int((await self.command({"cmd": "health"}))["score"])

    async def register(self, service: Mapping[str, Any], ttl_ms: int = 60_000) -> None:
        """(-micro) Register a go-micro Service (JSON with Go names) and broadcast the create."""
        await self.command({"cmd": "register", "service": service, "ttl_ms": ttl_ms})

    async def deregister(self, service: Mapping[str, Any]) -> None:
        await self.command({"cmd": "deregister", "service": service})

    async def services(self) -> dict[str, list[Event]]:
        """(-micro) The registry's map ``name -> [Service, ...]``."""
        services: dict[str, list[Event]] = (await self.command({"cmd": "list"}))["services"]
        return services

    async def shutdown(self) -> None:
        """Stop memberlist without leaving; the process exits with status 0."""
        self._expect_exit = True
        await self.command({"cmd": "shutdown"})
        await self._process().wait()

    async def kill(self) -> None:
        """SIGKILL the process (peers must detect the failure by probing)."""
        self._expect_exit = True
        proc = self._process()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
