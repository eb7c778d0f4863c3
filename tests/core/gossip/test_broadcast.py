"""Unit tests of the memberlist TransmitLimitedQueue port (spec §1.10). No event loop."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip.broadcast import TransmitLimitedQueue, retransmit_limit
from discoverd.core.gossip.config import GossipConfig

# memberlist's queue tests use four 18-byte messages.
M1, M2, M3, M4 = (f"{i}. this is a test.".encode() for i in range(1, 5))


class Done:
    """Records on_done calls by label."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, label: str) -> Callable[[], None]:
        return lambda: self.calls.append(label)


def make_queue(mult: int = 1, nodes: int = 10) -> TransmitLimitedQueue:
    return TransmitLimitedQueue(mult, lambda: nodes)


# -- retransmit_limit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mult", "nodes", "expected"),
    [
        (4, 3, 4),  # LAN, 3 nodes
        (2, 3, 2),  # Local, 3 nodes
        (4, 0, 0),  # nobody else → sent once
        (4, 1, 4),
        (3, 9, 3),
        (3, 10, 6),
        (3, 99, 6),
        (3, 100, 9),
        (1, 999, 3),
        (1, 1000, 4),
        (0, 50, 0),
        (4, -1, 0),
    ],
)
def test_retransmit_limit_examples(mult: int, nodes: int, expected: int) -> None:
    assert retransmit_limit(mult, nodes) == expected


def test_retransmit_limit_matches_the_go_float_formula() -> None:
    for n in range(20_000):
        assert retransmit_limit(3, n) == 3 * math.ceil(math.log10(n + 1)), n


def test_retransmit_limit_from_the_presets() -> None:
    assert retransmit_limit(GossipConfig.lan().retransmit_mult, 3) == 4
    assert retransmit_limit(GossipConfig.local().retransmit_mult, 3) == 2
    assert retransmit_limit(GossipConfig.wan().retransmit_mult, 3) == 4


# -- selection order -------------------------------------------------------------------------------------


def test_all_fit_with_overhead_2_but_only_three_with_overhead_3() -> None:
    # memberlist TestTransmitLimited_GetBroadcasts
    q = make_queue(mult=3, nodes=10)
    for m in (M1, M2, M3, M4):
        q.queue(m)
    assert q.get_broadcasts(2, 80) == [M4, M3, M2, M1]  # 4 × (18 + 2) = 80 fits exactly
    assert len(q.get_broadcasts(3, 80)) == 3


def test_tiers_and_retransmit_limit_sequence() -> None:
    # memberlist TestTransmitLimited_GetBroadcasts_Limit: limit = 1 × ceil(log10(11)) = 2
    done = Done()
    q = make_queue(mult=1, nodes=10)
    for label, m in zip("1234", (M1, M2, M3, M4), strict=True):
        q.queue(m, name=label, on_done=done(label))
    assert q.get_broadcasts(3, 80) == [M4, M3, M2]  # newest first among equal sizes
    assert done.calls == []
    assert q.get_broadcasts(3, 80) == [M1, M4, M3]  # untransmitted tier first, then tier 1 newest first
    assert sorted(done.calls) == ["3", "4"]
    assert len(q) == 2
    assert q.get_broadcasts(3, 80) == [M2, M1]
    assert sorted(done.calls) == ["1", "2", "3", "4"]
    assert len(q) == 0
    assert q.get_broadcasts(3, 80) == []


def test_largest_that_fits_is_picked_first() -> None:
    q = make_queue()
    small, medium, large = b"s" * 5, b"m" * 20, b"l" * 50
    for m in (medium, large, small):
        q.queue(m)
    assert q.get_broadcasts(0, 1000) == [large, medium, small]


def test_skips_what_does_not_fit_and_keeps_filling() -> None:
    q = make_queue()
    big, mid, tiny = b"b" * 60, b"m" * 30, b"t" * 8
    for m in (big, mid, tiny):
        q.queue(m)
    # 45 bytes: big never fits, mid (30 + 1) fits, then 14 left: tiny (8 + 1) fits.
    assert q.get_broadcasts(1, 45) == [mid, tiny]
    assert q.get_broadcasts(1, 200) == [big, mid, tiny]


