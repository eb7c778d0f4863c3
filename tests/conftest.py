"""Shared fixtures: a real node on loopback (OS-assigned port) and an HTTP client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """A node with default protocol timings except a short poll hold (2 s)."""
    async with running_node(fast_config(poll_hold=2.0)) as n:
        yield n


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
