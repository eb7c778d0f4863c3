"""The client side without a server: the bootstrap, ``discoverd xds-bootstrap`` and ``channel``'s errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from discoverd.cli import main
from discoverd.errors import ConfigError
from discoverd.grpc import bootstrap


def test_the_bootstrap_names_the_server_env_and_locality() -> None:
    doc = bootstrap("10.0.0.1:7172", env="prod", zone="z2", region="r1", node_id="n1")
    assert doc == {
        "xds_servers": [
            {
                "server_uri": "10.0.0.1:7172",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": "n1", "locality": {"region": "r1", "zone": "z2"}, "metadata": {"env": "prod"}},
    }
    assert bootstrap("h:1", env="e", zone="z")["node"]["id"].startswith("discoverd-grpc@")


def test_tls_and_a_token_file() -> None:
    [server] = bootstrap("h:1", env="e", zone="z", ca_file="/ca.pem", token_file="/tok")["xds_servers"]
    assert server["channel_creds"] == [{"type": "tls", "config": {"ca_certificate_file": "/ca.pem"}}]
    assert server["call_creds"] == [{"type": "jwt_token_file", "config": {"jwt_token_file": "/tok"}}]
    with pytest.raises(ConfigError, match="TLS"):
        bootstrap("h:1", env="e", zone="z", token_file="/tok")
    with pytest.raises(ConfigError):
        bootstrap("h:1", env="", zone="z")


def test_the_command_prints_the_same_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["xds-bootstrap", "--xds", "h:1", "--env", "e", "--zone", "z", "--node-id", "n"]) == 0
    assert json.loads(capsys.readouterr().out) == bootstrap("h:1", env="e", zone="z", node_id="n")
    assert main(["xds-bootstrap", "--xds", "h:1", "--env", "e", "--zone", "z", "--token-file", "t"]) == 2


CHANNEL_ERRORS = """
import os, sys
from discoverd.errors import ConfigError
from discoverd.grpc import channel
for var in ("GRPC_XDS_BOOTSTRAP", "GRPC_XDS_BOOTSTRAP_CONFIG"):
    os.environ.pop(var, None)
try:
    channel("app")
except ConfigError as exc:
    print("CONFIG", exc)
sys.modules["grpc"] = None  # as if grpcio were not installed
try:
    channel("app", bootstrap={})
except ImportError as exc:
    print("IMPORT", exc)
"""


def test_channel_errors_name_the_missing_bootstrap_or_extra() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHANNEL_ERRORS], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "CONFIG no xDS bootstrap" in out
    assert "IMPORT" in out and "discoverd[grpc]" in out
