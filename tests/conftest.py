"""Shared fixtures: a real node on loopback (OS-assigned port) and an HTTP client session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import settings

from discoverd.server.runner import Node
from discoverd.testing import fast_config, running_node

# CI replays a fixed set of examples (reproducible runs); developers' runs explore new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """A node with default protocol timings except a short poll hold (2 s)."""
    async with running_node(fast_config(poll_hold=2.0)) as n:
        yield n


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