def test_boundary_message_plus_overhead_equal_to_limit_fits() -> None:
    q = make_queue()
    q.queue(b"x" * 10)
    assert q.get_broadcasts(5, 14) == []
    assert q.get_broadcasts(5, 15) == [b"x" * 10]


def test_no_space_at_all_returns_nothing_and_counts_nothing() -> None:
    done = Done()
    q = make_queue(mult=1, nodes=0)  # limit 0: the first send retires it
    q.queue(b"abc", on_done=done("a"))
    assert q.get_broadcasts(10, 10) == []
    assert q.get_broadcasts(0, 0) == []
    assert q.get_broadcasts(0, -5) == []
    assert done.calls == []
    assert len(q) == 1


def test_lower_tier_wins_over_larger_higher_tier_entry() -> None:
    q = make_queue(mult=3, nodes=10)  # limit 6
    old = b"o" * 40
    q.queue(old)
    assert q.get_broadcasts(0, 100) == [old]
    fresh = b"f" * 10
    q.queue(fresh)
    # 45 bytes: fresh (tier 0) first, then old (tier 1) does not fit in the 35 left.
    assert q.get_broadcasts(0, 45) == [fresh]
    assert q.get_broadcasts(0, 100) == [old, fresh]  # both in tier 1 now: the larger first


def test_falls_through_to_the_next_tier_when_nothing_fits() -> None:
    q = make_queue(mult=3, nodes=10)
    small_old = b"a" * 5
    q.queue(small_old)
    assert q.get_broadcasts(0, 100) == [small_old]  # now in tier 1
    big_new = b"b" * 90
    q.queue(big_new)
    assert q.get_broadcasts(0, 50) == [small_old]  # tier 0 has nothing that fits
    assert q.get_broadcasts(0, 94) == [big_new]  # tier 0 (big_new), then 4 bytes: no room for small_old
    assert q.get_broadcasts(0, 100) == [big_new, small_old]  # tier 1, then tier 2


def test_an_entry_is_picked_at_most_once_per_call() -> None:
    q = make_queue(mult=4, nodes=100)
    q.queue(b"only")
    assert q.get_broadcasts(0, 10_000) == [b"only"]


def test_limit_zero_sends_exactly_once() -> None:
    done = Done()
    q = make_queue(mult=4, nodes=0)
    q.queue(b"hello", on_done=done("h"))
    assert q.get_broadcasts(2, 100) == [b"hello"]
    assert done.calls == ["h"]
    assert len(q) == 0
    assert q.get_broadcasts(2, 100) == []


def test_entry_retires_after_exactly_limit_sends_lan_three_nodes() -> None:
    done = Done()
    q = TransmitLimitedQueue(GossipConfig.lan().retransmit_mult, lambda: 3)
    q.queue(b"alive", on_done=done("x"))
    sends = 0
    while q.get_broadcasts(0, 100):
        sends += 1
        assert done.calls == ([] if sends < 4 else ["x"])
    assert sends == 4


def test_num_nodes_is_read_at_every_call() -> None:
    nodes = [1000]  # limit 3
    q = TransmitLimitedQueue(1, lambda: nodes[0])
    q.queue(b"m")
    assert q.get_broadcasts(0, 10) == [b"m"]
    assert q.get_broadcasts(0, 10) == [b"m"]
    nodes[0] = 5  # limit 1: the entry (count 2) retires on its next send
    assert q.get_broadcasts(0, 10) == [b"m"]
    assert len(q) == 0


def test_negative_mult_is_rejected() -> None:
    with pytest.raises(ValueError, match="retransmit_mult"):
        TransmitLimitedQueue(-1, lambda: 3)


# -- invalidation ----------------------------------------------------------------------------------------


def test_named_entry_replaces_the_queued_one_and_calls_its_on_done() -> None:
    done = Done()
    q = make_queue(mult=3, nodes=10)
    q.queue(b"suspect n1", name="n1", on_done=done("old"))
    q.queue(b"alive n2", name="n2", on_done=done("n2"))
    assert q.get_broadcasts(0, 1000) == [b"suspect n1", b"alive n2"]
    q.queue(b"dead n1!", name="n1", on_done=done("new"))
    assert done.calls == ["old"]
    assert len(q) == 2
    # the replacement starts at transmit count 0, so it goes before n2 (count 1)
    assert q.get_broadcasts(0, 12) == [b"dead n1!"]


