"""Unit tests of the renew-threshold guard (spec §5.2 worked numbers)."""

from __future__ import annotations

from discoverd.core.guard import Guard


def test_worked_numbers_100_instances() -> None:
    g = Guard(threshold=0.85)
    for _ in range(100):
        g.instance_added()
    assert (g.expected, g.needed) == (200, 170)
    for _ in range(169):
        g.renewed()
    assert g.close_window() is True
    for _ in range(170):
        g.renewed()
    assert g.close_window() is False
    assert g.last_window == 170 and g.this_window == 0


def test_protect_is_evaluated_freshly_each_window() -> None:
    g = Guard()
    g.recount(10)
    assert g.close_window() is True  # no renews at all
    for _ in range(20):
        g.renewed()
    assert g.close_window() is False
    assert g.close_window() is True


def test_cancel_decrements_but_never_below_zero() -> None:
    g = Guard()
    g.instance_added()
    g.instance_cancelled()
    g.instance_cancelled()
    assert g.expected == 0


def test_empty_registry_is_not_protected() -> None:
    assert Guard().close_window() is False


def test_recount_replaces_expected() -> None:
    g = Guard()
    for _ in range(50):
        g.instance_added()
    g.recount(3)
    assert g.expected == 6
