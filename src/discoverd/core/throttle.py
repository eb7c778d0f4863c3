"""Rate-limited, aggregated reporting of repeated occurrences (log lines about failing peers).

:class:`Throttle` keeps, per key, a window: the first occurrence on a quiet key is reported at once;
later ones are counted, and reported as one summary (count, span, last detail) with the first
occurrence at least ``interval`` after the window opened. So a key costs at most one report at
once plus one per ``interval``, however often it occurs. Pure: the clock comes in as ``now``
(seconds, any monotonic origin); the caller logs what it returns.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Report:
    """What to report for a key."""

    count: int
    """Occurrences covered: 1 for a first occurrence, else those since the previous report."""
    span: float
    """Seconds the summary covers (0 for a first occurrence)."""
    detail: str
    """The detail given with the last occurrence covered (e.g. the last error)."""
    first: bool
    """A first occurrence on a quiet key (report it as it is), not a summary."""


@dataclass(slots=True)
class _Window:
    start: float
    count: int
    detail: str


class Throttle:
    """Per-key windows of ``interval`` seconds. Not thread-safe; memory: one small entry per key
    until :meth:`close` (the caller closes the keys it stops using, e.g. a peer that left)."""

    __slots__ = ("_windows", "interval")

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._windows: dict[Hashable, _Window] = {}

    def __repr__(self) -> str:
        return f"Throttle(interval={self.interval:g}, keys={len(self._windows)})"

    def __len__(self) -> int:
        return len(self._windows)

    def hit(self, key: Hashable, now: float, detail: str = "") -> Report | None:
        """One occurrence: its :class:`Report` when it is due now, else ``None`` (counted).

        Due: the first occurrence on a new key, or on a key quiet (nothing counted) for a whole
        ``interval``; else a summary of everything counted, once ``interval`` has passed since the
        window opened."""
        w = self._windows.get(key)
        if w is None or (w.count == 0 and now - w.start >= self.interval):
            self._windows[key] = _Window(now, 0, detail)
            return Report(1, 0.0, detail, True)
        w.count += 1
        w.detail = detail
        if now - w.start < self.interval:
            return None
        report = Report(w.count, now - w.start, detail, False)
        w.start, w.count = now, 0
        return report

    def due(self, key: Hashable, now: float) -> Report | None:
        """The summary of what was counted for ``key``, once ``interval`` has passed since its window
        opened (a periodic check, between occurrences); else ``None``. A report opens a new window."""
        w = self._windows.get(key)
        if w is None or w.count == 0 or now - w.start < self.interval:
            return None
        report = Report(w.count, now - w.start, w.detail, False)
        w.start, w.count = now, 0
        return report

    def close(self, key: Hashable, now: float) -> Report | None:
        """Forget ``key``; the summary of what was counted and not reported yet, if anything."""
        w = self._windows.pop(key, None)
        if w is None or w.count == 0:
            return None
        return Report(w.count, now - w.start, w.detail, False)


class Budget:
    """At most ``burst`` occurrences pass per window of ``interval`` seconds; the rest are refused
    and counted in :attr:`refused` until :meth:`drain`.

    A window opens at the first occurrence after the previous window ended, so a quiet key passes its
    first ``burst`` occurrences at once. Pure: the clock comes in as ``now`` (seconds, any monotonic
    origin). Not thread-safe.
    """

    __slots__ = ("_passed", "_start", "burst", "interval", "refused")

    def __init__(self, burst: int, interval: float) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be >= 1 and interval positive")
        self.burst = burst
        self.interval = interval
        self._start: float | None = None
        self._passed = 0
        self.refused = 0
        """Occurrences refused since the last :meth:`drain`."""

    def __repr__(self) -> str:
        return f"Budget(burst={self.burst}, interval={self.interval:g}, refused={self.refused})"

    def take(self, now: float) -> bool:
        """One occurrence at ``now``: ``True`` when it passes, ``False`` when refused (and counted)."""
        if self._start is None or now - self._start >= self.interval:
            self._start, self._passed = now, 0
        if self._passed < self.burst:
            self._passed += 1
            return True
        self.refused += 1
        return False

    def window_end(self) -> float:
        """When the current window ends (``-inf`` before the first occurrence)."""
        return float("-inf") if self._start is None else self._start + self.interval

    def drain(self) -> int:
        """The occurrences refused since the last drain; resets the count."""
        refused, self.refused = self.refused, 0
        return refused
