"""The limits of the HTTP front: deadlines, write flow control, connection admission, fd limit.

* **Deadlines** (:class:`HttpLimits`): each connection records which part of a request it is reading
  (:data:`IDLE`, :data:`HEADERS`, :data:`BODY`; :data:`CLOSING` once closed with answers still
  unsent) and since when, in a few attribute writes per request; one periodic reaper
  (:meth:`ConnectionTable.reap`, every :attr:`HttpLimits.period`)
  closes the connections past their deadline. Clock values are the reaper's last tick, so a deadline
  is met to within two periods, and never enforced early.
* **Flow control**: a connection's transport pauses the protocol when its unsent answers pass
  :data:`HIGH_WATER`; reading pauses with it, and past ``send_timeout`` the connection is aborted.
* **Admission** (:class:`ConnectionAdmission`): a global cap on open connections, and, only under
  pressure (open connections at ``pressure`` × the cap), a cap per client address.
* **File descriptors** (:func:`raise_fd_limit`, :func:`connections_for`): the soft limit is raised to
  the hard one at start, and the connection cap leaves a reserve below it.
* **Occasional logs** (:class:`Occasional`): accept errors and refusals, at most one line per period.

:class:`ConnectionTable` holds a server's connections and applies all of this to them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from discoverd.config import ServerConfig
from discoverd.core.throttle import Report, Throttle

IDLE: Final = 0
"""Between requests: ``idle_timeout`` applies while no answer is outstanding."""
HEADERS: Final = 1
"""Reading a request line and headers (a new connection starts here): ``header_timeout``."""
BODY: Final = 2
"""Reading a request body: ``body_timeout``."""
CLOSING: Final = 3
"""Closed, answers still unsent: ``send_timeout``, then the connection is aborted."""
PHASE_NAMES: Final = ("idle", "header", "body", "closing")
"""The reason a connection missed a deadline, by phase; ``"send"`` is the write deadline's."""

HIGH_WATER: Final = 64 * 1024
"""Unsent answer bytes of one connection above which it stops reading and dispatching."""
LOW_WATER: Final = 16 * 1024
"""Unsent answer bytes below which a paused connection resumes."""
FD_RESERVE_MIN: Final = 64
"""File descriptors kept for peers, snapshots and logs: at least this many, or 10 % of the limit."""


