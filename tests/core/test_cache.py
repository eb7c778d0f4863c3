"""Unit tests of the cache rules (no event loop, explicit ``now``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discoverd.core.cache import (
    Backoff,
    CachePolicy,
    CacheState,
    CacheStatus,
    Jitter,
    ReadPlan,
    Retry,
)
from discoverd.errors import ConfigError, Unavailable
from discoverd.model import Action, Event, Instance

T0 = 1000.0


def inst(host: str = "h1", appid: str = "a", version: str = "v1") -> Instance:
    return Instance(zone="z", env="dev", appid=appid, hostname=host, version=version)


def state(ttl: float = 10.0, min_refresh: float = 1.0) -> CacheState:
    return CacheState(CachePolicy(ttl=ttl, min_refresh=min_refresh))


def fetched(s: CacheState, appid: str, hosts: list[str], now: float) -> None:
    assert s.plan(appid, now) is ReadPlan.FETCH
    s.begin_fetch(appid, now)
    s.fetch_succeeded(appid, [inst(h, appid) for h in hosts], now)


def hosts(s: CacheState, appid: str = "a") -> list[str]:
    return sorted(s.entry(appid).instances)


def test_first_read_fetches_then_joins_while_in_flight() -> None:
    s = state()
    assert s.plan("a", T0) is ReadPlan.FETCH
    s.begin_fetch("a", T0)
    assert s.plan("a", T0) is ReadPlan.JOIN
    assert s.plan("b", T0) is ReadPlan.FETCH  # single flight is per app
    s.fetch_succeeded("a", [inst("h1")], T0 + 0.5)
    assert s.plan("a", T0 + 0.5) is ReadPlan.SERVE
    assert hosts(s) == ["h1"]


def test_fresh_until_ttl_counted_from_the_start_of_the_fetch() -> None:
    s = state(ttl=10, min_refresh=0)
    s.begin_fetch("a", T0)
    s.fetch_succeeded("a", [inst()], T0 + 2)
    assert s.plan("a", T0 + 9.999) is ReadPlan.SERVE
    assert s.plan("a", T0 + 10) is ReadPlan.FETCH
    assert s.status("a", T0 + 10) == CacheStatus(appid="a", cached=True, stale=True, fetched_at=T0)


def test_failed_refresh_keeps_the_list_and_reports_stale_with_the_error() -> None:
    s = state(ttl=10, min_refresh=1)
    fetched(s, "a", ["h1", "h2"], T0)
    err = Unavailable("down")
    s.begin_fetch("a", T0 + 10)
    s.fetch_failed("a", err, T0 + 10)
    assert hosts(s) == ["h1", "h2"]
    assert s.status("a", T0 + 10) == CacheStatus(appid="a", cached=True, stale=True, error=err, fetched_at=T0)
    for n in range(1, 5):  # failing again and again never empties it
        now = T0 + 10 + n
        assert s.plan("a", now) is ReadPlan.FETCH
        s.begin_fetch("a", now)
        s.fetch_failed("a", err, now)
        assert hosts(s) == ["h1", "h2"]
    fetched(s, "a", ["h3"], T0 + 20)
    assert s.status("a", T0 + 20) == CacheStatus(appid="a", cached=True, fetched_at=T0 + 20)
    assert s.entry("a").error_traceback is None


def test_min_refresh_counts_from_the_end_of_the_failed_attempt() -> None:
    s = state(ttl=10, min_refresh=1)
    s.begin_fetch("a", T0)
    s.fetch_failed("a", Unavailable(), T0 + 3)
    assert s.plan("a", T0 + 3.999) is ReadPlan.SERVE
    assert s.plan("a", T0 + 4) is ReadPlan.FETCH


def test_first_fetch_failing_leaves_an_uncached_entry_with_the_error() -> None:
    s = state()
    err = Unavailable("down")
    s.begin_fetch("a", T0)
    s.fetch_failed("a", err, T0)
    st_ = s.status("a", T0)
    assert (st_.cached, st_.stale, st_.error) == (False, False, err)
    assert s.plan("a", T0 + 0.5) is ReadPlan.SERVE  # the shell raises the recorded error


def test_aborted_fetch_lets_the_next_read_fetch_at_once() -> None:
    s = state()
    s.begin_fetch("a", T0)
    s.fetch_aborted("a")
    assert s.plan("a", T0) is ReadPlan.FETCH
    assert s.status("a", T0) == CacheStatus(appid="a")


def test_flight_bookkeeping_misuse_raises() -> None:
    s = state()
    s.begin_fetch("a", T0)
    with pytest.raises(RuntimeError, match="already in flight"):
        s.begin_fetch("a", T0)
    s.fetch_succeeded("a", [], T0)
    with pytest.raises(RuntimeError, match="no fetch"):
        s.fetch_failed("a", Unavailable(), T0)


def test_empty_answers_are_cached_too() -> None:
    s = state()
    fetched(s, "a", [], T0)
    assert s.plan("a", T0 + 1) is ReadPlan.SERVE
    assert s.status("a", T0 + 1).cached


def test_events_update_cached_apps_and_ignore_others() -> None:
    s = state()
    fetched(s, "a", ["h1", "h2"], T0)
    assert s.apply(Event(Action.CREATE, inst("h3")))
    assert s.apply(Event(Action.UPDATE, inst("h1", version="v2")))
    assert s.apply(Event(Action.DELETE, inst("h2")))
    assert s.apply(Event(Action.DELETE, inst("unknown")))
    assert hosts(s) == ["h1", "h3"]
    assert s.entry("a").instances["h1"].version == "v2"
    assert not s.apply(Event(Action.CREATE, inst("x", appid="never-read")))
    assert "never-read" not in s.entries
    assert s.plan("a", T0 + 1) is ReadPlan.SERVE  # events do not cost a fetch


def test_events_are_ignored_for_an_app_whose_only_fetch_failed() -> None:
    s = state()
    s.begin_fetch("a", T0)
    s.fetch_failed("a", Unavailable(), T0)
    assert not s.apply(Event(Action.CREATE, inst("h1")))


def test_events_during_a_flight_are_replayed_over_an_older_snapshot() -> None:
    s = state()
    fetched(s, "a", ["h1"], T0)
    s.begin_fetch("a", T0 + 10)
    s.apply(Event(Action.DELETE, inst("h1")))
    s.apply(Event(Action.CREATE, inst("h2", version="v1")))
    s.apply(Event(Action.UPDATE, inst("h2", version="v2")))
    # the snapshot was taken before any of them
    s.fetch_succeeded("a", [inst("h1"), inst("h9")], T0 + 10.5)
    assert hosts(s) == ["h2", "h9"]
    assert s.entry("a").instances["h2"].version == "v2"
    assert s.entry("a").buffered == []


def test_events_during_a_first_fetch_are_replayed() -> None:
    s = state()
    s.begin_fetch("a", T0)
    assert s.apply(Event(Action.CREATE, inst("h2")))
    s.fetch_succeeded("a", [inst("h1")], T0)
    assert hosts(s) == ["h1", "h2"]


def test_a_new_watch_makes_every_entry_refetch_once() -> None:
    s = state(ttl=10, min_refresh=0)
    fetched(s, "a", ["h1"], T0)
    fetched(s, "b", ["h1"], T0)
    s.watch_started()
    assert s.plan("a", T0 + 1) is ReadPlan.FETCH
    assert s.status("b", T0 + 1).stale
    fetched(s, "a", ["h1"], T0 + 1)
    assert s.plan("a", T0 + 2) is ReadPlan.SERVE


def test_a_fetch_spanning_a_watch_restart_is_not_fresh() -> None:
    s = state(ttl=10, min_refresh=0)
    s.begin_fetch("a", T0)
    s.watch_started()
    s.fetch_succeeded("a", [inst()], T0)
    assert s.plan("a", T0 + 1) is ReadPlan.FETCH


def test_a_fetch_is_still_throttled_by_min_refresh_after_a_watch_restart() -> None:
    s = state(ttl=10, min_refresh=5)
    fetched(s, "a", ["h1"], T0)
    s.watch_started()
    assert s.plan("a", T0 + 1) is ReadPlan.SERVE
    assert s.plan("a", T0 + 5) is ReadPlan.FETCH


def test_invalidate_forces_a_refetch_even_within_min_refresh() -> None:
    s = state(ttl=10, min_refresh=5)
    fetched(s, "a", ["h1"], T0)
    s.invalidate("a")
    s.invalidate("never-read")  # no entry is created
    assert "never-read" not in s.entries
    assert s.plan("a", T0 + 0.1) is ReadPlan.FETCH


def test_invalidate_during_a_flight_keeps_the_result_unfresh_and_unthrottled() -> None:
    s = state(ttl=10, min_refresh=5)
    s.begin_fetch("a", T0)
    s.invalidate("a")
    s.fetch_succeeded("a", [inst()], T0 + 0.1)
    assert s.plan("a", T0 + 0.2) is ReadPlan.FETCH


@pytest.mark.parametrize(("ttl", "min_refresh"), [(0, 1), (-1, 1), (float("inf"), 1), (1, -1)])
def test_policy_rejects_bad_timings(ttl: float, min_refresh: float) -> None:
    with pytest.raises(ConfigError):
        CachePolicy(ttl=ttl, min_refresh=min_refresh)


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    b = Backoff(base=0.1, cap=1.0, jitter=Jitter.NONE)
    assert [b.delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.delay(10_000) == 1.0  # no OverflowError


def test_full_jitter_scales_the_ceiling_by_the_rng() -> None:
    b = Backoff(base=1.0, cap=8.0, jitter=Jitter.FULL, rng=lambda: 0.25)
    assert [b.delay(n) for n in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_equal_jitter_never_goes_below_half_the_ceiling() -> None:
    low = Backoff(base=1.0, cap=8.0, jitter=Jitter.EQUAL, rng=lambda: 0.0)
    high = Backoff(base=1.0, cap=8.0, jitter=Jitter.EQUAL, rng=lambda: 0.999)
    assert [low.delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert high.delay(3) == pytest.approx(7.996)


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    jitter=st.sampled_from(Jitter),
)
def test_delay_stays_within_zero_and_cap(attempt: int, r: float, jitter: Jitter) -> None:
    b = Backoff(base=0.05, cap=3.0, factor=3.0, jitter=jitter, rng=lambda: r)
    assert 0.0 <= b.delay(attempt) <= 3.0


@pytest.mark.parametrize(
    "kwargs", [{"base": -1.0}, {"base": 5.0, "cap": 1.0}, {"factor": 0.5}, {"cap": float("inf")}]
)
def test_backoff_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_retry_grows_resets_on_success_and_after_a_long_run() -> None:
    r = Retry(Backoff(base=1.0, cap=8.0, jitter=Jitter.NONE))
    assert [r.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    r.succeeded()
    assert r.failed() == 1.0
    assert r.failed(uptime=7.9) == 2.0
    assert r.failed(uptime=8.0) == 1.0  # the watch had been up for a whole cap
