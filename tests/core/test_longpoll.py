"""Unit tests of the per-request long-poll bookkeeping."""

from __future__ import annotations

from discoverd.core.longpoll import Waiter, Waiters


def test_take_removes_waiter_from_every_app_it_waits_on() -> None:
    ws = Waiters()
    w = Waiter(env="dev", appids=("a", "b"))
    ws.park(w)
    groups = ws.take(("a", "dev"), lambda z: True)
    assert groups == {(False, "", ()): [w]}
    assert ws.take(("b", "dev"), lambda z: True) == {}
    assert len(ws) == 0


def test_two_requests_from_one_host_are_independent() -> None:
    ws = Waiters()
    w1 = Waiter(env="dev", appids=("a",), zone="z1")
    w2 = Waiter(env="dev", appids=("a", "b"), zone="z2")
    ws.park(w1)
    ws.park(w2)
    groups = ws.take(("a", "dev"), lambda z: z == "z2")
    assert groups == {(False, "z2", ()): [w2]}
    assert len(ws) == 1  # w1 keeps waiting: its zone is absent
    assert ws.take(("a", "dev"), lambda z: True) == {(False, "z1", ()): [w1]}


def test_groups_share_answers_by_kind_zone_and_missing() -> None:
    ws = Waiters()
    a = [Waiter(env="dev", appids=("x",)) for _ in range(3)]
    b = Waiter(env="dev", appids=("x", "y"), missing=("y",))
    c = Waiter(env="dev", appids=("x",), single=True)
    for w in (*a, b, c):
        ws.park(w)
    groups = ws.take(("x", "dev"), lambda z: True)
    assert groups[(False, "", ())] == a
    assert groups[(False, "", ("y",))] == [b]
    assert groups[(True, "", ())] == [c]


def test_accept_is_called_once_per_distinct_zone() -> None:
    ws = Waiters()
    for _ in range(5):
        ws.park(Waiter(env="dev", appids=("x",), zone="z"))
    calls: list[str] = []

    def accept(zone: str) -> bool:
        calls.append(zone)
        return True

    ws.take(("x", "dev"), accept)
    assert calls == ["z"]


def test_discard_is_idempotent_and_drain_returns_each_once() -> None:
    ws = Waiters()
    w1 = Waiter(env="dev", appids=("a", "b"))
    w2 = Waiter(env="dev", appids=("b",))
    ws.park(w1)
    ws.park(w2)
    assert ws.discard(w2) is True
    assert ws.discard(w2) is False
    ws.park(w3 := Waiter(env="dev", appids=("c",)))
    assert ws.drain() == [w1, w3]
    assert len(ws) == 0 and ws.drain() == []


def test_envs_are_separate() -> None:
    ws = Waiters()
    w = Waiter(env="prod", appids=("a",))
    ws.park(w)
    assert ws.take(("a", "dev"), lambda z: True) == {}
    assert len(ws) == 1
