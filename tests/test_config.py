"""Configuration precedence (defaults < env < TOML < flags), validation, and the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

import discoverd
from discoverd.config import ServerConfig, load_config
from discoverd.errors import ConfigError
from discoverd.testing import ServerProcess
from tests.helpers import Wire


def test_defaults_match_the_go_server() -> None:
    c = ServerConfig(hostname="h")
    assert c.addr == "127.0.0.1:7171"
    assert (c.poll_hold, c.evict_after, c.evict_interval, c.protect_threshold) == (30.0, 90.0, 60.0, 0.85)
    assert (c.zone, c.region, c.env) == ("zone01", "region01", "dev")
    assert c.enable_protect is False


def test_env_then_toml_then_flags(tmp_path: Path) -> None:
    env = {
        "ZONE": "envzone",
        "REGION": "r",
        "DEPLOY_ENV": "uat",
        "HOSTNAME": "envhost",
        "DISCOVERY_NODES": "a:1,b:2",
    }
    assert load_config(environ=env).nodes == ("a:1", "b:2")
    toml = tmp_path / "d.toml"
    toml.write_text('zone = "tomlzone"\npoll_hold = 5\nenable_protect = true\nnodes = ["c:3"]\n')
    c = load_config(toml_path=toml, environ=env, overrides={"zone": "flagzone", "poll_hold": None})
    assert c.zone == "flagzone"
    assert c.poll_hold == 5.0
    assert c.enable_protect is True
    assert c.env == "uat" and c.hostname == "envhost" and c.nodes == ("c:3",)


@pytest.mark.parametrize(
    "overrides",
    [
        {"addr": "nohostport"},
        {"addr": "h:99999"},
        {"poll_hold": 0},
        {"protect_threshold": 1.5},
        {"zone": ""},
        {"nodes": "a:1,bad"},
        {"evict_after": "soon"},
    ],
)
def test_invalid_settings_raise_config_error(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_config(environ={}, overrides=overrides)


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "d.toml"
    toml.write_text("pol_hold = 5\n")
    with pytest.raises(ConfigError, match="pol_hold"):
        load_config(toml_path=toml, environ={})


def test_cli_reports_bad_config_with_exit_2() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "discoverd", "serve", "--addr", "bogus"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert "HOST:PORT" in out.stderr


def test_cli_help_lists_the_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "discoverd", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    for flag in (
        "--addr",
        "--advertise",
        "--zone",
        "--region",
        "--env",
        "--hostname",
        "--nodes",
        "--poll-hold",
        "--evict-after",
        "--evict-interval",
        "--protect-threshold",
        "--enable-protect",
        "--log-level",
        "--config",
    ):
        assert flag in out.stdout


async def test_served_process_uses_flags_and_env() -> None:
    args = ["--zone", "z9", "--env", "prod", "--hostname", "cli-node", "--advertise", "10.1.2.3:7171"]
    with ServerProcess(args) as srv:
        async with aiohttp.ClientSession() as http:
            data, _ = await Wire(http, srv.addr).get(
                "fetch", {"env": "prod", "appid": "infra.discovery", "status": "1"}
            )
    (me,) = data["data"]["instances"]["z9"]
    assert me["hostname"] == "cli-node"
    assert me["addrs"] == ["http://10.1.2.3:7171"]
    await asyncio.sleep(0)


def test_public_namespace_is_sorted_and_complete() -> None:
    assert discoverd.__all__ == sorted(discoverd.__all__)
    for name in discoverd.__all__:
        assert hasattr(discoverd, name), name


def test_serve_refuses_bad_security_settings_with_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from discoverd.cli import main

    assert (
        main(
            [
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--tls-cert",
                str(tmp_path / "nope.pem"),
                "--tls-key",
                str(tmp_path / "nope.key"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("discoverd: ") and err.count("\n") == 1
    assert main(["serve", "--addr", "127.0.0.1:0", "--token", "t:superuser"]) == 2
