"""Unit tests of the snapshot codec: exact round trips, truncation and corruption detection (no I/O)."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from discoverd.core.events import Source
from discoverd.core.registry_state import RegistryState
from discoverd.core.snapshot import (
    FORMAT,
    VERSION,
    Snapshot,
    SnapshotApp,
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    restore,
)
from discoverd.errors import DiscoverdError
from discoverd.model import UP, WAITING, Instance

S = 1_000_000_000
T0 = 1_700_000_000 * S
BIG = 2**53 + 1  # not representable as a float: must survive without going through one
I64 = 2**63 - 1
LATEST = T0 + 10 * S + 1  # app version above every instance's, odd: a float would round it


def inst(host: str, *, appid: str = "a", env: str = "dev", zone: str = "z1", **kw: object) -> Instance:
    return Instance(zone=zone, env=env, appid=appid, hostname=host, **kw)  # type: ignore[arg-type]


def fields(ins: Instance) -> tuple[object, ...]:
    return (
        ins.region,
        ins.zone,
        ins.env,
        ins.appid,
        ins.hostname,
        ins.addrs,
        ins.version,
        ins.metadata,
        ins.status,
        ins.reg_timestamp,
        ins.up_timestamp,
        ins.renew_timestamp,
        ins.dirty_timestamp,
        ins.latest_timestamp,
    )


def state(r: RegistryState) -> dict[tuple[str, str], tuple[int, list[tuple[object, ...]]]]:
    """Every field of every instance and each app's version, in registry order."""
    return {key: (app.latest, [fields(i) for i in app.instances()]) for key, app in r.apps.items()}


def sample_registry() -> RegistryState:
    r = RegistryState()
    r.load(
        [
            inst(
                "h1",
                region="sh",
                addrs=["http://10.0.0.1:80", "grpc://10.0.0.1:90"],
                version="v1",
                metadata=None,
                status=UP,
                reg_timestamp=T0,
                up_timestamp=T0 + 1,
                renew_timestamp=BIG,
                dirty_timestamp=T0 + 3,
                latest_timestamp=T0 + 4,
            ),
            inst("h2", metadata={}, status=WAITING, reg_timestamp=I64, latest_timestamp=T0 + 5),
            inst("h3", zone="z2", metadata={"weight": "10", "é": 'ü\n"x"'}, latest_timestamp=T0 + 6),
            inst("h1", appid="b", env="prod", latest_timestamp=T0),
        ],
        T0,
    )
    r.apps[("a", "dev")].latest = LATEST  # cancels bump versions above every instance's
    return r


def restored(data: bytes) -> RegistryState:
    r = RegistryState()
    restore(r, decode_snapshot(data), T0 + 999 * S)
    return r


def seal(*lines: bytes) -> bytes:
    """A file of ``lines`` with a valid trailer: reaches the checks behind the checksum."""
    body = b"".join(line + b"\n" for line in lines)
    return body + orjson.dumps({"end": True, "sha256": hashlib.sha256(body).hexdigest()}) + b"\n"


def header(**kw: object) -> bytes:
    obj = {"format": FORMAT, "version": VERSION, "taken_at": T0, "apps": 1, "instances": 1, **kw}
    return orjson.dumps(obj)


def app_line(*instances: object, appid: str = "a", env: str = "dev", latest: object = T0) -> bytes:
    return orjson.dumps({"appid": appid, "env": env, "latest": latest, "instances": list(instances)})


GOOD = {"zone": "z1", "env": "dev", "appid": "a", "hostname": "h1"}


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_preserves_every_field_metadata_none_vs_empty_and_app_latest() -> None:
    r = sample_registry()
    data = encode_snapshot(r, taken_at=BIG)
    snap = decode_snapshot(data)
    assert snap.taken_at == BIG
    assert [(a.appid, a.env) for a in snap.apps] == [("a", "dev"), ("b", "prod")]
    back = restored(data)
    assert state(back) == state(r)
    got = back.get("a", "dev", "z1", "h1")
    other = back.get("a", "dev", "z1", "h2")
    assert got is not None and other is not None
    assert got.metadata is None and other.metadata == {}
    assert got.renew_timestamp == BIG and other.reg_timestamp == I64
    assert back.app("a", "dev").latest == LATEST  # type: ignore[union-attr]
    assert back.size == r.size == 4


def test_encoding_does_not_change_the_registry_and_is_deterministic() -> None:
    r = sample_registry()
    before = state(r)
    assert encode_snapshot(r, taken_at=T0) == encode_snapshot(r, taken_at=T0)
    assert state(r) == before


def test_empty_registry_round_trips() -> None:
    snap = decode_snapshot(encode_snapshot(RegistryState(), taken_at=T0))
    assert snap == Snapshot(taken_at=T0, apps=[])
    assert restore(RegistryState(), snap, T0).count == 0


