"""The dashboard served at ``/``. Placeholder: installs nothing yet."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from discoverd.server.app import ProtocolApp
    from discoverd.server.runner import Node


def install(app: ProtocolApp, node: Node) -> None:
    """Serve the dashboard routes for ``app`` (run by the node at start when ``config.dashboard``)."""
