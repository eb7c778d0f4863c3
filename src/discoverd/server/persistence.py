"""Snapshots of a running node (``--data-dir``): restore at start, save periodically and at stop.

The file side is :class:`~discoverd.server.snapshot.SnapshotStore` (atomic writes, the previous good
snapshot kept, corrupt files set aside); the format is :mod:`discoverd.core.snapshot`. Blocking file
work runs in a thread; encoding runs on the loop (it reads the registry). As a subscriber of the
registry's content events, :class:`Persistence` only writes when something changed since the last
snapshot (renews alone do not count: restored instances get one eviction threshold to renew).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import ClassVar

from discoverd.core.events import CONTENT, Event, Loaded
from discoverd.core.registry_state import RegistryState
from discoverd.core.snapshot import encode_snapshot, restore
from discoverd.server.snapshot import SnapshotStore

log = logging.getLogger("discoverd.snapshot")


class Persistence:
    """Owns the snapshot store of one node; counts content changes as a subscriber."""

    kinds: ClassVar[tuple[type[Event], ...]] = CONTENT

    def __init__(self, registry: RegistryState, data_dir: str, *, clock: Callable[[], int]) -> None:
        self.registry = registry
        self.clock = clock
        self.store = SnapshotStore(data_dir)
        self.generation = 0
        """Incremented on every content change."""
        self.saved_generation = -1
        self.saved_at = 0

    def __repr__(self) -> str:
        return f"<Persistence {self.store.path} saved_at={self.saved_at}>"

    @property
    def unsaved(self) -> bool:
        """Whether the registry changed since the last snapshot."""
        return self.generation != self.saved_generation

    def on_event(self, event: Event) -> None:
        self.generation += 1

    async def restore(self) -> Loaded | None:
        """Load the newest good snapshot into the (empty) registry; the caller publishes the event.

        Problems (corrupt or truncated files, which are set aside) are logged, never raised.
        """
        snap, problems = await asyncio.to_thread(self.store.load)
        for problem in problems:
            log.warning("snapshot: %s", problem)
        if snap is None:
            return None
        loaded = restore(self.registry, snap, self.clock())
        log.info(
            "restored %d instance(s) from %s",
            loaded.count,
            self.store.path,
            extra={"event": "restore", "count": loaded.count, "path": str(self.store.path)},
        )
        return loaded

    def mark_saved(self) -> None:
        """What is in the registry now is what the snapshot holds (right after a restore)."""
        self.saved_generation = self.generation

    async def save(self, *, force: bool = False) -> bool:
        """Write a snapshot when something changed since the last one (or ``force``)."""
        if not force and not self.unsaved:
            return False
        generation, now = self.generation, self.clock()
        data = encode_snapshot(self.registry, taken_at=now)
        try:
            await asyncio.to_thread(self.store.save, data)
        except OSError as exc:
            log.error("snapshot not written: %s", exc)
            return False
        self.saved_generation, self.saved_at = generation, now
        return True

    async def run(self, interval: float) -> None:
        """Save every ``interval`` seconds while something changed, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.save()