def test_snapshot_format_is_json_lines_with_header_and_checksummed_trailer() -> None:
    data = encode_snapshot(sample_registry(), taken_at=T0)
    lines = data.split(b"\n")
    assert lines[-1] == b""
    assert orjson.loads(lines[0]) == {
        "format": "discoverd-snapshot",
        "version": 1,
        "taken_at": T0,
        "apps": 2,
        "instances": 4,
    }
    trailer = orjson.loads(lines[-2])
    body = b"".join(line + b"\n" for line in lines[:-2])
    assert trailer == {"end": True, "sha256": hashlib.sha256(body).hexdigest()}
    assert orjson.loads(lines[1])["instances"][0]["metadata"] is None


def test_restore_returns_count_copies_instances_and_can_run_twice() -> None:
    snap = decode_snapshot(encode_snapshot(sample_registry(), taken_at=T0))
    r1, r2 = RegistryState(), RegistryState()
    assert restore(r1, snap, T0).count == 4
    stored = r1.get("a", "dev", "z1", "h1")
    assert stored is not None
    stored.addrs.append("mutated")
    assert restore(r2, snap, T0).count == 4
    assert state(r2) == state(sample_registry())
    assert r2.guard.expected == 8  # restored instances count toward self-preservation


def test_restore_into_existing_app_never_lowers_its_version() -> None:
    snap = decode_snapshot(encode_snapshot(sample_registry(), taken_at=T0))
    r = RegistryState()
    r.register(inst("h9", appid="b", env="prod"), T0 + 100 * S)
    live = r.apps[("b", "prod")]
    loaded = restore(r, snap, T0 + 100 * S)
    assert ("b", "prod") in loaded.apps and loaded.source is Source.SNAPSHOT
    assert live.latest > T0 + 100 * S  # bumped by the load, above the stored T0
    r2 = RegistryState()
    r2.register(inst("h9"), T0)
    restore(r2, snap, T0)
    assert r2.app("a", "dev").latest == LATEST  # type: ignore[union-attr]


def test_restore_of_a_new_app_keeps_stored_latest_even_with_equal_instance_versions() -> None:
    # apply_set gives several instances the same latest_timestamp; load alone would bump past it
    r = RegistryState()
    r.load([inst(f"h{n}", latest_timestamp=T0) for n in range(3)], T0)
    r.apps[("a", "dev")].latest = T0 + 1
    back = restored(encode_snapshot(r, taken_at=T0))
    assert back.app("a", "dev").latest == T0 + 1  # type: ignore[union-attr]


def test_restore_raises_app_latest_to_newest_instance_when_snapshot_holds_a_lower_one() -> None:
    ins = {**GOOD, "latest_timestamp": T0 + 50}
    snap = decode_snapshot(seal(header(), app_line(ins, latest=T0)))
    r = RegistryState()
    restore(r, snap, T0)
    assert r.app("a", "dev").latest == T0 + 50  # type: ignore[union-attr]


def test_encode_refuses_integers_beyond_64_bits() -> None:
    r = RegistryState()
    r.load([inst("h1", renew_timestamp=2**64)], T0)
    with pytest.raises(SnapshotError, match="cannot encode"):
        encode_snapshot(r, taken_at=T0)


# -- damage detection -------------------------------------------------------------------------


def small_snapshot() -> bytes:
    r = RegistryState()
    r.load([inst("h1", metadata={"k": "v"}, latest_timestamp=T0), inst("h2", appid="b")], T0)
    return encode_snapshot(r, taken_at=T0)


def test_empty_file_is_an_error() -> None:
    with pytest.raises(SnapshotError, match="empty"):
        decode_snapshot(b"")


def test_truncation_at_every_byte_offset_is_detected() -> None:
    data = small_snapshot()
    for cut in range(len(data)):
        with pytest.raises(SnapshotError):
            decode_snapshot(data[:cut])
    assert decode_snapshot(data).instance_count == 2


def test_truncation_after_a_complete_line_reports_missing_trailer() -> None:
    data = small_snapshot()
    cut = data.rindex(b"\n", 0, len(data) - 1) + 1  # drop the whole trailer line
    with pytest.raises(SnapshotError, match="truncated"):
        decode_snapshot(data[:cut])


def test_every_single_bit_flip_is_detected() -> None:
    data = small_snapshot()
    for pos in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << bit
            with pytest.raises(SnapshotError):
                decode_snapshot(bytes(damaged))


def test_flip_in_an_app_line_reports_checksum_mismatch() -> None:
    data = bytearray(small_snapshot())
    data[data.index(b'"h1"') + 1] = ord("x")
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        decode_snapshot(bytes(data))


@pytest.mark.parametrize("version", [0, 2, "1", True, None])
def test_wrong_version_is_refused_by_name(version: object) -> None:
    data = seal(header(version=version), app_line(GOOD))
    with pytest.raises(SnapshotError, match="unsupported snapshot version"):
        decode_snapshot(data)


def test_future_version_with_another_layout_is_refused_by_version_not_as_corrupt() -> None:
    data = orjson.dumps({"format": FORMAT, "version": 2}) + b"\nsomething else entirely"
    with pytest.raises(SnapshotError, match="unsupported snapshot version 2"):
        decode_snapshot(data)


