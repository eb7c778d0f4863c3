"""Capped exponential backoff with jitter, shared by the client's node switching and the cache's
watcher restarts. Pure: the randomness is injected (``rng``), no clock, no sleeping."""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from discoverd.errors import ConfigError


class Jitter(enum.Enum):
    """How :class:`Backoff` randomises a delay whose ceiling is ``c``.

    * ``FULL`` — uniform in ``[0, c)`` (spreads restarts best; AWS "full jitter");
    * ``EQUAL`` — ``c/2`` plus uniform in ``[0, c/2)`` (never shorter than half the ceiling);
    * ``NONE`` — exactly ``c`` (deterministic; for tests).
    """

    FULL = "full"
    EQUAL = "equal"
    NONE = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Capped exponential backoff with jitter: ceiling ``min(cap, base × factor**attempt)``.

    * ``base`` (0.1 s) — ceiling of the first delay (attempt 0);
    * ``cap`` (30 s) — no delay exceeds it;
    * ``factor`` (2.0) — growth per attempt, >= 1;
    * ``jitter`` (``FULL``) — see :class:`Jitter`;
    * ``rng`` (``random.random``) — returns a float in ``[0, 1)``; inject a fixed one in tests.
    """

    base: float = 0.1
    cap: float = 30.0
    factor: float = 2.0
    jitter: Jitter = Jitter.FULL
    rng: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if not (0 <= self.base <= self.cap and math.isfinite(self.cap)):
            raise ConfigError(f"backoff needs 0 <= base <= cap < inf, got {self.base!r}, {self.cap!r}")
        if not (self.factor >= 1 and math.isfinite(self.factor)):
            raise ConfigError(f"backoff factor must be >= 1, got {self.factor!r}")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay of ``attempt`` (0-based)."""
        try:
            raw = self.base * self.factor ** max(0, attempt)
        except OverflowError:
            return self.cap
        return min(self.cap, raw)

    def delay(self, attempt: int) -> float:
        """The jittered delay before retry number ``attempt`` (0-based), in ``[0, cap]``."""
        c = self.ceiling(attempt)
        if self.jitter is Jitter.FULL:
            return c * self.rng()
        if self.jitter is Jitter.EQUAL:
            return c / 2 + c / 2 * self.rng()
        return c


@dataclass(slots=True)
class Retry:
    """Counts consecutive failures of something that restarts (a watch) and returns the next delay.

    The count resets on :meth:`succeeded` (e.g. an event arrived), or when the failed run had lasted at
    least ``backoff.cap`` (a long-healthy watch that breaks retries quickly again).
    """

    backoff: Backoff
    attempt: int = 0

    def succeeded(self) -> None:
        self.attempt = 0

    def failed(self, uptime: float = 0.0) -> float:
        """Record a failure after a run of ``uptime`` seconds; returns the delay before the next try."""
        if uptime >= self.backoff.cap:
            self.attempt = 0
        delay = self.backoff.delay(self.attempt)
        self.attempt += 1
        return delay
