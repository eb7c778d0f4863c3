"""What a peer's answer to a replicated operation means (spec §6.3–6.4), as pure decisions.

The replicator posts an operation and hands the decoded answer to :func:`judge`; the verdict says
whether the peer is UP, whether it refused us, and what repair to do:

* a replicated **renew** answered ``-404``: the peer lacks the instance (or has an older copy) — push
  our full copy as a register (:attr:`Verdict.push_copy`);
* a replicated **renew** answered ``-409``: the peer's copy is newer — adopt the copy in ``data``
  (:attr:`Verdict.adopt`); a malformed copy is ignored and described in :attr:`Verdict.problem`;
* ``-401``/``-403``: the peer refuses our credentials (peer secret): not retried, the peer is LOST;
* ``-500``: the peer is in start-up protect or failing: LOST (the operation counts as sent);
* anything else: UP. Transport failures never reach here (the replicator retries them).

Golden cases (``tests/core/test_repair.py``): ``judge("renew", {"code": -404})`` →
``Verdict(up=True, push_copy=True)``; ``judge("register", {"code": -409, "data": {...}})`` → UP, no
repair (only renews repair); ``judge("renew", {"code": -401})`` → ``refused=True, up=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

from discoverd.core.replication import RENEW
from discoverd.errors import BadRequest
from discoverd.model import Instance

REFUSALS = (-401, -403)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after a peer answered one operation."""

    up: bool
    """The peer's status after this answer."""
    refused: bool = False
    """-401/-403: the peer refuses our credentials; the operation is dropped, not retried."""
    push_copy: bool = False
    """Send the peer our full copy of the instance (a register)."""
    adopt: Instance | None = None
    """The peer's newer copy, to store as a repair."""
    problem: str = ""
    """Why an answer that asked for a repair could not be used ("" when it could)."""


def answer_code(doc: object) -> int | None:
    """The ``code`` of a decoded answer, or ``None`` when it has none (not an object, no int code)."""
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def judge(action: str, doc: object) -> Verdict:
    """The verdict for a peer's decoded answer ``doc`` to an operation ``action``; never raises."""
    code = answer_code(doc)
    if code in REFUSALS:
        return Verdict(up=False, refused=True)
    up = code != -500
    if action != RENEW:
        return Verdict(up=up)
    if code == -404:
        return Verdict(up=up, push_copy=True)
    if code == -409 and isinstance(doc, dict):
        try:
            return Verdict(up=up, adopt=Instance.from_wire(doc.get("data")))
        except BadRequest as exc:
            return Verdict(up=up, problem=f"ignoring a malformed -409 copy: {exc.message}")
    return Verdict(up=up)
