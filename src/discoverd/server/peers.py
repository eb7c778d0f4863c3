"""One replication target (:class:`Peer`), its ``/discovery/nodes`` row, and its failure log lines.

:class:`PeerLog` aggregates the replicator's failure lines per peer, so a dead peer costs bounded log
volume. For each peer and kind of trouble — a failed send (transport error, timeout), an operation
dropped after its last attempt, a refusal (-401/-403), an unusable answer — the first occurrence is
logged as it happens, then at most one summary line per ``interval`` (60 s) with the count and the
last error (:class:`~discoverd.core.throttle.Throttle`). When a peer leaves the peer set, what was counted and
not logged yet is logged once. Whatever the failure rate, a peer costs at most one line per kind at
once, then one per kind per interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from discoverd.core.replication import PeerQueue
from discoverd.core.throttle import Report, Throttle

log = logging.getLogger("discoverd.replication")

NODE_UP = 0
NODE_LOST = 1


class PeerUnreachable(Exception):
    """A request to a peer failed in transport (refused, reset, bad answer framing...): retried."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One row of ``/discovery/nodes``: a node of this zone and its status (0 UP, 1 LOST)."""

    addr: str
    status: int
    zone: str


@dataclass(slots=True, eq=False)
class Peer:
    """One replication target: an own-zone node, or a whole other zone (``addrs`` rotate on failure)."""

    zone: str
    addrs: list[str]
    own_zone: bool
    queue: PeerQueue
    status: int = NODE_LOST
    sent: int = 0
    failed: int = 0
    refused: int = 0
    """Operations the peer refused with -401/-403 (authentication)."""
    streak: int = 0
    """Consecutive failed sends (0 after an answer): the senders' backoff."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    busy: set[object] = field(default_factory=set)
    """Lanes (instances, or all sets) with an operation in flight."""

    @property
    def addr(self) -> str:
        return self.addrs[0]

    @property
    def name(self) -> str:
        """The own-zone peer's address, or ``zone:NAME`` for another zone."""
        return self.addrs[0] if self.own_zone else f"zone:{self.zone}"

    def rotate(self) -> None:
        if len(self.addrs) > 1:
            self.addrs.append(self.addrs.pop(0))


FAILED = "failed"
DROPPED = "dropped"
REFUSED = "refused"
MALFORMED = "malformed"
_KINDS = (FAILED, DROPPED, REFUSED, MALFORMED)

_FIRST = {
    FAILED: (logging.INFO, "replication to %s failed: %s"),
    DROPPED: (logging.WARNING, "replication to %s: dropped an operation after its last attempt (%s)"),
    REFUSED: (logging.WARNING, "replication to %s refused (%s): check peer_secret on both nodes"),
    MALFORMED: (logging.WARNING, "replication to %s: %s"),
}
_SUMMARY = {
    FAILED: (logging.INFO, "replication to %s: %d more failed send(s) in the last %.0f s; last: %s"),
    DROPPED: (
        logging.WARNING,
        "replication to %s: %d more operation(s) dropped after their last attempt in the last %.0f s; "
        "last: %s",
    ),
    REFUSED: (
        logging.WARNING,
        "replication to %s: %d more operation(s) refused in the last %.0f s; last: %s "
        "(check peer_secret on both nodes)",
    ),
    MALFORMED: (
        logging.WARNING,
        "replication to %s: %d more unusable answer(s) in the last %.0f s; last: %s",
    ),
}


class PeerLog:
    """The replicator's failure lines. ``clock`` is monotonic seconds. One loop; not thread-safe."""

    def __init__(self, clock: Callable[[], float], interval: float = 60.0) -> None:
        self.clock = clock
        self._throttle = Throttle(interval)

    def __repr__(self) -> str:
        return f"<PeerLog {self._throttle!r}>"

    def failed(self, peer: str, addr: str, error: object) -> None:
        """A send to ``peer`` (now at ``addr``) failed; it will be retried."""
        self._hit(peer, FAILED, str(error) if addr == peer else f"{addr}: {error}")

    def dropped(self, peer: str, action: str, attempts: int) -> None:
        """An operation for ``peer`` was given up after ``attempts`` failed attempts."""
        self._hit(peer, DROPPED, f"{action} after {attempts} attempts")

    def refused(self, peer: str, code: object, message: object) -> None:
        """``peer`` refused an operation (-401/-403); it is not retried."""
        self._hit(peer, REFUSED, f"{code} {message}")

    def malformed(self, peer: str, problem: str) -> None:
        """``peer`` answered something that could not be used (e.g. a malformed -409 copy)."""
        self._hit(peer, MALFORMED, problem)

    def forget(self, peer: str) -> None:
        """``peer`` left the peer set: log what was counted and not logged yet, then forget it."""
        now = self.clock()
        for kind in _KINDS:
            report = self._throttle.close((peer, kind), now)
            if report is not None:
                _emit(peer, kind, report)

    def _hit(self, peer: str, kind: str, detail: str) -> None:
        report = self._throttle.hit((peer, kind), self.clock(), detail)
        if report is not None:
            _emit(peer, kind, report)


def _emit(peer: str, kind: str, report: Report) -> None:
    if report.first:
        level, message = _FIRST[kind]
        log.log(level, message, peer, report.detail)
    else:
        level, message = _SUMMARY[kind]
        log.log(level, message, peer, report.count, report.span, report.detail)
