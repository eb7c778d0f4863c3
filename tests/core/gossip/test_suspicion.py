"""Unit tests of Lifeguard suspicion timeouts, the Suspicion timer and Awareness (spec §1.8)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip.config import GossipConfig
from discoverd.core.gossip.suspicion import Awareness, Suspicion, suspicion_k, suspicion_timeouts

# -- suspicion_timeouts / suspicion_k --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mult", "max_mult", "n", "interval", "expected"),
    [
        (4, 6, 3, 1.0, (4.0, 24.0)),  # LAN, 3 nodes
        (3, 6, 3, 1.0, (3.0, 18.0)),  # Local, 3 nodes
        (6, 6, 3, 5.0, (30.0, 180.0)),  # WAN, 3 nodes
        (4, 6, 0, 1.0, (4.0, 24.0)),  # n clamped to 1, scale clamped to 1
        (4, 6, 1, 1.0, (4.0, 24.0)),
        (4, 6, 10, 1.0, (4.0, 24.0)),
        (4, 6, 100, 1.0, (8.0, 48.0)),
        (4, 6, 1000, 0.5, (6.0, 36.0)),
    ],
)
def test_suspicion_timeouts(
    mult: int, max_mult: int, n: int, interval: float, expected: tuple[float, float]
) -> None:
    assert suspicion_timeouts(mult, max_mult, n, interval) == pytest.approx(expected)


def test_suspicion_timeouts_scale_with_log10_between_powers_of_ten() -> None:
    low, high = suspicion_timeouts(4, 6, 50, 1.0)
    assert low == pytest.approx(4 * math.log10(50))
    assert high == pytest.approx(6 * low)


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [
        (4, 3, 0),  # LAN, 3 nodes: n − 2 = 1 < 2
        (4, 4, 2),
        (4, 100, 2),
        (3, 3, 1),  # Local, 3 nodes
        (3, 2, 0),
        (6, 5, 0),
        (6, 6, 4),
        (2, 50, 0),
        (1, 50, 0),  # never negative
        (0, 0, 0),
    ],
)
def test_suspicion_k(mult: int, n: int, expected: int) -> None:
    assert suspicion_k(mult, n) == expected


# -- Suspicion -------------------------------------------------------------------------------------------


def _from_preset(config: GossipConfig, n: int, start: float) -> Suspicion:
    low, high = suspicion_timeouts(
        config.suspicion_mult, config.suspicion_max_timeout_mult, n, config.probe_interval
    )
    return Suspicion("accuser", suspicion_k(config.suspicion_mult, n), low, high, start)


def test_lan_three_nodes_times_out_after_four_seconds() -> None:
    s = _from_preset(GossipConfig.lan(), 3, start=100.0)
    assert s.k == 0
    assert s.deadline == pytest.approx(104.0)
    assert s.confirm("other") is False  # k = 0: nothing to confirm
    assert s.deadline == pytest.approx(104.0)
    assert s.confirmations == 0


def test_local_three_nodes_waits_max_until_one_confirmation_drops_it_to_the_floor() -> None:
    s = _from_preset(GossipConfig.local(), 3, start=50.0)
    assert s.k == 1
    assert (s.min_timeout, s.max_timeout) == pytest.approx((3.0, 18.0))
    assert s.deadline == pytest.approx(68.0)  # a lone suspicion waits 18 s
    assert s.confirm("second") is True
    assert s.deadline == pytest.approx(53.0)  # 3 s floor, measured from the start
    assert s.confirm("third") is False  # k reached
    assert s.deadline == pytest.approx(53.0)
    assert s.confirmations == 1


def test_originator_and_repeats_are_not_confirmations() -> None:
    s = Suspicion("a", 3, 2.0, 12.0, 0.0)
    assert s.confirm("a") is False
    assert s.deadline == 12.0
    assert s.confirm("b") is True
    assert s.confirm("b") is False
    assert s.confirmations == 1


def test_deadline_follows_the_log_formula() -> None:
    s = Suspicion("a", 3, 3.0, 18.0, 10.0)
    expected = [10 + 18 - math.log(c + 1) / math.log(4) * 15 for c in (1, 2, 3)]
    got = []
    for peer in "bcd":
        assert s.confirm(peer) is True
        got.append(s.deadline)
    assert got == pytest.approx(expected)
    assert got[0] == pytest.approx(20.5)  # 18 − 0.5 × 15 = 10.5 s after the start
    assert got[-1] == pytest.approx(13.0)  # k confirmations → min
    assert s.confirm("e") is False


def test_deadline_is_floored_at_min() -> None:
    s = Suspicion("a", 2, 5.0, 2.0, 0.0)  # inverted bounds: the formula goes below min
    assert s.deadline == 2.0
    assert s.confirm("b") is True
    assert s.deadline == 5.0


def test_negative_k_behaves_like_zero() -> None:
    s = Suspicion("a", -1, 3.0, 18.0, 1.0)
    assert s.deadline == 4.0
    assert s.confirm("b") is False


@settings(max_examples=200, deadline=None)
@given(
    k=st.integers(0, 6),
    low=st.floats(0.1, 100),
    factor=st.floats(1, 10),
    start=st.floats(0, 1e6),
    peers=st.lists(st.sampled_from("abcdefghij"), max_size=30),
)
def test_deadline_only_moves_earlier_and_stays_in_bounds(
    k: int, low: float, factor: float, start: float, peers: list[str]
) -> None:
    high = low * factor
    s = Suspicion("a", k, low, high, start)
    previous = s.deadline
    accepted: set[str] = set()
    for peer in peers:
        new = s.confirm(peer)
        assert new == (peer != "a" and peer not in accepted and len(accepted) < k)
        if new:
            accepted.add(peer)
        assert s.deadline <= previous
        assert start + low - 1e-6 <= s.deadline <= start + high + 1e-6
        previous = s.deadline
    assert s.confirmations == len(accepted) <= k


# -- Awareness -------------------------------------------------------------------------------------------


def test_awareness_starts_healthy_and_clamps() -> None:
    a = Awareness(8)
    assert a.score == 0
    assert a.scale(1.0) == 1.0
    a.apply(-1)
    assert a.score == 0
    a.apply(3)
    assert a.score == 3
    assert a.scale(0.5) == 2.0
    a.apply(100)
    assert a.score == 7
    assert a.scale(1.0) == 8.0
    a.apply(-2)
    assert a.score == 5


def test_awareness_of_one_never_scales() -> None:
    a = Awareness(1)
    a.apply(5)
    assert a.score == 0
    assert a.scale(2.0) == 2.0


def test_awareness_rejects_nonpositive_max() -> None:
    with pytest.raises(ValueError, match="max_multiplier"):
        Awareness(0)


@settings(max_examples=100, deadline=None)
@given(max_mult=st.integers(1, 10), deltas=st.lists(st.integers(-5, 5), max_size=40))
def test_awareness_score_stays_in_range(max_mult: int, deltas: list[int]) -> None:
    a = Awareness(max_mult)
    expected = 0
    for d in deltas:
        a.apply(d)
        expected = min(max_mult - 1, max(0, expected + d))
        assert a.score == expected
        assert a.scale(1.5) == pytest.approx(1.5 * (expected + 1))
