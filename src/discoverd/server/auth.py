"""Access tokens for a node. Placeholder: installs nothing yet."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from discoverd.config import ServerConfig
    from discoverd.server.app import ProtocolApp


def install(app: ProtocolApp, config: ServerConfig) -> None:
    """Require tokens on ``app`` when ``config`` has any (run by the node at start)."""