def test_foreign_file_is_refused() -> None:
    with pytest.raises(SnapshotError, match="not a discoverd snapshot"):
        decode_snapshot(seal(b'{"format":"etcd","version":1}'))
    with pytest.raises(SnapshotError):
        decode_snapshot(b"hello\nworld\n")


def test_bad_json_behind_a_valid_checksum_is_reported() -> None:
    with pytest.raises(SnapshotError, match="line 2: bad JSON"):
        decode_snapshot(seal(header(), b'{"appid":'))
    with pytest.raises(SnapshotError, match="header: bad JSON"):
        decode_snapshot(seal(b"{nope", app_line(GOOD)))


@pytest.mark.parametrize(
    "bad",
    [
        {**GOOD, "status": "up"},
        {**GOOD, "addrs": "http://x"},
        {**GOOD, "metadata": {"k": 1}},
        {**GOOD, "hostname": 5},
        "not an object",
    ],
)
def test_malformed_instance_is_a_snapshot_error(bad: object) -> None:
    with pytest.raises(SnapshotError, match="instance 0") as info:
        decode_snapshot(seal(header(), app_line(bad)))
    assert isinstance(info.value, DiscoverdError)


def test_instance_of_another_app_is_refused() -> None:
    with pytest.raises(SnapshotError, match="belongs to"):
        decode_snapshot(seal(header(), app_line({**GOOD, "appid": "other"})))


@pytest.mark.parametrize(
    "line",
    [b"[]", app_line(GOOD, latest="1"), app_line(GOOD, latest=True), app_line(GOOD, appid=None)],  # type: ignore[arg-type]
)
def test_malformed_app_line_is_refused(line: bytes) -> None:
    with pytest.raises(SnapshotError, match="line 2"):
        decode_snapshot(seal(header(), line))


@pytest.mark.parametrize(
    ("head", "apps"),
    [
        (header(apps=2), [app_line(GOOD)]),
        (header(instances=2), [app_line(GOOD)]),
        (header(apps=0, instances=0), [app_line(GOOD)]),
    ],
)
def test_counts_not_matching_the_header_are_refused(head: bytes, apps: list[bytes]) -> None:
    with pytest.raises(SnapshotError, match="header announces"):
        decode_snapshot(seal(head, *apps))


def test_header_fields_must_be_integers() -> None:
    with pytest.raises(SnapshotError, match="taken_at must be an integer"):
        decode_snapshot(seal(header(taken_at=1.5), app_line(GOOD)))


def test_duplicates_are_refused() -> None:
    with pytest.raises(SnapshotError, match="appears twice"):
        decode_snapshot(seal(header(apps=2, instances=2), app_line(GOOD), app_line({**GOOD, "zone": "z2"})))
    with pytest.raises(SnapshotError, match="appears twice"):
        decode_snapshot(seal(header(instances=2), app_line(GOOD, GOOD)))


def test_trailer_with_extra_or_missing_keys_is_refused() -> None:
    body = header() + b"\n" + app_line(GOOD) + b"\n"
    digest = hashlib.sha256(body).hexdigest()
    for trailer in ({"end": True}, {"end": True, "sha256": digest, "x": 1}, {"end": True, "sha256": 1}):
        with pytest.raises(SnapshotError, match="trailer is malformed"):
            decode_snapshot(body + orjson.dumps(trailer) + b"\n")
    assert decode_snapshot(seal(header(), app_line(GOOD))).instance_count == 1


def test_snapshot_repr_is_informative() -> None:
    snap = Snapshot(taken_at=5, apps=[SnapshotApp("a", "dev", 1, [inst("h1")])])
    assert repr(snap) == "Snapshot(taken_at=5, apps=1, instances=1)"


# -- property ---------------------------------------------------------------------------------

text = st.text(max_size=8)
ns = st.integers(min_value=-(2**63), max_value=2**63 - 1)
instances = st.builds(
    Instance,
    region=text,
    zone=st.sampled_from(["z1", "z2", ""]),
    env=st.sampled_from(["dev", "prod"]),
    appid=st.sampled_from(["a", "b", "infra.discovery", "ü"]),
    hostname=text,
    addrs=st.lists(text, max_size=3),
    version=text,
    metadata=st.none() | st.dictionaries(text, text, max_size=3),
    status=st.sampled_from([UP, WAITING]),
    reg_timestamp=ns,
    up_timestamp=ns,
    renew_timestamp=ns,
    dirty_timestamp=ns,
    latest_timestamp=ns,
)


@given(st.lists(instances, max_size=12), st.dictionaries(st.sampled_from(["a", "b"]), ns), ns)
def test_random_registries_round_trip(batch: list[Instance], latests: dict[str, int], taken_at: int) -> None:
    r = RegistryState()
    r.load(batch, T0)
    for (appid, _), app in r.apps.items():
        app.latest = max(app.latest, latests.get(appid, app.latest))
    data = encode_snapshot(r, taken_at=taken_at)
    snap = decode_snapshot(data)
    assert snap.taken_at == taken_at
    assert snap.instance_count == r.size
    assert state(restored(data)) == state(r)
