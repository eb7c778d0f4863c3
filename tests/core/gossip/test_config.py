"""Unit tests of GossipConfig: memberlist presets (spec §1.13) and validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from discoverd.core.gossip.config import GossipConfig
from discoverd.errors import ConfigError

# spec §1.13, one column per preset
LAN = {
    "tcp_timeout": 10.0,
    "indirect_checks": 3,
    "retransmit_mult": 4,
    "suspicion_mult": 4,
    "suspicion_max_timeout_mult": 6,
    "push_pull_interval": 30.0,
    "probe_interval": 1.0,
    "probe_timeout": 0.5,
    "disable_tcp_pings": False,
    "awareness_max_multiplier": 8,
    "gossip_nodes": 3,
    "gossip_interval": 0.2,
    "gossip_to_the_dead_time": 30.0,
    "gossip_verify_incoming": True,
    "gossip_verify_outgoing": True,
    "enable_compression": True,
    "udp_buffer_size": 1400,
    "handoff_queue_depth": 1024,
    "dead_node_reclaim_time": 0.0,
    "queue_check_interval": 30.0,
    "protocol_version": 2,
}
LOCAL = {
    **LAN,
    "tcp_timeout": 1.0,
    "indirect_checks": 1,
    "retransmit_mult": 2,
    "suspicion_mult": 3,
    "push_pull_interval": 15.0,
    "probe_timeout": 0.2,
    "gossip_interval": 0.1,
    "gossip_to_the_dead_time": 15.0,
}
WAN = {
    **LAN,
    "tcp_timeout": 30.0,
    "suspicion_mult": 6,
    "push_pull_interval": 60.0,
    "probe_interval": 5.0,
    "probe_timeout": 3.0,
    "gossip_nodes": 4,
    "gossip_interval": 0.5,
    "gossip_to_the_dead_time": 60.0,
}


def _make(name: str, value: object) -> GossipConfig:
    kwargs: dict[str, Any] = {name: value}
    return GossipConfig(**kwargs)


def _values(config: GossipConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in LAN}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (GossipConfig(), LAN),
        (GossipConfig.lan(), LAN),
        (GossipConfig.local(), LOCAL),
        (GossipConfig.wan(), WAN),
    ],
    ids=["default", "lan", "local", "wan"],
)
def test_presets_match_memberlist(config: GossipConfig, expected: dict[str, Any]) -> None:
    assert _values(config) == expected


def test_non_timing_defaults() -> None:
    c = GossipConfig()
    assert c.name == ""
    assert (c.bind_host, c.bind_port) == ("127.0.0.1", 0)
    assert (c.advertise_host, c.advertise_port) == ("", 0)
    assert (c.delegate_protocol_min, c.delegate_protocol_max, c.delegate_protocol_version) == (0, 0, 0)
    assert c.keys == ()


def test_durations_are_floats() -> None:
    float_fields = [f.name for f in dataclasses.fields(GossipConfig) if f.type == "float"]
    assert len(float_fields) == 8
    for config in (GossipConfig.lan(), GossipConfig.local(), GossipConfig.wan()):
        for name in float_fields:
            assert isinstance(getattr(config, name), float), name


def test_overrides_win_over_the_preset() -> None:
    c = GossipConfig.local(push_pull_interval=0, protocol_version=4, name="micro-x")  # go-micro's settings
    assert (c.push_pull_interval, c.protocol_version, c.name) == (0, 4, "micro-x")
    assert isinstance(c.push_pull_interval, float)  # ints are stored as float seconds
    assert c.retransmit_mult == 2
    assert GossipConfig.wan(probe_interval=2.0).probe_interval == 2.0
    assert GossipConfig.lan(gossip_nodes=5).gossip_nodes == 5


def test_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="probe_intervall"):
        GossipConfig.local(probe_intervall=1.0)
    with pytest.raises(ConfigError, match="bogus"):
        GossipConfig().replace(bogus=1)


def test_frozen_and_keyword_only() -> None:
    c = GossipConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.probe_interval = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        GossipConfig("node")  # type: ignore[call-arg]


def test_replace_validates_again() -> None:
    c = GossipConfig.local()
    assert c.replace(gossip_nodes=1).gossip_nodes == 1
    assert c.replace(gossip_nodes=1).retransmit_mult == 2
    with pytest.raises(ConfigError):
        c.replace(probe_interval=0)


# -- keys ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 24, 32])
def test_valid_key_sizes(size: int) -> None:
    key = bytes(range(size))
    assert GossipConfig(keys=(key,)).keys == (key,)


@pytest.mark.parametrize("size", [0, 1, 15, 17, 31, 33, 64])
def test_invalid_key_sizes(size: int) -> None:
    with pytest.raises(ConfigError, match="16, 24 or 32"):
        GossipConfig(keys=(b"k" * 16, b"x" * size))


def test_keys_must_be_bytes_and_distinct() -> None:
    with pytest.raises(ConfigError):
        GossipConfig(keys=("a" * 16,))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="duplicate"):
        GossipConfig(keys=(b"k" * 16, b"k" * 16))


def test_keys_list_becomes_a_tuple_primary_first() -> None:
    a, b = b"a" * 16, b"b" * 32
    c = GossipConfig(keys=[a, b])  # type: ignore[arg-type]
    assert c.keys == (a, b)
    assert isinstance(c.keys, tuple)
    assert hash(c) == hash(GossipConfig(keys=(a, b)))


# -- ranges ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_protocol_versions_accepted(version: int) -> None:
    assert GossipConfig(protocol_version=version).protocol_version == version


@pytest.mark.parametrize("version", [0, 6, -1])
def test_protocol_versions_rejected(version: int) -> None:
    with pytest.raises(ConfigError, match="protocol_version"):
        GossipConfig(protocol_version=version)


@pytest.mark.parametrize(
    "name", ["probe_interval", "probe_timeout", "gossip_interval", "tcp_timeout", "queue_check_interval"]
)
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_positive_durations(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=name):
        _make(name, value)


@pytest.mark.parametrize("value", [True, "1", None])
def test_durations_must_be_numbers(value: object) -> None:
    with pytest.raises(ConfigError, match="probe_interval"):
        _make("probe_interval", value)


@pytest.mark.parametrize("name", ["push_pull_interval", "gossip_to_the_dead_time", "dead_node_reclaim_time"])
def test_durations_where_zero_means_off(name: str) -> None:
    assert getattr(_make(name, 0.0), name) == 0.0
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=name):
            _make(name, bad)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("retransmit_mult", 0),
        ("suspicion_mult", 0),
        ("suspicion_max_timeout_mult", 0),
        ("awareness_max_multiplier", 0),
        ("handoff_queue_depth", 0),
        ("udp_buffer_size", 10),
        ("indirect_checks", -1),
        ("gossip_nodes", -1),
        ("bind_port", -1),
        ("bind_port", 65536),
        ("advertise_port", 70000),
        ("delegate_protocol_min", -1),
        ("delegate_protocol_max", 256),
        ("delegate_protocol_version", 300),
    ],
)
def test_integer_ranges(name: str, bad: int) -> None:
    with pytest.raises(ConfigError, match=name):
        _make(name, bad)


def test_zero_counts_allowed_where_they_mean_off() -> None:
    c = GossipConfig(indirect_checks=0, gossip_nodes=0, bind_port=65535, delegate_protocol_max=255)
    assert (c.indirect_checks, c.gossip_nodes, c.bind_port, c.delegate_protocol_max) == (0, 0, 65535, 255)
