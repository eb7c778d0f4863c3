"""Lifeguard's local-health-aware suspicion timer and local-health awareness score (spec §1.8).

Pure arithmetic on times given by the caller (seconds on one monotonic clock); nothing here reads a clock
or arms a timer — the node asks :attr:`Suspicion.deadline` and acts when ``now >= deadline``.
"""

from __future__ import annotations

import math

__all__ = ["Awareness", "Suspicion", "suspicion_k", "suspicion_timeouts"]


def suspicion_timeouts(mult: int, max_mult: int, n: int, probe_interval: float) -> tuple[float, float]:
    """``(min, max)`` suspicion timeouts for a cluster of ``n`` nodes (memberlist ``suspicionTimeout``).

    ``min = mult × max(1, log10(max(1, n))) × probe_interval`` and ``max = max_mult × min``; e.g. the LAN
    preset (mult 4, max_mult 6, probe 1 s) with 3 nodes gives ``(4.0, 24.0)``.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    low = mult * node_scale * probe_interval
    return low, max_mult * low


def suspicion_k(mult: int, n: int) -> int:
    """Independent confirmations a new suspicion waits for: ``mult − 2``, or 0 when ``n − 2 < mult − 2``
    (too few other nodes to confirm); never negative."""
    k = mult - 2
    if n - 2 < k:
        k = 0
    return max(0, k)


class Suspicion:
    """The suspicion of one node (memberlist ``suspicion.go``).

    Started by a suspect message from ``from_`` at time ``start``. With ``k < 1`` the node is declared dead
    at ``start + min_timeout``. Otherwise the deadline starts at ``start + max_timeout`` and every *new,
    distinct* suspecter (``from_`` itself counts as already seen) up to ``k`` confirmations shortens it to
    ``start + max(min, max − ln(c + 1) / ln(k + 1) × (max − min))`` where ``c`` is the number of
    confirmations counted. (Go also truncates that timeout to whole milliseconds; this class does not.)
    """

    __slots__ = ("_confirmations", "_deadline", "_seen", "k", "max_timeout", "min_timeout", "start")

    def __init__(self, from_: str, k: int, min_timeout: float, max_timeout: float, start: float) -> None:
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.start = start
        self._seen: set[str] = {from_}
        self._confirmations = 0
        self._deadline = start + (max_timeout if k >= 1 else min_timeout)

    @property
    def deadline(self) -> float:
        """Absolute time (the clock of ``start``) at which the node is to be declared dead."""
        return self._deadline

    @property
    def confirmations(self) -> int:
        """Independent confirmations counted so far (at most ``k``)."""
        return self._confirmations

    def confirm(self, from_: str) -> bool:
        """Count a suspect message from ``from_``; True only for a new distinct suspecter while fewer than
        ``k`` confirmations were counted (the caller then re-gossips it), and the deadline moves earlier."""
        if self._confirmations >= self.k or from_ in self._seen:
            return False
        self._seen.add(from_)
        self._confirmations += 1
        frac = math.log(self._confirmations + 1) / math.log(self.k + 1)
        timeout = self.max_timeout - frac * (self.max_timeout - self.min_timeout)
        self._deadline = self.start + max(self.min_timeout, timeout)
        return True


class Awareness:
    """Lifeguard local health: an integer score in ``[0, max_multiplier − 1]`` that stretches probe intervals.

    −1 per successful probe, +1 per failed probe (or + the missing nacks), +1 per refutation; see spec §1.8.
    """

    __slots__ = ("_score", "max_multiplier")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError(f"max_multiplier must be >= 1, got {max_multiplier}")
        self.max_multiplier = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        return self._score

    def apply(self, delta: int) -> None:
        """Add ``delta`` to the score, clamped to ``[0, max_multiplier − 1]``."""
        self._score = min(self.max_multiplier - 1, max(0, self._score + delta))

    def scale(self, interval: float) -> float:
        """``interval × (score + 1)``."""
        return interval * (self._score + 1)
