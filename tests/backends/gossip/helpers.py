"""Helpers shared by the gossip tests (in-memory and Go interop)."""

from __future__ import annotations

from discoverd.backends.gossip.delegate import Delegate


class Recorder(Delegate):
    """A delegate that records every user message it receives."""

    def __init__(self) -> None:
        self.msgs: list[bytes] = []

    def notify_msg(self, msg: bytes) -> None:
        self.msgs.append(msg)
