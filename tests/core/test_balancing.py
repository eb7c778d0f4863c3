"""Unit tests of the balancers (ssgo/discover caller conventions, spec §7 and §8.9). No event loop."""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from discoverd.core.balancing import (
    Balancer,
    NoInstance,
    PowerOfTwoChoices,
    SmoothWeightedRoundRobin,
    WeightedLeastUsed,
    WeightedRandom,
    ZoneAffinity,
    filter_instances,
    instance_key,
    make_balancer,
    weight_of,
)
from discoverd.errors import ConfigError
from discoverd.model import Instance


def ins(host: str, weight: int | str | None = None, zone: str = "sh001", **meta: str) -> Instance:
    md = dict(meta)
    if weight is not None:
        md["weight"] = str(weight)
    return Instance(zone=zone, env="dev", appid="demo.svc", hostname=host, metadata=md or None)


def fleet(*weights: int, zone: str = "sh001", prefix: str = "h") -> list[Instance]:
    return [ins(f"{prefix}{n}", w, zone) for n, w in enumerate(weights)]


FACTORIES: dict[str, Callable[[], Balancer]] = {
    "least-used": WeightedLeastUsed,
    "round-robin": SmoothWeightedRoundRobin,
    "random": lambda: WeightedRandom(rng=random.Random(7)),
    "p2c": lambda: PowerOfTwoChoices(rng=random.Random(7)),
}