def test_named_replacement_after_retirement_does_not_call_on_done_twice() -> None:
    done = Done()
    q = make_queue(mult=1, nodes=0)
    q.queue(b"a", name="n", on_done=done("a"))
    assert q.get_broadcasts(0, 10) == [b"a"]
    q.queue(b"b", name="n", on_done=done("b"))
    assert done.calls == ["a"]
    assert q.get_broadcasts(0, 10) == [b"b"]
    assert done.calls == ["a", "b"]


def test_unique_and_unnamed_entries_are_never_invalidated() -> None:
    done = Done()
    q = make_queue()
    q.queue(b"u1", unique=True, on_done=done("u1"))
    q.queue(b"u1", unique=True, on_done=done("u2"))
    q.queue(b"plain", on_done=done("p1"))
    q.queue(b"plain", on_done=done("p2"))
    q.queue(b"named", name="x", on_done=done("x"))
    assert done.calls == []
    assert len(q) == 5


def test_empty_name_means_unnamed() -> None:
    q = make_queue()
    q.queue(b"a", name="")
    q.queue(b"b", name="")
    assert len(q) == 2


def test_named_and_unique_together_is_an_error() -> None:
    q = make_queue()
    with pytest.raises(ValueError, match="named or unique"):
        q.queue(b"a", name="n", unique=True)
    assert len(q) == 0


def test_on_done_may_reenter_the_queue() -> None:
    q = make_queue(mult=1, nodes=0)
    q.queue(b"first", name="n", on_done=lambda: q.queue(b"second", name="n"))
    assert q.get_broadcasts(0, 100) == [b"first"]
    assert len(q) == 1
    assert q.get_broadcasts(0, 100) == [b"second"]
    assert len(q) == 0


# -- prune -----------------------------------------------------------------------------------------------


def test_prune_keeps_the_newest() -> None:
    # memberlist TestTransmitLimited_Prune
    done = Done()
    q = make_queue()
    for label, m in zip("1234", (M1, M2, M3, M4), strict=True):
        q.queue(m, name=label, on_done=done(label))
    q.prune(2)
    assert len(q) == 2
    assert done.calls == ["1", "2"]
    assert q.get_broadcasts(0, 1000) == [M4, M3]


def test_prune_drops_most_transmitted_then_smallest_first() -> None:
    done = Done()
    q = make_queue(mult=5, nodes=10)
    q.queue(b"x" * 30, on_done=done("sent-big"))
    q.queue(b"y" * 10, on_done=done("sent-small"))
    assert len(q.get_broadcasts(0, 1000)) == 2
    q.queue(b"z" * 5, on_done=done("fresh-old"))
    q.queue(b"w" * 5, on_done=done("fresh-new"))
    q.prune(3)
    assert done.calls == ["sent-small"]
    q.prune(1)
    assert done.calls == ["sent-small", "sent-big", "fresh-old"]
    assert q.get_broadcasts(0, 1000) == [b"w" * 5]


def test_prune_no_op_and_to_zero() -> None:
    done = Done()
    q = make_queue()
    q.queue(b"a", on_done=done("a"))
    q.queue(b"b", on_done=done("b"))
    q.prune(5)
    assert done.calls == []
    q.prune(0)
    assert sorted(done.calls) == ["a", "b"]
    assert len(q) == 0
    q.prune(-1)
    assert q.get_broadcasts(0, 100) == []


def test_prune_forgets_names() -> None:
    done = Done()
    q = make_queue()
    q.queue(b"a", name="n", on_done=done("a"))
    q.prune(0)
    q.queue(b"b", name="n", on_done=done("b"))
    assert done.calls == ["a"]
    assert len(q) == 1


