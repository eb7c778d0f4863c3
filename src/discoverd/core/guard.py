"""The renew-threshold guard, a.k.a. self-preservation (spec §5.2, §12.13).

Eviction is suspended (only instances silent past the one-hour ceiling are evicted) while the renews
counted in the last window fall below ``floor(expected × threshold)``, with ``expected`` = 2 renews per
instance per window. State:

* ``expected`` — renews expected per window: +2 per new instance, -2 per explicit cancel, recounted
  from the instance count every 15 minutes (evictions only lower it at the recount);
* ``this_window`` / ``last_window`` — renews counted in the current and the previous window;
* ``protecting`` — evaluated once per window, no hysteresis.
"""

from __future__ import annotations

from dataclasses import dataclass

from discoverd.core.events import GuardChanged

RENEWS_PER_INSTANCE = 2


@dataclass(slots=True)
class Guard:
    """Counts renews and decides whether eviction is suspended. Pure bookkeeping, no clock."""

    threshold: float = 0.85
    expected: int = 0
    this_window: int = 0
    last_window: int = 0
    protecting: bool = False

    @property
    def needed(self) -> int:
        """Renews needed per window to stay out of protection: ``floor(expected × threshold)``."""
        return int(self.expected * self.threshold)

    def instance_added(self) -> None:
        self.expected += RENEWS_PER_INSTANCE

    def instance_cancelled(self) -> None:
        if self.expected > 0:
            self.expected -= RENEWS_PER_INSTANCE

    def renewed(self) -> None:
        self.this_window += 1

    def recount(self, instances: int) -> None:
        """The periodic recount: ``expected = 2 × instances``."""
        self.expected = RENEWS_PER_INSTANCE * instances

    def close_window(self) -> bool:
        """End the current window; returns (and stores) whether eviction is now suspended."""
        self.last_window, self.this_window = self.this_window, 0
        self.protecting = self.last_window < self.needed
        return self.protecting

    def end_window(self) -> GuardChanged | None:
        """:meth:`close_window`, and the event when self-preservation switched on or off."""
        before = self.protecting
        if self.close_window() == before:
            return None
        return GuardChanged(self.protecting, self.last_window, self.needed, self.expected)