def run(bal: Balancer, instances: list[Instance], picks: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        chosen = bal.pick(instances)
        bal.report(chosen, True, 0.01)  # equal latencies for every instance
        counts[chosen.hostname] += 1
    return counts


# -- helpers -------------------------------------------------------------------------------------


def test_instance_key_and_weight_of() -> None:
    assert instance_key(ins("a")) == "demo.svc/sh001/a"
    assert weight_of(ins("a", 25)) == 25
    assert [weight_of(ins("a", w)) for w in (None, "0", "-3", "abc", "1.5")] == [10] * 5


def test_filter_instances_by_color_and_cluster() -> None:
    a = ins("a", color="red", cluster="c1")
    b = ins("b", color="blue", cluster="c1")
    c = ins("c")
    assert filter_instances([a, b, c]) == [a, b, c]
    assert filter_instances([a, b, c], color="red") == [a]
    assert filter_instances([a, b, c], cluster="c1") == [a, b]
    assert filter_instances([a, b, c], color="blue", cluster="c2") == []


def test_make_balancer_names() -> None:
    assert isinstance(make_balancer(), WeightedLeastUsed)
    assert isinstance(make_balancer("round-robin"), SmoothWeightedRoundRobin)
    assert isinstance(make_balancer("random", rng=random.Random(1)), WeightedRandom)
    assert isinstance(make_balancer("p2c", decay=0.5), PowerOfTwoChoices)
    with pytest.raises(ConfigError):
        make_balancer("fastest")


# -- every balancer --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FACTORIES))
def test_weights_honoured_within_5_percent(name: str) -> None:
    instances = fleet(10, 20, 30, 40)
    counts = run(FACTORIES[name](), instances, 10_000)
    for n, w in enumerate((10, 20, 30, 40)):
        expected = 10_000 * w / 100
        assert abs(counts[f"h{n}"] - expected) <= 0.05 * expected, (name, counts)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_exclude_respected_and_no_instance_when_all_excluded(name: str) -> None:
    bal = FACTORIES[name]()
    instances = fleet(10, 20, 30)
    tried: list[str] = []
    for _ in range(3):
        chosen = bal.pick(instances, exclude=tried)
        assert instance_key(chosen) not in tried
        tried.append(instance_key(chosen))
    assert len(set(tried)) == 3
    with pytest.raises(NoInstance):
        bal.pick(instances, exclude=tried)
    with pytest.raises(NoInstance):
        bal.pick([])


def test_negative_latency_is_clamped() -> None:
    # ssgo/discover passes start - now; a negative sample would drag the EWMA below zero.
    bal = PowerOfTwoChoices(decay=0.0, initial_latency=0.0)
    a = ins("a")
    bal.pick([a])
    bal.report(a, True, -5.0)
    ewma, inflight = bal.stats()[instance_key(a)]
    assert 0.0 <= ewma <= 1e-9 and inflight == 0  # clamped at 0 (EWMAs are floored at 1e-9)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_concurrent_picks_are_all_counted(name: str) -> None:
    bal = FACTORIES[name]()
    instances = fleet(10, 20, 30, 40)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        local = run(bal, instances, 2_000)
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so lost updates would show
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert sum(counts.values()) == 8_000
    if isinstance(bal, WeightedLeastUsed):  # the counter is exact only when updates are not lost
        assert sum(bal.scores()[instance_key(i)] * weight_of(i) for i in instances) == 8_000
    if isinstance(bal, PowerOfTwoChoices):  # load-aware under concurrency: check its books instead
        assert all(inflight == 0 for _, inflight in bal.stats().values())
        return
    for n, w in enumerate((10, 20, 30, 40)):
        assert abs(counts[f"h{n}"] - 80 * w) <= 0.1 * 80 * w, (name, counts)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_concurrent_picks_over_changing_lists_stay_consistent(name: str) -> None:
    # The candidate list changes under the callers (registry updates, ejections): every pick must
    # still return a member of the list it was given, and no update may be half-applied.
    bal = FACTORIES[name]()
    lists = [fleet(10, 20, 30, 40), fleet(40, 30, 20, 10, 10, prefix="x")]
    errors: list[str] = []

    def worker(seed: int) -> None:
        for n in range(1_500):
            given = lists[(n + seed) % 2]
            try:
                chosen = bal.pick(given)
                bal.report(chosen, True, 0.01)
            except Exception as exc:  # an IndexError from torn state is a failure too
                errors.append(repr(exc))
                continue
            if not any(chosen is i for i in given):
                errors.append(f"{chosen.hostname} not in the given list")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


# -- least used ----------------------------------------------------------------------------------------


def test_least_used_ties_go_to_the_first_in_order() -> None:
    bal = WeightedLeastUsed()
    instances = fleet(10, 10, 10)
    assert [bal.pick(instances).hostname for _ in range(6)] == ["h0", "h1", "h2", "h0", "h1", "h2"]


def test_newcomer_starts_at_average_score_and_is_not_flooded() -> None:
    bal = WeightedLeastUsed()
    instances = fleet(10, 20, 30, 40)
    run(bal, instances, 10_000)
    newcomer = ins("new", 10)
    grown = [*instances, newcomer]
    scores = bal.scores()
    bal.pick(grown)  # the first pick after the change seeds the newcomer
    seeded = bal.scores()[instance_key(newcomer)]
    old_avg = sum(scores.values()) / len(scores)
    assert abs(seeded - old_avg) <= 0.2, (seeded, old_avg)
    counts = run(bal, grown, 1_100)
    assert abs(counts["new"] - 100) <= 10, counts  # its weight share (10/110), not the first 1,000


def test_weight_change_rescales_so_there_is_no_burst() -> None:
    bal = WeightedLeastUsed()
    instances = fleet(10, 10, 10, 10)
    run(bal, instances, 1_000)
    changed = [ins("h0", 20), *instances[1:]]
    before = bal.scores()[instance_key(changed[0])]
    head = [bal.pick(changed).hostname for _ in range(50)]
    assert abs(bal.scores()[instance_key(changed[0])] - before) < 2  # score kept at the change
    assert 16 <= head.count("h0") <= 24, head  # ≈ 2/5 of 50; unscaled it would take ~the first 25 in a row
    assert head[:5] != ["h0"] * 5


def test_vanished_instances_are_forgotten() -> None:
    bal = WeightedLeastUsed()
    run(bal, fleet(10, 10, 10, 10), 100)
    run(bal, fleet(10, 10, 10, 10, prefix="other"), 10)
    assert set(bal.scores()) == {f"demo.svc/sh001/other{n}" for n in range(4)}


# -- smooth round robin --------------------------------------------------------------------------------


def test_smooth_round_robin_is_the_nginx_sequence() -> None:
    bal = SmoothWeightedRoundRobin()
    instances = [ins("a", 5), ins("b", 1), ins("c", 1)]
    seq = [bal.pick(instances).hostname for _ in range(14)]
    assert seq == list("aabacaa") * 2


def test_smooth_round_robin_with_exclusion_skips_the_tried() -> None:
    bal = SmoothWeightedRoundRobin()
    instances = [ins("a", 5), ins("b", 1), ins("c", 1)]
    assert bal.pick(instances, exclude={instance_key(instances[0])}).hostname in {"b", "c"}


# -- p2c -----------------------------------------------------------------------------------------------------


def test_p2c_prefers_the_faster_and_penalises_failures() -> None:
    bal = PowerOfTwoChoices(rng=random.Random(3), decay=0.5, failure_penalty=1.0)
    fast, slow = ins("fast"), ins("slow")
    for _ in range(20):
        chosen = bal.pick([fast, slow])
        bal.report(chosen, True, 0.001 if chosen is fast else 0.5)
    counts = run_with(bal, [fast, slow], {"fast": 0.001, "slow": 0.5}, 1_000)
    assert counts["fast"] == 1_000  # with two instances both are always drawn: the cheaper wins
    bal.report(fast, False, 0.001)
    bal.report(fast, False, 0.001)
    assert bal.stats()[instance_key(fast)][0] > 0.2  # failures count as a 1 s latency
    assert bal.pick([fast, slow]) is slow


def test_p2c_honours_weights_under_concurrency() -> None:
    # 16 calls in flight, equal latencies: each call is reported 16 picks after it was made.
    bal = PowerOfTwoChoices(rng=random.Random(11))
    instances = fleet(10, 20, 30, 40)
    pending: list[Instance] = []
    counts: Counter[str] = Counter()
    for _ in range(10_000):
        chosen = bal.pick(instances)
        counts[chosen.hostname] += 1
        pending.append(chosen)
        if len(pending) == 16:
            bal.report(pending.pop(0), True, 0.01)
    for n, w in enumerate((10, 20, 30, 40)):
        assert abs(counts[f"h{n}"] - 100 * w) <= 0.05 * 100 * w, counts


def run_with(bal: Balancer, instances: list[Instance], lat: dict[str, float], picks: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        chosen = bal.pick(instances)
        bal.report(chosen, True, lat[chosen.hostname])
        counts[chosen.hostname] += 1
    return counts


def test_p2c_tracks_inflight_and_newcomer_gets_the_average_ewma() -> None:
    bal = PowerOfTwoChoices(rng=random.Random(5), decay=0.0)
    a, b = ins("a"), ins("b")
    first = bal.pick([a, b])
    assert bal.stats()[instance_key(first)][1] == 1
    second = bal.pick([a, b])
    assert second is not first  # the busy one costs twice as much
    bal.report(a, True, 0.1)
    bal.report(b, True, 0.3)
    c = ins("c")
    bal.pick([a, b, c], exclude={instance_key(a), instance_key(b)})
    ewma, inflight = bal.stats()[instance_key(c)]
    assert ewma == pytest.approx(0.2) and inflight == 1


# -- zone affinity -------------------------------------------------------------------------------------


def two_zones() -> tuple[list[Instance], list[Instance]]:
    return fleet(10, 10, zone="sh001", prefix="own"), fleet(10, 10, zone="sh002", prefix="far")


def test_zone_affinity_prefers_own_zone() -> None:
    own, far = two_zones()
    bal = ZoneAffinity(WeightedLeastUsed(), "sh001")
    assert {bal.pick(far + own).zone for _ in range(100)} == {"sh001"}


def test_zone_affinity_falls_back_when_own_zone_is_exhausted() -> None:
    own, far = two_zones()
    bal = ZoneAffinity(WeightedLeastUsed(), "sh001")
    tried = [instance_key(i) for i in own]
    chosen = bal.pick(own + far, exclude=tried)
    assert chosen.zone == "sh002"
    bal.report(chosen, False, 0.1)
    assert bal.pick(far).zone == "sh002"
    with pytest.raises(NoInstance):
        bal.pick(own + far, exclude=tried + [instance_key(i) for i in far])


def test_zone_affinity_follows_scheduler_weights() -> None:
    own, far = two_zones()
    third = fleet(10, zone="sh003", prefix="third")
    bal = ZoneAffinity(
        make_balancer("p2c", rng=random.Random(1)), "sh001", {"sh001": 3, "sh002": 1}, rng=random.Random(2)
    )
    counts = Counter(run(bal, own + far + third, 10_000))
    zones = Counter({"sh001": counts["own0"] + counts["own1"], "sh002": counts["far0"] + counts["far1"]})
    assert counts["third0"] == 0  # not in the scheduler
    assert abs(zones["sh001"] - 7_500) <= 375 and abs(zones["sh002"] - 2_500) <= 125, counts
    assert abs(counts["own0"] - counts["own1"]) <= 0.1 * 3_750  # the inner balancer splits within a zone


def test_zone_affinity_scheduler_skips_zones_without_candidates() -> None:
    own, far = two_zones()
    bal = ZoneAffinity(WeightedLeastUsed(), "sh001", {"sh002": 1, "sh009": 5})
    assert {bal.pick(own + far).zone for _ in range(20)} == {"sh002"}
    tried = [instance_key(i) for i in far]
    assert bal.pick(own + far, exclude=tried).zone == "sh001"  # scheduled zones exhausted: own zone


def test_round_robin_cycle_mode_matches_step_by_step_across_exclusions() -> None:
    """Picks from the precomputed cycle, interleaved with excluding picks, follow the nginx rule."""
    import random as _random

    from discoverd.core.balancing import SmoothWeightedRoundRobin, instance_key, weight_of

    items = [
        Instance(zone="z", env="e", appid="a", hostname=f"h{i}", metadata={"weight": str(w)})
        for i, w in enumerate([5, 1, 3, 2])
    ]
    rng = _random.Random(11)
    bal = SmoothWeightedRoundRobin()
    current = [0, 0, 0, 0]
    weights = [weight_of(i) for i in items]
    for _ in range(500):
        exclude = {instance_key(items[rng.randrange(4)])} if rng.random() < 0.2 else set()
        allowed = [p for p, ins in enumerate(items) if instance_key(ins) not in exclude]
        total = sum(weights[p] for p in allowed)
        for p in allowed:
            current[p] += weights[p]
        best = max(allowed, key=lambda p: (current[p], -p))
        current[best] -= total
        assert bal.pick(items, exclude=exclude) is items[best]


def test_round_robin_keeps_its_state_across_a_list_change_mid_batch() -> None:
    from discoverd.core.balancing import SmoothWeightedRoundRobin

    def mk(h: str, w: int) -> Instance:
        return Instance(zone="z", env="e", appid="a", hostname=h, metadata={"weight": str(w)})

    a, b, c = mk("a", 5), mk("b", 1), mk("c", 1)
    batched, stepped = SmoothWeightedRoundRobin(), SmoothWeightedRoundRobin()
    stepped.CYCLE_LIMIT = 0  # the plain O(n) rule, as reference
    first = [a, b, c]
    second = [mk("a", 5), b, c, mk("d", 3)]  # a new object for a (same key), plus a newcomer
    got = [batched.pick(first).hostname for _ in range(3)] + [
        batched.pick(second).hostname for _ in range(20)
    ]
    want = [stepped.pick(first).hostname for _ in range(3)] + [
        stepped.pick(second).hostname for _ in range(20)
    ]
    assert got == want
