"""Configuration of a memberlist-compatible gossip node (spec §1.13).

:class:`GossipConfig` holds memberlist's ``Config`` knobs with durations in seconds. The defaults are
``DefaultLANConfig`` except for the bind address (loopback, OS-assigned port); :meth:`GossipConfig.local` and
:meth:`GossipConfig.wan` give ``DefaultLocalConfig`` and ``DefaultWANConfig`` (go-micro's gossip registry uses
the Local preset with ``push_pull_interval=0`` and ``protocol_version=4``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from discoverd.core.gossip.framing import LABEL_MAX_SIZE
from discoverd.errors import ConfigError

__all__ = ["GossipConfig"]

_PROTOCOL_MIN = 1
_PROTOCOL_MAX = 5
_KEY_SIZES = (16, 24, 32)


@dataclass(frozen=True, kw_only=True, slots=True)
class GossipConfig:
    """Settings of one gossip node; durations are seconds. Invalid values raise :class:`ConfigError`."""

    # -- identity and addresses ------------------------------------------------------------------------------
    name: str = ""
    """Unique node name; empty = the node generates one (go-micro: ``micro-<host>-<uuid>``)."""
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    """UDP and TCP port to bind; 0 = OS-assigned (memberlist's default is 7946)."""
    advertise_host: str = ""
    """Address announced to peers; empty = the bound address."""
    advertise_port: int = 0
    """Port announced to peers; 0 = the bound port."""

    # -- protocol --------------------------------------------------------------------------------------------
    protocol_version: int = 2
    """memberlist protocol version spoken (1..5; go-micro uses 4); ≥ 2 selects encryption version 1."""
    delegate_protocol_min: int = 0
    delegate_protocol_max: int = 0
    delegate_protocol_version: int = 0
    enable_compression: bool = True
    """LZW-compress outgoing packets (when smaller) and streams."""
    keys: tuple[bytes, ...] = ()
    """AES keys (16/24/32 bytes), the first one primary; empty = no encryption."""
    gossip_verify_incoming: bool = True
    """With keys: refuse unencrypted incoming packets and streams."""
    gossip_verify_outgoing: bool = True
    """With keys: encrypt outgoing packets and streams."""
    disable_tcp_pings: bool = False
    """Do not fall back to a TCP ping when UDP probes of a peer fail."""
    handoff_queue_depth: int = 1024
    """Queued incoming messages (other than pings and acks) before new ones are dropped."""
    udp_buffer_size: int = 1400
    """Largest UDP packet sent; gossip fills ``udp_buffer_size − 2`` bytes (less the encryption and label
    overheads)."""
    label: str = ""
    """memberlist ≥ 0.3.0 cluster label (at most 255 bytes of UTF-8): sent as a ``[244][len][label]`` header
    in front of every packet and stream we originate and bound into the AES-GCM AAD; inbound packets and
    streams must carry the same label. Empty = no header at all (memberlist 0.2.x speaks no labels)."""
    skip_inbound_label_check: bool = False
    """Accept inbound packets and streams *without* a label header (as if they carried ``label``, which is
    still the AAD); one that does carry a header is then dropped (memberlist ``SkipInboundLabelCheck``)."""

    # -- failure detection (SWIM + Lifeguard) ---------------------------------------------------------------
    probe_interval: float = 1.0
    """Time between probes of successive members (scaled by the awareness score)."""
    probe_timeout: float = 0.5
    """Wait for a direct ack before trying indirect probes."""
    indirect_checks: int = 3
    """Peers asked to probe a member that missed its direct ack."""
    suspicion_mult: int = 4
    """Suspicion timeout multiplier: ``min = suspicion_mult × max(1, log10(n)) × probe_interval``."""
    suspicion_max_timeout_mult: int = 6
    """``max = suspicion_max_timeout_mult × min`` (the timeout of an unconfirmed suspicion)."""
    awareness_max_multiplier: int = 8
    """The local-health score ranges over ``0..awareness_max_multiplier − 1``: probe intervals stretch up to
    this factor."""
    dead_node_reclaim_time: float = 0.0
    """After this long dead, a node's name may be reused from another address; 0 = never."""
    tcp_timeout: float = 10.0
    """Timeout of TCP connects and stream exchanges (push/pull, TCP pings)."""

    # -- dissemination ---------------------------------------------------------------------------------------
    retransmit_mult: int = 4
    """Broadcasts are sent ``retransmit_mult × ⌈log10(n + 1)⌉`` times."""
    gossip_interval: float = 0.2
    """Time between gossip rounds."""
    gossip_nodes: int = 3
    """Random peers gossiped to per round; 0 disables gossip rounds."""
    gossip_to_the_dead_time: float = 30.0
    """Dead nodes still get gossip for this long, then are forgotten."""
    push_pull_interval: float = 30.0
    """Time between full-state TCP syncs with a random peer; 0 disables periodic push/pull (go-micro)."""
    queue_check_interval: float = 30.0
    """How often the node checks its incoming-message queue depth (memberlist HEAD; warning only)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        for key in self.keys:
            if not isinstance(key, bytes) or len(key) not in _KEY_SIZES:
                size = len(key) if isinstance(key, bytes) else type(key).__name__
                raise ConfigError(f"gossip keys must be 16, 24 or 32 bytes, got {size}")
        if len(set(self.keys)) != len(self.keys):
            raise ConfigError("gossip keys contain a duplicate")
        if not _PROTOCOL_MIN <= self.protocol_version <= _PROTOCOL_MAX:
            raise ConfigError(
                f"protocol_version must be in {_PROTOCOL_MIN}..{_PROTOCOL_MAX}, got {self.protocol_version}"
            )
        self._check_label()
        self._coerce_durations()
        self._check_ranges()

    def _check_label(self) -> None:
        if not isinstance(self.label, str):
            raise ConfigError(f"label must be a string, got {type(self.label).__name__}")
        try:
            size = len(self.label.encode())
        except UnicodeEncodeError:
            raise ConfigError("label is not valid UTF-8 text") from None
        if size > LABEL_MAX_SIZE:
            raise ConfigError(f"label must be at most {LABEL_MAX_SIZE} bytes, got {size}")

    @property
    def label_bytes(self) -> bytes:
        """:attr:`label` as it travels on the wire (UTF-8)."""
        return self.label.encode()

    def _coerce_durations(self) -> None:
        """Store every duration as a float (ints accepted); anything but a number is a ConfigError."""
        for name in _DURATIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
            object.__setattr__(self, name, float(value))

    def _check_ranges(self) -> None:
        for name in (
            "probe_interval",
            "probe_timeout",
            "gossip_interval",
            "tcp_timeout",
            "queue_check_interval",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("push_pull_interval", "gossip_to_the_dead_time", "dead_node_reclaim_time"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be >= 0 seconds, got {value!r}")
        minimums = {
            "retransmit_mult": 1,
            "suspicion_mult": 1,
            "suspicion_max_timeout_mult": 1,
            "awareness_max_multiplier": 1,
            "handoff_queue_depth": 1,
            "udp_buffer_size": 64,
            "indirect_checks": 0,
            "gossip_nodes": 0,
        }
        for name, low in minimums.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)!r}")
        for name in ("bind_port", "advertise_port"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise ConfigError(f"{name} must be in 0..65535, got {getattr(self, name)!r}")
        for name in ("delegate_protocol_min", "delegate_protocol_max", "delegate_protocol_version"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ConfigError(f"{name} must be in 0..255, got {getattr(self, name)!r}")

    # -- presets ---------------------------------------------------------------------------------------------

    @classmethod
    def lan(cls, **overrides: Any) -> GossipConfig:
        """memberlist ``DefaultLANConfig`` (the class defaults) with ``overrides`` applied."""
        return cls._preset({}, overrides)

    @classmethod
    def local(cls, **overrides: Any) -> GossipConfig:
        """memberlist ``DefaultLocalConfig`` (loopback / small clusters) with ``overrides`` applied."""
        return cls._preset(_LOCAL, overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> GossipConfig:
        """memberlist ``DefaultWANConfig`` with ``overrides`` applied."""
        return cls._preset(_WAN, overrides)

    @classmethod
    def _preset(cls, preset: dict[str, Any], overrides: dict[str, Any]) -> GossipConfig:
        unknown = sorted(set(overrides) - _FIELD_NAMES)
        if unknown:
            raise ConfigError(f"unknown gossip setting(s): {', '.join(unknown)}")
        return cls(**{**preset, **overrides})

    def replace(self, **changes: Any) -> GossipConfig:
        """A copy with ``changes`` applied (validated again)."""
        unknown = sorted(set(changes) - _FIELD_NAMES)
        if unknown:
            raise ConfigError(f"unknown gossip setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(GossipConfig))
_DURATIONS = tuple(f.name for f in dataclasses.fields(GossipConfig) if f.type == "float")

_LOCAL: dict[str, Any] = {
    "tcp_timeout": 1.0,
    "indirect_checks": 1,
    "retransmit_mult": 2,
    "suspicion_mult": 3,
    "push_pull_interval": 15.0,
    "probe_timeout": 0.2,
    "gossip_interval": 0.1,
    "gossip_to_the_dead_time": 15.0,
}

_WAN: dict[str, Any] = {
    "tcp_timeout": 30.0,
    "suspicion_mult": 6,
    "push_pull_interval": 60.0,
    "probe_timeout": 3.0,
    "probe_interval": 5.0,
    "gossip_nodes": 4,
    "gossip_interval": 0.5,
    "gossip_to_the_dead_time": 60.0,
}
