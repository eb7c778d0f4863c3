"""Snapshot files in the data directory (``--data-dir``): atomic saves, fallback, corrupt files set aside.

Layout of ``DIR``:

* ``registry.snapshot`` — the newest snapshot;
* ``registry.snapshot.prev`` — the one before it (so one good snapshot survives a bad newest one);
* ``registry.snapshot.<random>.tmp`` — a save in progress (left over only by a crash; removed by
  :meth:`SnapshotStore.load`);
* ``<name>.corrupt-<unix ns>`` — a file that failed to decode, set aside for inspection, never deleted.

Every method is synchronous and blocking (file I/O, fsync): call it through ``asyncio.to_thread``.
One :class:`SnapshotStore` per directory and one call at a time: two servers must not share a data
directory (nothing locks it).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from discoverd.core.snapshot import Snapshot, SnapshotError, decode_snapshot

SNAPSHOT_NAME = "registry.snapshot"
TEMP_SUFFIX = ".tmp"


class SnapshotStore:
    """The snapshot files of one data directory, which is created (with parents) if missing.

    Raises :class:`OSError` from the constructor if the directory cannot be created.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / SNAPSHOT_NAME
        self.prev = self.dir / (SNAPSHOT_NAME + ".prev")

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.dir)!r})"

    def save(self, data: bytes) -> None:
        """Write ``data`` as the newest snapshot, atomically and durably; blocks.

        The bytes go to a temporary file in the directory, which is flushed and fsynced; then the
        current snapshot (if any) becomes ``prev`` and the temporary file becomes current, and the
        directory is fsynced. A crash at any point leaves the previous good snapshot in place (as
        current or as ``prev``). Raises :class:`OSError` (disk full, permissions); the temporary
        file is removed on failure.
        """
        fd, name = tempfile.mkstemp(prefix=SNAPSHOT_NAME + ".", suffix=TEMP_SUFFIX, dir=self.dir)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if self.path.exists():
                os.replace(self.path, self.prev)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir()

    def load(self) -> tuple[Snapshot | None, list[str]]:
        """The newest snapshot that decodes, trying current then ``prev``; and the problems met.

        Meant for start-up, before any :meth:`save`. Leftover temporary files of a crashed save are
        removed. A file that fails to decode is renamed to ``<name>.corrupt-<unix ns>`` (never
        deleted) and described in the returned list of human-readable problems, which the caller
        logs. Returns ``(None, problems)`` when no usable snapshot exists (``problems`` is empty on
        a first start). Never raises for bad content; raises :class:`OSError` when the directory or
        a snapshot file cannot be read, or a corrupt file cannot be renamed.
        """
        self._remove_temp_files()
        problems: list[str] = []
        for path in (self.path, self.prev):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                return decode_snapshot(data), problems
            except SnapshotError as e:
                aside = self._set_aside(path)
                problems.append(f"{path}: {e}; moved aside to {aside.name}")
        return None, problems

    def _remove_temp_files(self) -> None:
        for tmp in self.dir.glob(SNAPSHOT_NAME + ".*" + TEMP_SUFFIX):
            tmp.unlink(missing_ok=True)

    def _set_aside(self, path: Path) -> Path:
        ns = time.time_ns()
        while (aside := path.with_name(f"{path.name}.corrupt-{ns}")).exists():
            ns += 1
        path.rename(aside)
        return aside

    def _fsync_dir(self) -> None:
        """Make the renames durable. Windows cannot open a directory for fsync (nor needs to)."""
        if sys.platform == "win32":
            return
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
