"""Client-side load balancing: ``pick`` an instance, ``report`` how the call went
(ssgo/discover's caller conventions).

Every balancer satisfies :class:`Balancer` and is thread- and task-safe (one ``threading.Lock``
around its state; ``pick`` never blocks on anything but that lock). Weights come from the metadata
key ``weight`` (:func:`weight_of`, spec §8.9). Balancers:

* :class:`WeightedLeastUsed` (``"least-used"``, the default) — ssgo/discover's rule, score = used / weight;
* :class:`SmoothWeightedRoundRobin` (``"round-robin"``) — nginx's smooth weighted round robin;
* :class:`WeightedRandom` (``"random"``);
* :class:`PowerOfTwoChoices` (``"p2c"``) — weighted sampling of two, lower latency × load wins;
* :class:`ZoneAffinity` — a wrapper: own zone first, or the multi-zone scheduler weights (spec §7).

State is kept for the instances of the **current candidate list** only: when ``pick`` gets a list
that differs from the previous one, state is carried over by :func:`instance_key`, newcomers are
seeded (e.g. at the average score) and instances that disappeared are forgotten, so memory stays
bounded and an instance that comes back (say, after an ejection) is not flooded. The list is
compared by identity first (the client hands out the same read-only :class:`Instance` objects), so
an unchanged list costs O(1) checks plus one tuple comparison. Instances are treated as values: a
changed weight must arrive as a new ``Instance`` (the client's cache replaces instances on update),
not as an in-place edit of ``metadata``. Give one balancer one stream of candidate lists;
:class:`ZoneAffinity` spawns one inner balancer per zone for that reason.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import random
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from discoverd.errors import ConfigError, DiscoverdError
from discoverd.model import Instance

#: The weight of an instance without a valid ``weight`` metadata value (spec §8.9).
DEFAULT_WEIGHT = 10


class NoInstance(DiscoverdError):
    """``pick`` found no candidate: the list was empty or every instance was excluded."""


def instance_key(ins: Instance) -> str:
    """``"appid/zone/hostname"``: how balancers, ``exclude`` and the ejector name an instance."""
    return f"{ins.appid}/{ins.zone}/{ins.hostname}"


def weight_of(ins: Instance) -> int:
    """``int(metadata["weight"])`` when it parses and is > 0, else :data:`DEFAULT_WEIGHT`."""
    raw = ins.metadata.get("weight") if ins.metadata else None
    if raw is None:
        return DEFAULT_WEIGHT
    try:
        w = int(raw)
    except ValueError:
        return DEFAULT_WEIGHT
    return w if w > 0 else DEFAULT_WEIGHT


def filter_instances(
    instances: Sequence[Instance], *, color: str | None = None, cluster: str | None = None
) -> list[Instance]:
    """The instances whose metadata ``color`` / ``cluster`` equal the given ones (``None``: any)."""
    if color is None and cluster is None:
        return list(instances)
    out = []
    for ins in instances:
        meta = ins.metadata or {}
        if (color is None or meta.get("color") == color) and (
            cluster is None or meta.get("cluster") == cluster
        ):
            out.append(ins)
    return out


class Balancer(Protocol):
    """What the caller needs from a load balancer. Implementations are thread- and task-safe."""

    def pick(self, instances: Sequence[Instance], *, exclude: Collection[str] = ()) -> Instance:
        """One of ``instances`` whose key is not in ``exclude`` (the keys already tried in this
        call); raises :class:`NoInstance` when none is left. Never blocks, never does I/O."""
        ...

    def report(self, instance: Instance, ok: bool, latency: float) -> None:
        """The outcome of a call to ``instance`` picked earlier; ``latency`` in seconds (negative
        values are clamped to 0). Reports for instances no longer tracked are ignored."""
        ...


class _Tracked:
    """Shared machinery: per-position state for the current candidate list, rebuilt on change.

    Subclasses keep parallel lists indexed like ``_keys`` and implement ``_rebuild`` (carry state
    over, given each new position's old position or ``None``), ``_choose`` (pick among all) and
    ``_choose_among`` (pick among allowed positions); both choose methods update the state.
    """

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._items: tuple[Instance, ...] = ()
        self._keys: list[str] = []
        self._weights: list[int] = []
        self._index: dict[str, int] = {}

    def spawn(self) -> _Tracked:
        """A fresh balancer of the same kind and settings (shares an injected ``rng``)."""
        return type(self)(**self._settings)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} tracking={len(self._keys)}>"

    def _sync(self, instances: Sequence[Instance]) -> None:
        items = self._items
        n = len(instances)
        if n == len(items) and (n == 0 or instances[0] is items[0]) and tuple(instances) == items:
            return
        new = tuple(instances)
        keys = [instance_key(i) for i in new]
        old_pos = [self._index.get(k) for k in keys]
        old_weights = self._weights
        self._items, self._keys = new, keys
        self._weights = [weight_of(i) for i in new]
        self._index = {k: pos for pos, k in enumerate(keys)}
        self._rebuild(old_pos, old_weights)

    def pick(self, instances: Sequence[Instance], *, exclude: Collection[str] = ()) -> Instance:
        """See :meth:`Balancer.pick`. O(1)–O(log n) for an unchanged list without exclusions."""
        with self._lock:
            self._sync(instances)
            if exclude:
                ex = exclude if isinstance(exclude, set | frozenset) else set(exclude)
                allowed = [pos for pos, k in enumerate(self._keys) if k not in ex]
                if not allowed:
                    raise NoInstance(f"all {len(self._keys)} candidate(s) excluded")
                pos = self._choose_among(allowed) if len(allowed) < len(self._keys) else self._choose()
            elif not self._keys:
                raise NoInstance("no candidate instance")
            else:
                pos = self._choose()
            return self._items[pos]

    def report(self, instance: Instance, ok: bool, latency: float) -> None:
        """See :meth:`Balancer.report`."""
        latency = max(0.0, latency)
        key = instance_key(instance)
        with self._lock:
            pos = self._index.get(key)
            if pos is not None:
                self._on_report(pos, ok, latency)

    def _on_report(self, pos: int, ok: bool, latency: float) -> None:
        """Default: outcomes do not change the choice."""

    def _rebuild(self, old_pos: list[int | None], old_weights: list[int]) -> None:
        raise NotImplementedError

    def _choose(self) -> int:
        raise NotImplementedError

    def _choose_among(self, allowed: list[int]) -> int:
        raise NotImplementedError


class WeightedLeastUsed(_Tracked):
    """ssgo/discover's rule: score = used / weight, the lowest score wins, ``used += 1`` on pick.

    Ties go to the first instance in the given order (deterministic; the list order the server
    returns varies between consumers, which spreads ties across a fleet). A newcomer starts at the
    average score of the instances it joins, so it is not flooded; a weight change rescales
    ``used`` so the score is unchanged at that moment (ssgo/discover leaves it, and the change did
    nothing until the counters caught up). ``report`` does not change the choice. A heap makes
    ``pick`` O(log n).
    """

    def __init__(self) -> None:
        super().__init__()
        self._used: list[float] = []
        self._heap: list[tuple[float, int]] = []
        self._heap_ok = False

    def _rebuild(self, old_pos: list[int | None], old_weights: list[int]) -> None:
        old_used = self._used
        used: list[float] = [0.0] * len(old_pos)
        known = []
        for pos, prev in enumerate(old_pos):
            if prev is not None:
                # Keep the score: used / weight is unchanged when the weight changes.
                used[pos] = old_used[prev] * self._weights[pos] / old_weights[prev]
                known.append(used[pos] / self._weights[pos])
        if not known and old_used:
            known = [u / w for u, w in zip(old_used, old_weights, strict=True)]
        avg = sum(known) / len(known) if known else 0.0
        for pos, prev in enumerate(old_pos):
            if prev is None:
                used[pos] = avg * self._weights[pos]
        self._used = used
        self._heap_ok = False

    def scores(self) -> dict[str, float]:
        """The current score (used / weight) per instance key; for tests and diagnostics."""
        with self._lock:
            return {k: u / w for k, u, w in zip(self._keys, self._used, self._weights, strict=True)}

    def _choose(self) -> int:
        used, weights, heap = self._used, self._weights, self._heap
        if not self._heap_ok:
            heap[:] = [(u / w, pos) for pos, (u, w) in enumerate(zip(used, weights, strict=True))]
            heapq.heapify(heap)
            self._heap_ok = True
        pos = heap[0][1]
        used[pos] += 1
        heapq.heapreplace(heap, (used[pos] / weights[pos], pos))
        return pos

    def _choose_among(self, allowed: list[int]) -> int:
        used, weights = self._used, self._weights
        pos = min(allowed, key=lambda p: (used[p] / weights[p], p))
        used[pos] += 1
        self._heap_ok = False
        return pos


class SmoothWeightedRoundRobin(_Tracked):
    """nginx's smooth weighted round robin: each pick adds every weight to its ``current``, picks the
    highest ``current`` (first in order on ties) and subtracts the total from it. Weights 5/1/1
    give ``a a b a c a a``. A newcomer starts at ``current = 0``; survivors keep theirs.

    For a list whose total weight is at most :attr:`CYCLE_LIMIT`, the next ``total weight`` picks are
    computed in one go and then handed out in O(1) (from the zero state this is exactly one period of
    the sequence); a pick with exclusions, or a list change, first rebuilds the exact ``current`` state
    at the cursor (replaying from the batch's start) and then steps in O(n).
    """

    CYCLE_LIMIT = 4096

    def __init__(self) -> None:
        super().__init__()
        self._current: list[int] = []
        self._total = 0
        self._cycle: list[int] | None = None
        self._cycle_start: list[int] = []
        self._cursor = 0

    def _rebuild(self, old_pos: list[int | None], old_weights: list[int]) -> None:
        if self._cycle is not None:  # replay the batch with the weights it was computed with
            new_weights, self._weights = self._weights, old_weights
            self._total = sum(old_weights)
            self._materialize()
            self._weights = new_weights
        old = self._current
        self._current = [0 if prev is None else old[prev] for prev in old_pos]
        self._total = sum(self._weights)

    def _step(self) -> int:
        cur = self._current = list(map(operator.add, self._current, self._weights))
        pos = cur.index(max(cur))
        cur[pos] -= self._total
        return pos

    def _materialize(self) -> None:
        """Leave batch mode: ``current`` becomes the state after the picks handed out so far."""
        if self._cycle is not None:
            self._current = list(self._cycle_start)
            for _ in range(self._cursor):
                self._step()
            self._cycle, self._cursor = None, 0

    def _choose(self) -> int:
        if self._cycle is None or self._cursor >= len(self._cycle):
            if self._total > self.CYCLE_LIMIT:
                self._cycle = None
                return self._step()
            self._cycle_start = list(self._current)
            self._cycle = [self._step() for _ in range(self._total)]  # current: after the batch
            self._cursor = 0
        pos = self._cycle[self._cursor]
        self._cursor += 1
        return pos

    def _choose_among(self, allowed: list[int]) -> int:
        self._materialize()
        cur, weights = self._current, self._weights
        best, total = allowed[0], 0
        for pos in allowed:
            cur[pos] += weights[pos]
            total += weights[pos]
            if cur[pos] > cur[best]:
                best = pos
        cur[best] -= total
        return best


class WeightedRandom(_Tracked):
    """Picks at random in proportion to weight. ``rng`` (a ``random.Random``) is injectable for
    tests; by default a private, OS-seeded one. O(log n)."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        super().__init__(rng=self._rng)
        self._cum: list[int] = []
        self._load: list[float] = []  # mean weight / weight: the cost of one inflight call

    def _rebuild(self, old_pos: list[int | None], old_weights: list[int]) -> None:
        self._cum = list(itertools.accumulate(self._weights))

    def _choose(self) -> int:
        cum = self._cum
        return min(bisect.bisect_right(cum, self._rng.random() * cum[-1]), len(cum) - 1)

    def _choose_among(self, allowed: list[int]) -> int:
        cum = list(itertools.accumulate(self._weights[p] for p in allowed))
        return allowed[min(bisect.bisect_right(cum, self._rng.random() * cum[-1]), len(cum) - 1)]


def _sample_two(cum: list[int], rng: random.Random) -> tuple[int, int]:
    """Two distinct positions drawn without replacement, each in proportion to its weight
    (``cum`` is the cumulative weight list, at least two entries)."""
    total, last = cum[-1], len(cum) - 1
    a = min(bisect.bisect_right(cum, rng.random() * total), last)
    start = cum[a - 1] if a else 0
    wa = cum[a] - start
    r = rng.random() * (total - wa)
    if r >= start:
        r += wa  # skip a's segment: the second draw is from the others only
    b = min(bisect.bisect_right(cum, r), last)
    return (a, b) if b != a else (a, (a + 1) % len(cum))


class PowerOfTwoChoices(_Tracked):
    """Power of two choices: draw two distinct candidates in proportion to weight, take the one with
    the lower cost = ewma_latency × (1 + inflight × mean_weight / weight) (the first drawn on a tie).

    ``pick`` increments the winner's inflight count, ``report`` decrements it and folds the
    latency into an EWMA: ``ewma = decay × ewma + (1 − decay) × sample``. A failure counts as a
    sample of ``max(latency, failure_penalty)`` seconds, so a failing instance loses comparisons
    until successes bring its average down again. A newcomer starts at the average EWMA of the
    others (``initial_latency`` when nothing is known). ``rng`` is injectable. O(log n).

    With equal weights the cost is the usual ewma × (inflight + 1). The weight divides only the
    load term: at zero load (calls reported before the next pick) the draw alone sets the shares,
    and under concurrency the comparison evens out inflight / weight — both give shares in
    proportion to weight when latencies are equal. ``ewma × (inflight + 1) / weight`` would count
    the weight twice at zero load (weights 10/20/30/40: the heaviest would get ~72 %, not 40 %).
    """

    def __init__(
        self,
        *,
        decay: float = 0.9,
        failure_penalty: float = 1.0,
        initial_latency: float = 0.01,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"p2c decay must be in [0, 1), got {decay!r}")
        self._rng = rng or random.Random()
        super().__init__(
            decay=decay, failure_penalty=failure_penalty, initial_latency=initial_latency, rng=self._rng
        )
        self.decay, self.failure_penalty, self.initial_latency = decay, failure_penalty, initial_latency
        self._ewma: list[float] = []
        self._inflight: list[int] = []
        self._cum: list[int] = []
        self._load: list[float] = []  # mean weight / weight: the cost of one inflight call

    def _rebuild(self, old_pos: list[int | None], old_weights: list[int]) -> None:
        old_e, old_i = self._ewma, self._inflight
        known = [old_e[p] for p in old_pos if p is not None] or old_e
        avg = sum(known) / len(known) if known else self.initial_latency
        self._ewma = [max(1e-9, avg) if p is None else old_e[p] for p in old_pos]
        self._inflight = [0 if p is None else old_i[p] for p in old_pos]
        self._cum = list(itertools.accumulate(self._weights))
        mean = sum(self._weights) / len(self._weights) if self._weights else 1.0
        self._load = [mean / w for w in self._weights]

    def _cost(self, pos: int) -> float:
        return self._ewma[pos] * (1.0 + self._inflight[pos] * self._load[pos])

    def _choose(self) -> int:
        inflight = self._inflight
        if len(inflight) == 1:
            pos = 0
        else:
            a, b = _sample_two(self._cum, self._rng)
            ewma, load = self._ewma, self._load
            # Inlined _cost (the EWMAs are kept >= 1e-9 where they are written): the hot path.
            pos = (
                a if ewma[a] * (1.0 + inflight[a] * load[a]) <= ewma[b] * (1.0 + inflight[b] * load[b]) else b
            )
        inflight[pos] += 1
        return pos

    def _choose_among(self, allowed: list[int]) -> int:
        if len(allowed) == 1:
            pos = allowed[0]
        else:
            cum = list(itertools.accumulate(self._weights[p] for p in allowed))
            a, b = (allowed[x] for x in _sample_two(cum, self._rng))
            pos = a if self._cost(a) <= self._cost(b) else b
        self._inflight[pos] += 1
        return pos

    def _on_report(self, pos: int, ok: bool, latency: float) -> None:
        self._inflight[pos] = max(0, self._inflight[pos] - 1)
        sample = latency if ok else max(latency, self.failure_penalty)
        self._ewma[pos] = max(1e-9, self.decay * self._ewma[pos] + (1.0 - self.decay) * sample)

    def stats(self) -> dict[str, tuple[float, int]]:
        """``(ewma, inflight)`` per instance key; for tests and diagnostics."""
        with self._lock:
            return {k: (e, i) for k, e, i in zip(self._keys, self._ewma, self._inflight, strict=True)}


class ZoneAffinity:
    """Keeps traffic in the caller's zone, or splits it by the multi-zone scheduler (spec §7).

    * ``scheduler`` given (provider zone → weight, the ``clients[zone]`` entry for the caller's
      zone): each pick first draws a zone in proportion to its weight among the zones that still
      have a non-excluded candidate, then lets the inner balancer pick within that zone. (kratos
      instead builds one weighted subset list; drawing the zone per pick gives the same shares
      without its panic when the scheduler names only empty zones.) When no scheduled zone has a
      candidate, the rule below applies.
    * otherwise: own-zone candidates when any is left after ``exclude``, else all zones.

    Each zone (and the "all zones" fallback) gets its own inner balancer, made with the inner's
    ``spawn()`` when it has one (the built-in balancers do), so their state does not churn; without
    ``spawn`` the one inner is shared. ``report`` goes to the balancer that picked. Thread-safe.
    """

    _ALL = "*"

    def __init__(
        self,
        inner: Balancer,
        zone: str,
        scheduler: dict[str, int] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.zone = zone
        self.scheduler = {z: w for z, w in (scheduler or {}).items() if w > 0}
        self._inner = inner
        self._inners: dict[str, Balancer] = {}
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._items: tuple[Instance, ...] = ()
        self._groups: dict[str, list[Instance]] = {}

    def set_scheduler(self, scheduler: dict[str, int] | None) -> None:
        """Replace the zone weights (the server's scheduler may change with every answer)."""
        weights = {z: w for z, w in (scheduler or {}).items() if w > 0}
        if weights != self.scheduler:
            with self._lock:
                self.scheduler = weights

    def __repr__(self) -> str:
        return f"<ZoneAffinity zone={self.zone!r} scheduler={self.scheduler} inner={self._inner!r}>"

    def _balancer(self, group: str) -> Balancer:
        bal = self._inners.get(group)
        if bal is None:
            spawn: Callable[[], Balancer] | None = getattr(self._inner, "spawn", None)
            bal = self._inner if not self._inners or spawn is None else spawn()
            self._inners[group] = bal
        return bal

    def _split(self, instances: Sequence[Instance]) -> None:
        items = self._items
        n = len(instances)
        if n == len(items) and (n == 0 or instances[0] is items[0]) and tuple(instances) == items:
            return
        self._items = tuple(instances)
        groups: dict[str, list[Instance]] = {}
        for ins in self._items:
            groups.setdefault(ins.zone, []).append(ins)
        self._groups = groups

    def _choose_group(self, exclude: Collection[str]) -> tuple[str, Sequence[Instance]]:
        groups = self._groups
        if not exclude and not self.scheduler:  # the common case, kept short
            own = groups.get(self.zone)
            if own:
                return self.zone, own
            if self._items:
                return self._ALL, self._items
        live: Collection[str] = groups
        if exclude:
            live = {z for z, lst in groups.items() if any(instance_key(i) not in exclude for i in lst)}
        if not live:
            raise NoInstance(
                f"all {len(self._items)} candidate(s) excluded" if self._items else "no candidate"
            )
        zones = [(z, w) for z, w in self.scheduler.items() if z in live]
        if zones:
            r = self._rng.random() * sum(w for _, w in zones)
            for z, w in zones:
                r -= w
                if r < 0:
                    return z, groups[z]
            return zones[-1][0], groups[zones[-1][0]]
        if self.zone in live:
            return self.zone, groups[self.zone]
        return self._ALL, self._items

    def pick(self, instances: Sequence[Instance], *, exclude: Collection[str] = ()) -> Instance:
        """See :meth:`Balancer.pick`."""
        if exclude and not isinstance(exclude, set | frozenset):
            exclude = set(exclude)
        with self._lock:
            self._split(instances)
            group, candidates = self._choose_group(exclude)
            bal = self._balancer(group)
        return bal.pick(candidates, exclude=exclude)

    def report(self, instance: Instance, ok: bool, latency: float) -> None:
        """See :meth:`Balancer.report`; forwarded to the balancer of the instance's group."""
        z = instance.zone
        group = z if z == self.zone or z in self.scheduler else self._ALL
        with self._lock:
            bal = self._inners.get(group)
        if bal is not None:
            bal.report(instance, ok, latency)


_FACTORIES: dict[str, Callable[..., Balancer]] = {
    "least-used": WeightedLeastUsed,
    "round-robin": SmoothWeightedRoundRobin,
    "random": WeightedRandom,
    "p2c": PowerOfTwoChoices,
}


def make_balancer(name: str = "least-used", **kw: Any) -> Balancer:
    """A new balancer by name: ``least-used`` (default), ``round-robin``, ``random``, ``p2c``;
    ``kw`` goes to its constructor. Raises :class:`ConfigError` on an unknown name."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(f"unknown balancer {name!r}; choose one of {', '.join(_FACTORIES)}")
    return factory(**kw)
