"""Unit tests of local, decaying outlier ejection (ssgo/discover's lifetime-failure deletion not copied)."""

from __future__ import annotations

import pytest

from discoverd.core.balancing import instance_key
from discoverd.core.ejection import Ejector
from discoverd.errors import ConfigError
from discoverd.model import Instance


def fleet(n: int) -> list[Instance]:
    return [Instance(zone="sh001", env="dev", appid="demo.svc", hostname=f"h{i}") for i in range(n)]


def fail(ej: Ejector, key: str, times: int, now: float) -> None:
    for _ in range(times):
        ej.report(key, False, now)


def test_ejected_after_n_consecutive_failures() -> None:
    ej = Ejector(consecutive_failures=3, base_ejection=10.0)
    fail(ej, "k", 2, 0.0)
    assert ej.ejected(0.0) == []
    ej.report("k", False, 0.0)
    assert ej.ejected(0.0) == ["k"]
    assert ej.ejected(9.9) == ["k"]
    assert ej.ejected(10.0) == []


def test_failures_that_are_not_consecutive_do_not_eject() -> None:
    ej = Ejector(consecutive_failures=3)
    for _ in range(10):
        fail(ej, "k", 2, 0.0)
        ej.report("k", True, 0.0)
    assert ej.ejected(0.0) == []
    assert ej.tracked == 0  # a success of a healthy key drops its entry


def test_duration_doubles_and_is_capped() -> None:
    ej = Ejector(consecutive_failures=1, base_ejection=10.0, max_ejection=35.0)
    now = 0.0
    lengths = []
    for _ in range(4):
        ej.report("k", False, now)
        start = now
        while ej.ejected(now):
            now += 0.5
        lengths.append(now - start)
    assert lengths == [10.0, 20.0, 35.0, 35.0]


def test_success_resets_the_growth() -> None:
    ej = Ejector(consecutive_failures=1, base_ejection=10.0)
    ej.report("k", False, 0.0)  # 10 s
    ej.report("k", False, 10.0)  # 20 s
    assert ej.ejected(29.0) == ["k"]
    ej.report("k", True, 31.0)
    ej.report("k", False, 32.0)  # back to 10 s
    assert ej.ejected(41.0) == ["k"]
    assert ej.ejected(42.0) == []


def test_late_failures_do_not_extend_a_running_ejection() -> None:
    ej = Ejector(consecutive_failures=2, base_ejection=10.0)
    fail(ej, "k", 2, 0.0)
    fail(ej, "k", 5, 1.0)
    assert ej.ejected(10.0) == []


def test_available_leaves_out_the_ejected() -> None:
    ej = Ejector(consecutive_failures=1)
    inst = fleet(4)
    ej.report(instance_key(inst[1]), False, 0.0)
    assert ej.available(inst, 1.0) == [inst[0], inst[2], inst[3]]
    assert ej.available(inst, 11.0) == inst


def test_share_cap_readmits_those_ending_soonest() -> None:
    ej = Ejector(consecutive_failures=1, base_ejection=10.0, max_ejected_share=0.5)
    inst = fleet(4)
    for t, i in enumerate((0, 1, 2)):  # ejected until 10, 11, 12
        ej.report(instance_key(inst[i]), False, float(t))
    assert ej.available(inst, 5.0) == [inst[0], inst[3]]  # 2 of 4 out at most; h0 ends soonest


def test_never_empty() -> None:
    ej = Ejector(consecutive_failures=1, max_ejected_share=1.0)
    inst = fleet(2)
    for i in inst:
        ej.report(instance_key(i), False, 0.0)
    assert len(ej.available(inst, 1.0)) == 1
    one = fleet(1)
    assert ej.available(one, 1.0) == one
    assert ej.available([], 1.0) == []


def test_forget_and_sweep_bound_memory() -> None:
    ej = Ejector(consecutive_failures=5, forget_after=100.0)
    for n in range(50):
        ej.report(f"k{n}", False, 0.0)
    assert ej.tracked == 50
    ej.forget([f"k{n}" for n in range(10)])
    assert ej.tracked == 40
    ej.report("fresh", False, 200.0)  # the sweep drops keys not seen for forget_after
    assert ej.tracked == 1


def test_an_empty_ejector_is_truthy() -> None:
    ej = Ejector()
    assert (ej or None) is ej  # callers write `ejector or Ejector()`


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        Ejector(consecutive_failures=0)
    with pytest.raises(ConfigError):
        Ejector(base_ejection=10.0, max_ejection=5.0)
    with pytest.raises(ConfigError):
        Ejector(max_ejected_share=1.5)
