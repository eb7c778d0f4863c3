"""Fixtures for tests against the real Go memberlist peer (see go_harness.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gossip import go_harness


@pytest.fixture(scope="session")
def mlharness_bin() -> Path:
    """The built Go peer. Skips without Go, except under CI (env ``CI`` set), where that is an error."""
    missing = go_harness.go_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(
                f"Go interop tests cannot run: {missing} (CI is set, so this fails instead of skipping)"
            )
        pytest.skip(f"Go interop tests skipped: {missing}")
    return go_harness.build_harness()
