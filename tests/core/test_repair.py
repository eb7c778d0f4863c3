"""Unit tests of the peer-answer decisions (404 push / 409 adopt / refusals), no event loop."""

from __future__ import annotations

import pytest

from discoverd.core.repair import Verdict, answer_code, judge
from discoverd.core.replication import CANCEL, REGISTER, RENEW, SET

COPY = {
    "region": "r",
    "zone": "z",
    "env": "dev",
    "appid": "a",
    "hostname": "h1",
    "addrs": ["http://10.0.0.1:80"],
    "status": 1,
    "dirty_timestamp": 9,
}


def test_renew_answered_404_pushes_our_copy() -> None:
    assert judge(RENEW, {"code": -404, "message": "-404"}) == Verdict(up=True, push_copy=True)


def test_renew_answered_409_adopts_the_peer_copy() -> None:
    v = judge(RENEW, {"code": -409, "data": COPY})
    assert v.up and not v.push_copy and v.adopt is not None
    assert (v.adopt.hostname, v.adopt.dirty_timestamp, v.adopt.addrs) == ("h1", 9, ["http://10.0.0.1:80"])


@pytest.mark.parametrize("data", [None, [], {"zone": 3}, {**COPY, "addrs": "x"}])
def test_a_malformed_409_copy_is_not_adopted(data: object) -> None:
    v = judge(RENEW, {"code": -409, "data": data})
    assert v.adopt is None and v.up and v.problem.startswith("ignoring a malformed -409 copy")


@pytest.mark.parametrize("action", [REGISTER, CANCEL, SET])
@pytest.mark.parametrize("code", [-404, -409, 0])
def test_only_renews_repair(action: str, code: int) -> None:
    assert judge(action, {"code": code, "data": COPY}) == Verdict(up=True)


@pytest.mark.parametrize("code", [-401, -403])
@pytest.mark.parametrize("action", [REGISTER, RENEW])
def test_refusals_are_not_retried_and_mark_the_peer_lost(action: str, code: int) -> None:
    assert judge(action, {"code": code}) == Verdict(up=False, refused=True)


def test_500_marks_the_peer_lost_without_repair() -> None:
    assert judge(RENEW, {"code": -500}) == Verdict(up=False)


@pytest.mark.parametrize("doc", [{}, [], "x", None, {"code": "-404"}, {"code": True}, {"code": 1.5}])
def test_answers_without_an_integer_code_leave_the_peer_up(doc: object) -> None:
    assert answer_code(doc) is None
    assert judge(RENEW, doc) == Verdict(up=True)
