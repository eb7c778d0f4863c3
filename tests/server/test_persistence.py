"""Snapshots of a running node: restore after kill -9, graceful-stop save, corrupt files set aside."""

from __future__ import annotations

import time
from pathlib import Path

from discoverd.testing import ServerProcess
from tests.cluster.conftest import eventually, get, hosts, register


def contains(path: Path, needle: bytes) -> bool:
    """Whether the snapshot holds ``needle`` (it is briefly absent while a save swaps files)."""
    try:
        return needle in path.read_bytes()
    except FileNotFoundError:
        return False


ARGS = ["--hostname", "snap", "--env", "dev", "--zone", "sh001", "--snapshot-interval", "0.1"]


def test_restore_after_kill_keeps_instances_and_versions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess([*ARGS, "--data-dir", str(data)]) as srv:
        for i in range(20):
            assert register(srv.addr, f"h{i:02d}", metadata='{"weight":"5"}')["code"] == 0
        before = get(srv.addr, "fetch", env="dev", appid="svc", status="3")["data"]
        snapshot = data / "registry.snapshot"
        eventually(lambda: contains(snapshot, b"h19"), what="snapshot written")
        addr = srv.addr
        srv.kill()
    with ServerProcess(
        [*ARGS, "--data-dir", str(data), "--evict-after", "2", "--evict-interval", "0.2"], addr=addr
    ) as again:
        after = get(again.addr, "fetch", env="dev", appid="svc", status="3")["data"]
        assert after == before  # every field, timestamps and the app version included
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # within one eviction threshold nothing is evicted
            assert len(hosts(again.addr)) == 20
            time.sleep(0.1)


def test_graceful_stop_writes_a_final_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = [*ARGS[:-1], "3600", "--data-dir", str(data)]  # no periodic save: only the one at stop
    with ServerProcess(args) as srv:
        register(srv.addr, "last-words")
        addr = srv.addr
    assert b"last-words" in (data / "registry.snapshot").read_bytes()
    with ServerProcess([*ARGS, "--data-dir", str(data)], addr=addr) as again:
        assert hosts(again.addr) == ["last-words"]


def test_corrupt_snapshot_is_set_aside_and_the_previous_one_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess([*ARGS, "--data-dir", str(data)]) as srv:
        register(srv.addr, "good")
        snapshot = data / "registry.snapshot"
        eventually(lambda: contains(snapshot, b"good"), what="first snapshot")
        register(srv.addr, "newer")
        eventually(lambda: contains(snapshot, b"newer"), what="second snapshot")
        addr = srv.addr
        srv.kill()
    snapshot.write_bytes(snapshot.read_bytes()[:-40])  # truncated, as by a crash mid-copy
    with ServerProcess([*ARGS, "--data-dir", str(data)], addr=addr) as again:
        assert hosts(again.addr) == ["good"]  # the previous good snapshot
        assert len(list(data.glob("registry.snapshot.corrupt-*"))) == 1
        assert "registry.snapshot" in again.stderr_text()  # the problem is reported


def test_garbage_snapshots_never_stop_the_node(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "registry.snapshot").write_bytes(b"\x00garbage")
    (data / "registry.snapshot.prev").write_bytes(b"{}")
    with ServerProcess([*ARGS, "--data-dir", str(data)]) as srv:
        assert hosts(srv.addr) == []
        assert register(srv.addr, "fresh")["code"] == 0
    assert len(list(data.glob("*.corrupt-*"))) == 2
