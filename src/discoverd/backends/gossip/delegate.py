"""The hooks a memberlist node calls on its owner (memberlist ``Delegate``)."""

from __future__ import annotations


class Delegate:
    """What a node asks its owner (memberlist ``Delegate``). The defaults do nothing."""

    def node_meta(self, limit: int) -> bytes:
        """Our metadata, at most ``limit`` (512) bytes, carried in our alive messages."""
        return b""

    def notify_msg(self, msg: bytes) -> None:
        """A user message arrived (broadcast or reliable). May be a duplicate: be idempotent."""

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """User broadcasts to piggy-back, each costing ``len + overhead``, in total at most ``limit``."""
        return []

    def has_broadcasts(self) -> bool:
        """Whether :meth:`get_broadcasts` may return something (lets an idle gossip round end at once);
        the default says no, like the default :meth:`get_broadcasts`. Override both or neither."""
        return False

    def local_state(self, join: bool) -> bytes:
        """Our user state for a push/pull exchange (``join`` tells whether the exchange is a join)."""
        return b""

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        """The peer's user state from a push/pull exchange."""
