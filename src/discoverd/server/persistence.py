"""Snapshots of a running node (``--data-dir``): restore at start, save periodically and at stop.

The file side is :class:`~discoverd.server.snapshot.SnapshotStore` (atomic writes, the previous good
snapshot kept, corrupt files set aside); the format is :mod:`discoverd.core.snapshot`. Blocking file
work runs in a thread; encoding runs on the loop (it reads the registry).
"""

from __future__ import annotations

import asyncio
import logging

from discoverd.core.snapshot import encode_snapshot, restore
from discoverd.server.app import ProtocolApp
from discoverd.server.snapshot import SnapshotStore

log = logging.getLogger("discoverd.snapshot")


class Persistence:
    """Owns the snapshot store of one node."""

    def __init__(self, app: ProtocolApp, data_dir: str) -> None:
        self.app = app
        self.store = SnapshotStore(data_dir)
        self.saved_generation = -1
        self.saved_at = 0

    def __repr__(self) -> str:
        return f"<Persistence {self.store.path} saved_at={self.saved_at}>"

    async def restore(self) -> int:
        """Load the newest good snapshot into the (empty) registry; returns how many instances.

        Problems (corrupt or truncated files, which are set aside) are logged, never raised; eviction
        is then held off for one eviction threshold so restored instances can renew.
        """
        snap, problems = await asyncio.to_thread(self.store.load)
        for problem in problems:
            log.warning("snapshot: %s", problem)
        if snap is None:
            return 0
        app = self.app
        now = app.clock()
        count = restore(app.registry, snap, now)
        app.no_evict_until = now + int(app.config.evict_after * 1e9)
        for key in list(app.registry.apps):
            app.changed(key)
        self.saved_generation = app.generation
        log.info(
            "restored %d instance(s) from %s",
            count,
            self.store.path,
            extra={"event": "restore", "count": count, "path": str(self.store.path)},
        )
        return count

    async def save(self, *, force: bool = False) -> bool:
        """Write a snapshot when something changed since the last one (or ``force``)."""
        app = self.app
        if not force and app.generation == self.saved_generation:
            return False
        generation, now = app.generation, app.clock()
        data = encode_snapshot(app.registry, taken_at=now)
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
