"""The framework integrations against a real discoverd node (a child process on loopback).

The frameworks are test dependencies and are imported unconditionally: a missing one fails the run,
nothing is skipped. Servers under test run on OS-assigned ports; processes are stopped by PID.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from discoverd.testing import ServerProcess
from tests.integrations.support import ENV, ZONE


@pytest.fixture(scope="module")
def registry() -> Iterator[ServerProcess]:
    """One registry node for the module's tests (each test uses its own appids)."""
    with ServerProcess(["--hostname", "integrations-node", "--env", ENV, "--zone", ZONE]) as srv:
        yield srv