def test_many_entries() -> None:
    q = make_queue(mult=4, nodes=50)  # limit 8
    for i in range(5000):
        q.queue(f"msg-{i:05d}".encode() + b"." * (i % 40), name=f"n{i % 3000}")
    assert len(q) == 3000
    sent: Counter[bytes] = Counter()
    while batch := q.get_broadcasts(2, 1398):
        assert sum(len(m) + 2 for m in batch) <= 1398
        sent.update(batch)
    assert len(sent) == 3000
    assert set(sent.values()) == {8}


# -- property test against a naive model -----------------------------------------------------------------


@dataclass
class _ModelEntry:
    msg: bytes
    id: int
    name: str | None
    transmits: int = 0


@dataclass
class _Model:
    """The selection rules written the obvious O(n²) way."""

    mult: int
    nodes: int
    entries: list[_ModelEntry] = field(default_factory=list)
    next_id: int = 0
    done: list[bytes] = field(default_factory=list)

    def queue(self, msg: bytes, name: str | None) -> None:
        if name:
            for e in [e for e in self.entries if e.name == name]:
                self.entries.remove(e)
                self.done.append(e.msg)
        self.next_id += 1
        self.entries.append(_ModelEntry(msg, self.next_id, name or None))

    def get(self, overhead: int, limit: int) -> list[bytes]:
        lim = retransmit_limit(self.mult, self.nodes)
        used, picked = 0, []
        candidates = list(self.entries)
        while True:
            free = limit - used - overhead
            fits = [e for e in candidates if len(e.msg) <= free]
            if free <= 0 or not fits:
                break
            best = min(fits, key=lambda e: (e.transmits, -len(e.msg), -e.id))
            candidates.remove(best)
            picked.append(best)
            used += overhead + len(best.msg)
        for e in picked:
            e.transmits += 1
            if e.transmits >= lim:
                self.entries.remove(e)
                self.done.append(e.msg)
        return [e.msg for e in picked]

    def prune(self, keep: int) -> None:
        order = sorted(self.entries, key=lambda e: (-e.transmits, len(e.msg), e.id))
        for e in order[: max(0, len(self.entries) - max(0, keep))]:
            self.entries.remove(e)
            self.done.append(e.msg)


def _recorder(done: list[bytes], msg: bytes) -> Callable[[], None]:
    return lambda: done.append(msg)


_op = st.one_of(
    st.tuples(
        st.just("queue"), st.integers(0, 60), st.sampled_from([None, "", "a", "b", "c"]), st.booleans()
    ),
    st.tuples(st.just("get"), st.integers(0, 5), st.integers(-5, 150)),
    st.tuples(st.just("prune"), st.integers(-1, 8)),
)


@settings(max_examples=150, deadline=None)
@given(mult=st.integers(0, 4), nodes=st.integers(0, 120), ops=st.lists(_op, max_size=60))
def test_queue_matches_model_and_respects_limits(
    mult: int, nodes: int, ops: list[tuple[object, ...]]
) -> None:
    q = TransmitLimitedQueue(mult, lambda: nodes)
    model = _Model(mult, nodes)
    done: list[bytes] = []
    sent: Counter[bytes] = Counter()
    serial = 0
    for op in ops:
        if op[0] == "queue":
            _, extra, name, unique = op
            assert isinstance(extra, int)
            assert name is None or isinstance(name, str)
            serial += 1
            msg = f"<{serial}>".encode() + b"." * extra  # unique content identifies the entry
            q.queue(msg, name=name, unique=bool(unique) and not name, on_done=_recorder(done, msg))
            model.queue(msg, name)
        elif op[0] == "get":
            _, overhead, limit = op
            assert isinstance(overhead, int)
            assert isinstance(limit, int)
            got = q.get_broadcasts(overhead, limit)
            assert got == model.get(overhead, limit)
            assert sum(len(m) + overhead for m in got) <= max(limit, 0)
            assert len(set(got)) == len(got)
            sent.update(got)
        else:
            keep = op[1]
            assert isinstance(keep, int)
            q.prune(keep)
            model.prune(keep)
            assert len(q) <= max(0, keep)
        assert done == model.done
        assert len(q) == len(model.entries)
    limit = max(1, retransmit_limit(mult, nodes))
    assert all(count <= limit for count in sent.values())
    assert len(done) == len(set(done))  # on_done at most once per entry
