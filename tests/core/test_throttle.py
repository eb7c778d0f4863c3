"""Unit tests of the rate-limited, aggregated reports (core/throttle.py), on a fake clock."""

from __future__ import annotations

import pytest

from discoverd.core.throttle import Budget, Report, Throttle


def test_first_occurrence_at_once_then_one_summary_per_interval() -> None:
    t = Throttle(60.0)
    assert t.hit("p", 0.0, "e1") == Report(1, 0.0, "e1", True)
    assert [t.hit("p", float(s), f"e{s}") for s in range(1, 60)] == [None] * 59
    assert t.hit("p", 60.0, "last") == Report(60, 60.0, "last", False)  # everything since the first
    assert t.hit("p", 61.0, "x") is None
    assert t.hit("p", 130.0, "y") == Report(2, 70.0, "y", False)


def test_reports_stay_bounded_whatever_the_rate() -> None:
    t = Throttle(60.0)
    reports = [r for i in range(100_000) if (r := t.hit("p", i * 0.01, "boom")) is not None]
    # 1000 s of failures every 10 ms: the first, then one summary a minute
    assert len(reports) == 1 + 16
    assert sum(r.count for r in reports) <= 100_000


def test_keys_are_independent() -> None:
    t = Throttle(10.0)
    assert t.hit("a", 0.0) is not None
    assert t.hit("b", 1.0) is not None
    assert t.hit("a", 2.0) is None
    assert len(t) == 2


def test_a_key_quiet_for_a_whole_interval_reports_its_next_occurrence_at_once() -> None:
    t = Throttle(10.0)
    t.hit("a", 0.0, "one")
    assert t.hit("a", 25.0, "two") == Report(1, 0.0, "two", True)


def test_close_reports_what_was_not_reported_and_forgets_the_key() -> None:
    t = Throttle(10.0)
    assert t.close("a", 0.0) is None
    t.hit("a", 0.0, "one")
    assert t.close("a", 1.0) is None  # nothing pending
    t.hit("a", 2.0, "one")
    t.hit("a", 3.0, "two")
    t.hit("a", 4.0, "three")
    assert t.close("a", 5.0) == Report(2, 3.0, "three", False)
    assert len(t) == 0
    assert t.hit("a", 6.0, "again") == Report(1, 0.0, "again", True)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Throttle(0)


def test_due_reports_the_counted_occurrences_once_the_interval_passed() -> None:
    t = Throttle(10.0)
    assert t.due("k", 0.0) is None  # unknown key
    assert t.hit("k", 100.0, "e0") == Report(1, 0.0, "e0", True)
    assert t.due("k", 105.0) is None  # nothing counted yet
    assert t.hit("k", 101.0, "e1") is None and t.hit("k", 102.0, "e2") is None
    assert t.due("k", 109.9) is None
    assert t.due("k", 110.0) == Report(2, 10.0, "e2", False)
    assert t.due("k", 125.0) is None  # reported: nothing left
    assert t.hit("k", 112.0, "e3") is None  # a new window opened at 110


def test_budget_passes_a_burst_per_window_and_counts_the_rest() -> None:
    b = Budget(3, 1.0)
    assert b.window_end() == float("-inf")
    assert [b.take(10.0 + i * 0.1) for i in range(5)] == [True, True, True, False, False]
    assert b.window_end() == 11.0 and b.refused == 2
    assert b.take(11.0) is True  # a new window opens at the first occurrence after the end
    assert b.window_end() == 12.0
    assert b.drain() == 2 and b.drain() == 0


def test_budget_rejects_a_useless_configuration() -> None:
    with pytest.raises(ValueError):
        Budget(0, 1.0)
    with pytest.raises(ValueError):
        Budget(1, 0.0)
