"""Tests of the snapshot files: atomic saves keep the previous one, corrupt files are set aside."""

from __future__ import annotations

from pathlib import Path

import pytest

from discoverd.core.registry_state import RegistryState
from discoverd.core.snapshot import encode_snapshot
from discoverd.model import Instance
from discoverd.server.snapshot import SnapshotStore

T0 = 1_700_000_000 * 1_000_000_000


def snapshot_bytes(*hosts: str, taken_at: int = T0) -> bytes:
    r = RegistryState()
    r.load([Instance(zone="z1", env="dev", appid="a", hostname=h, latest_timestamp=T0) for h in hosts], T0)
    return encode_snapshot(r, taken_at=taken_at)


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def corrupt_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.corrupt-*"))


def test_missing_directory_is_created_with_parents(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "data"
    store = SnapshotStore(str(d))
    assert d.is_dir()
    assert store.path == d / "registry.snapshot"
    assert store.prev == d / "registry.snapshot.prev"
    assert repr(store) == f"SnapshotStore({str(d)!r})"


def test_first_start_loads_nothing_and_reports_no_problem(tmp_path: Path) -> None:
    assert SnapshotStore(tmp_path).load() == (None, [])


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    data = snapshot_bytes("h1", "h2")
    store.save(data)
    assert store.path.read_bytes() == data
    assert not store.prev.exists()
    snap, problems = SnapshotStore(tmp_path).load()
    assert problems == []
    assert snap is not None and snap.instance_count == 2


def test_atomic_save_keeps_the_previous_snapshot_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    first, second, third = snapshot_bytes("h1"), snapshot_bytes("h1", "h2"), snapshot_bytes("h3")
    store.save(first)
    store.save(second)
    assert (store.path.read_bytes(), store.prev.read_bytes()) == (second, first)
    store.save(third)
    assert (store.path.read_bytes(), store.prev.read_bytes()) == (third, second)
    assert names(tmp_path) == ["registry.snapshot", "registry.snapshot.prev"]


def test_failed_save_removes_its_temp_file_and_keeps_the_current_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    good = snapshot_bytes("h1")
    store.save(good)
    with pytest.raises(TypeError):
        store.save("not bytes")  # type: ignore[arg-type]
    assert store.path.read_bytes() == good
    assert names(tmp_path) == ["registry.snapshot"]


def test_corrupt_current_falls_back_to_prev_and_sets_the_corrupt_file_aside(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(snapshot_bytes("old", taken_at=T0))
    store.save(snapshot_bytes("new", "new2", taken_at=T0 + 1))
    damaged = store.path.read_bytes()[:-10]  # a torn write
    store.path.write_bytes(damaged)
    snap, problems = store.load()
    assert snap is not None and snap.taken_at == T0
    assert len(problems) == 1
    assert "registry.snapshot:" in problems[0] and "truncated" in problems[0]
    [aside] = corrupt_files(tmp_path)
    assert aside.name.startswith("registry.snapshot.corrupt-")
    assert aside.name in problems[0]
    assert aside.read_bytes() == damaged  # kept for inspection, never deleted
    assert not store.path.exists() and store.prev.exists()


def test_both_corrupt_gives_none_and_two_problems(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.path.write_bytes(b"")
    store.prev.write_bytes(b"garbage\n")
    snap, problems = store.load()
    assert snap is None
    assert len(problems) == 2
    assert "empty" in problems[0] and "registry.snapshot.prev:" in problems[1]
    assert len(corrupt_files(tmp_path)) == 2
    assert not store.path.exists() and not store.prev.exists()
    assert store.load() == (None, [])  # set aside once, not reported again


def test_missing_current_with_good_prev_loads_prev(tmp_path: Path) -> None:
    # a crash between the two renames of a save leaves only prev (and the new temp file)
    store = SnapshotStore(tmp_path)
    store.prev.write_bytes(snapshot_bytes("h1"))
    snap, problems = store.load()
    assert problems == [] and snap is not None and snap.instance_count == 1


def test_leftover_temp_file_from_a_crashed_save_is_ignored_and_cleaned(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    good = snapshot_bytes("h1")
    store.save(good)
    leftover = tmp_path / "registry.snapshot.k2j4h5.tmp"
    leftover.write_bytes(good[:20])
    snap, problems = store.load()
    assert snap is not None and problems == []
    assert not leftover.exists()
    assert names(tmp_path) == ["registry.snapshot"]


def test_save_after_a_corrupt_file_works_and_keeps_the_good_prev(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    good = snapshot_bytes("h1")
    store.save(good)
    store.save(snapshot_bytes("h2"))
    store.path.write_bytes(b"\x00" * 100)  # corrupted on disk
    snap, _ = store.load()
    assert snap is not None
    newer = snapshot_bytes("h3", taken_at=T0 + 5)
    store.save(newer)
    assert store.path.read_bytes() == newer
    assert store.prev.read_bytes() == good  # the corrupt file never became prev
    snap, problems = SnapshotStore(tmp_path).load()
    assert problems == [] and snap is not None and snap.taken_at == T0 + 5
    assert len(corrupt_files(tmp_path)) == 1


def test_corrupt_file_names_never_collide(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for _ in range(3):
        store.path.write_bytes(b"bad")
        store.load()
    assert len(corrupt_files(tmp_path)) == 3


def test_unreadable_snapshot_raises_oserror(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.path.mkdir()  # not a readable file: an operator problem, not bad content
    with pytest.raises(OSError):
        store.load()