def connections_for(fd_limit: int) -> int:
    """The connection cap a file-descriptor limit allows: the limit less its reserve (≥ 1)."""
    return max(1, fd_limit - max(FD_RESERVE_MIN, fd_limit // 10))


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one; return ``(soft, hard)`` as they are after.

    Never raises: a platform refusing the hard value (an unlimited hard limit) keeps its soft one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, hard
    return target, hard


def fd_soft_limit() -> int:
    """The current soft ``RLIMIT_NOFILE`` (an unlimited one as 1 << 20)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may take from the HTTP front. Durations in seconds."""

    max_body: int = 1 << 20
    idle_timeout: float = 120.0
    """A keep-alive connection with no request in progress and no answer outstanding."""
    header_timeout: float = 10.0
    """From the first byte of a request (a new connection: from its accept) to its last header."""
    body_timeout: float = 30.0
    """From the last header to the end of the body."""
    send_timeout: float = 30.0
    """How long unsent answers may stay above :data:`HIGH_WATER` (the client does not read)."""
    max_pipeline: int = 16
    """Requests read ahead of their answers on one connection; beyond it reading pauses."""
    max_connections: int = field(default_factory=lambda: connections_for(fd_soft_limit()))
    max_conns_per_host: int = 512
    """Open connections of one address beyond which it is refused, under pressure only."""
    pressure: float = 0.75
    """Share of ``max_connections`` open from which the per-address cap applies."""

    @classmethod
    def from_config(cls, c: ServerConfig, fd_limit: int) -> HttpLimits:
        """The node's limits; ``max_connections`` 0 means :func:`connections_for` ``(fd_limit)``."""
        return cls(
            max_body=c.max_body,
            idle_timeout=c.idle_timeout,
            header_timeout=c.header_timeout,
            body_timeout=c.body_timeout,
            send_timeout=c.send_timeout,
            max_pipeline=c.max_pipeline,
            max_connections=c.max_connections or connections_for(fd_limit),
            max_conns_per_host=c.max_conns_per_host,
        )

    @property
    def period(self) -> float:
        """Seconds between two reaper passes: 1 s, or a quarter of the shortest deadline."""
        shortest = min(self.idle_timeout, self.header_timeout, self.body_timeout, self.send_timeout)
        return max(0.05, min(1.0, shortest / 4))

    def timeouts(self) -> tuple[float, float, float, float]:
        """The deadline of each phase (:data:`IDLE` … :data:`CLOSING`), plus one period of slack
        for the coarse clock: a connection older than this in its phase has missed its deadline."""
        slack = self.period
        return (
            self.idle_timeout + slack,
            self.header_timeout + slack,
            self.body_timeout + slack,
            self.send_timeout + slack,
        )


class ConnectionAdmission:
    """Counts the open connections, in total and per client address, and admits new ones.

    :meth:`admit` refuses a connection when ``max_connections`` are open, or when at least
    ``pressure`` × ``max_connections`` are open and its address already holds ``max_per_host``
    (an address ``""``, a Unix socket, has no per-address cap). Each admitted connection is
    released once (:meth:`release`). Plain counters: one event loop, no locking.
    """

    __slots__ = (
        "max_connections",
        "max_per_host",
        "open",
        "per_host",
        "pressure_at",
        "refused_full",
        "refused_host",
    )

    def __init__(self, max_connections: int, max_per_host: int, pressure: float = 0.75) -> None:
        self.max_connections = max_connections
        self.max_per_host = max_per_host
        self.pressure_at = max(1, int(max_connections * pressure))
        self.open = 0
        self.per_host: dict[str, int] = {}
        """Open connections per address (addresses with none are removed)."""
        self.refused_full = 0
        """Connections refused because ``max_connections`` were open."""
        self.refused_host = 0
        """Connections refused under pressure because their address held ``max_per_host``."""

    def __repr__(self) -> str:
        return f"<ConnectionAdmission {self.open}/{self.max_connections} open, {self.refused} refused>"

    @property
    def refused(self) -> int:
        return self.refused_full + self.refused_host

    @property
    def under_pressure(self) -> bool:
        return self.open >= self.pressure_at

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (counted as refused) when it must be closed."""
        if self.open >= self.max_connections:
            self.refused_full += 1
            return False
        held = self.per_host.get(peer, 0)
        if held >= self.max_per_host and self.open >= self.pressure_at and peer:
            self.refused_host += 1
            return False
        self.per_host[peer] = held + 1
        self.open += 1
        return True

    def release(self, peer: str) -> None:
        """An admitted connection from ``peer`` closed."""
        self.open -= 1
        held = self.per_host.get(peer, 0) - 1
        if held > 0:
            self.per_host[peer] = held
        else:
            self.per_host.pop(peer, None)


class Occasional:
    """A warning that may happen often, logged at most once per ``period`` with a count: one
    :class:`~discoverd.core.throttle.Throttle` key, logged.

    :meth:`note` counts an occurrence and logs at once when nothing was logged for a period;
    :meth:`flush` (called periodically) logs the occurrences counted since, once a period has passed.
    """

    __slots__ = ("_clock", "_log", "_throttle", "total", "what")

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.what = what
        self._clock = clock
        self._throttle = Throttle(period)
        self.total = 0
        """Occurrences since the start."""

    def __repr__(self) -> str:
        return f"<Occasional {self.what!r} total={self.total}>"

    def note(self, text: str) -> None:
        """One occurrence, described by ``text`` (the last one's text is logged)."""
        self.total += 1
        self._report(self._throttle.hit(None, self._clock(), text))

    def flush(self) -> None:
        """Log the occurrences not logged yet, once a period has passed since the last line."""
        self._report(self._throttle.due(None, self._clock()))

    def _report(self, report: Report | None) -> None:
        if report is not None:
            self._log.warning(
                "%s: %d time(s) since the last report (%d in all); last: %s",
                self.what,
                report.count,
                self.total,
                report.detail,
            )


class Tracked(Protocol):
    """What a :class:`ConnectionTable` needs of a connection (``server/http.py``'s)."""

    peer: str

    def overdue(self, now: float, timeouts: tuple[float, float, float, float]) -> str:
        """The deadline missed at ``now``, or ``""``."""
        ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


C = TypeVar("C", bound=Tracked)


class ConnectionTable(Generic[C]):
    """The open connections of one server: their admission, the reaper's clock and passes, and
    closing them all at the end. One event loop; only :meth:`close_all` waits."""

    def __init__(self, limits: HttpLimits, loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
        self.limits = limits
        self._loop = loop
        self.now = loop.time()
        """``loop.time()`` at the last :meth:`reap`: the clock connections time their phases on."""
        self.connections: set[C] = set()
        self.admission = ConnectionAdmission(
            limits.max_connections, limits.max_conns_per_host, limits.pressure
        )
        self.expired = dict.fromkeys((*PHASE_NAMES, "send"), 0)
        """Connections the reaper closed, by the deadline they missed."""
        self.refusals = Occasional(logger, "connections refused at accept")
        self.accept_errors = Occasional(logger, "accept failed")
        self.closing = False
        """Set by :meth:`close_all`: nothing is admitted any more."""
        self._timeouts = limits.timeouts()
        self._all_closed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<ConnectionTable {len(self.connections)} {self.admission!r}>"

    def admit(self, peer: str) -> bool:
        """Whether a connection just accepted from ``peer`` may stay (counted if so)."""
        if self.closing:
            return False
        if self.admission.admit(peer):
            return True
        a = self.admission
        why = (
            f"max_connections {a.max_connections} open"
            if a.open >= a.max_connections
            else f"{peer} holds {a.per_host.get(peer, 0)} (max_conns_per_host {a.max_per_host}) "
            f"with {a.open} of {a.max_connections} open"
        )
        self.refusals.note(f"{why}; {a.refused} refused in all")
        return False

    def add(self, conn: C) -> None:
        """Track an admitted connection (it is :meth:`forget`-ten once, when it ends)."""
        self.connections.add(conn)

    def forget(self, conn: C) -> None:
        """``conn`` ended (closed, or failed before it started): release its admission. Idempotent."""
        if conn in self.connections:
            self.connections.remove(conn)
            self.admission.release(conn.peer)
            if self._all_closed is not None and not self.connections:
                self._all_closed.set()

    def tick(self) -> float:
        """Set :attr:`now` to the loop's time (done by :meth:`reap`, and when accepting starts)."""
        self.now = self._loop.time()
        return self.now

    def reap(self) -> int:
        """Close the connections past a deadline; returns how many. Header, body and idle deadlines
        close gracefully; the send deadline (and answers left unsent after a close) abort. Also
        reports the refusals and accept errors not reported yet."""
        now = self.tick()
        timeouts = self._timeouts
        missed = [(c, why) for c in self.connections if (why := c.overdue(now, timeouts))]
        for conn, why in missed:
            self.expired[why] += 1
            if why in ("send", "closing"):
                conn.abort()
            else:
                conn.close()
        self.refusals.flush()
        self.accept_errors.flush()
        return len(missed)

    async def close_all(self, within: float) -> None:
        """Admit nothing more; close every connection, and abort those still open after ``within``
        seconds. Returns once every connection is gone or aborted."""
        self.closing = True
        if not self.connections:
            return
        self._all_closed = asyncio.Event()
        for c in list(self.connections):
            c.close()
        try:
            await asyncio.wait_for(self._all_closed.wait(), within)
        except TimeoutError:
            for c in list(self.connections):
                c.abort()
