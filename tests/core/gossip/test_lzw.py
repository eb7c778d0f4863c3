"""LZW: byte equality with Go's compress/lzw (LSB, 8) from a committed fixture, reader semantics, limits.

``fixtures/lzw_go.json`` was produced by a throwaway Go 1.19 program (``lzw.NewWriter(&buf, lzw.LSB, 8)``,
one ``Write``, ``Close``; ``lzw.NewReader`` + ``io.ReadAll`` for the ``decode`` cases). Inputs are given by
recipes (below) so the file stays small; outputs by length + SHA-256 (and hex when short).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip import lzw
from discoverd.errors import GossipDecodeError

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "lzw_go.json").read_text())
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
WORDS += ["service", "registry", "gossip", "node", "alive", "dead", "suspect", "ping"]


def stream(seed: str, n: int) -> bytes:
    """SHA-256 counter stream: sha256(seed || u32 BE counter) blocks, truncated to ``n`` bytes."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed.encode() + i.to_bytes(4, "big")).digest()
        i += 1
    return bytes(out[:n])


def build(recipe: dict[str, Any]) -> bytes:
    """The input bytes a fixture recipe stands for (mirrors the Go generator)."""
    kind, n = str(recipe["kind"]), int(recipe.get("length", 0))
    if kind == "hex":
        return bytes.fromhex(recipe.get("hex", ""))
    if kind == "repeat":
        pattern = bytes.fromhex(recipe["hex"])
        return (pattern * (n // len(pattern) + 1))[:n]
    if kind == "sha256":
        return stream(recipe["seed"], n)
    if kind == "alphabet":
        alphabet = recipe["alphabet"].encode()
        return bytes(alphabet[b % len(alphabet)] for b in stream(recipe["seed"], n))
    assert kind == "words", kind
    s = stream(recipe["seed"], n + 1)
    text: list[str] = []
    size = i = 0
    while size < n:
        word = WORDS[s[i % len(s)] % len(WORDS)] + " "
        text.append(word)
        size += len(word)
        i += 1
    return "".join(text)[:n].encode()


ENCODE_CASES = FIXTURE["cases"]
DECODE_CASES = FIXTURE["decode"]


def test_fixture_covers_the_interesting_cases() -> None:
    names = {c["name"] for c in ENCODE_CASES}
    assert {"empty", "one_zero", "kwkwk_aaa", "random_5000", "random_70000", "text_70000"} <= names
    assert max(c["in_len"] for c in ENCODE_CASES) >= 70000
    assert any(not c["ok"] for c in DECODE_CASES) and any(c["ok"] for c in DECODE_CASES)


@pytest.mark.parametrize("case", ENCODE_CASES, ids=[c["name"] for c in ENCODE_CASES])
def test_compress_is_byte_identical_with_go(case: dict[str, Any]) -> None:
    data = build(case["recipe"])
    assert len(data) == case["in_len"]
    assert hashlib.sha256(data).hexdigest() == case["in_sha256"]
    out = lzw.compress(data)
    if "out_hex" in case:
        assert out.hex() == case["out_hex"]
    assert len(out) == case["out_len"]
    assert hashlib.sha256(out).hexdigest() == case["out_sha256"]
    assert lzw.decompress(out) == data


@pytest.mark.parametrize("case", DECODE_CASES, ids=[c["name"] for c in DECODE_CASES])
def test_decompress_agrees_with_go_reader(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    if not case["ok"]:
        with pytest.raises(GossipDecodeError):
            lzw.decompress(data)
        return
    out = lzw.decompress(data)
    assert len(out) == case["out_len"]
    assert hashlib.sha256(out).hexdigest() == case["out_sha256"]


def test_known_small_outputs() -> None:
    assert lzw.compress(b"") == bytes.fromhex("000302")  # clear, end (9 bits each)
    assert lzw.compress(b"\x00") == bytes.fromhex("00010404")
    assert lzw.decompress(bytes.fromhex("000302")) == b""


def test_max_size_is_enforced() -> None:
    packed = lzw.compress(b"a" * 1000)
    assert lzw.decompress(packed, max_size=1000) == b"a" * 1000
    with pytest.raises(GossipDecodeError, match="exceeds"):
        lzw.decompress(packed, max_size=999)


def test_truncated_stream_and_invalid_code_are_errors() -> None:
    packed = lzw.compress(b"hello hello hello")
    with pytest.raises(GossipDecodeError):
        lzw.decompress(packed[:-2])
    # clear, then code 300 while the next free code is 258
    bad = (256 | (300 << 9)).to_bytes(3, "little")
    with pytest.raises(GossipDecodeError, match="invalid code"):
        lzw.decompress(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000) | st.text(alphabet="ab", max_size=6000).map(str.encode))
def test_round_trip(data: bytes) -> None:
    assert lzw.decompress(lzw.compress(data)) == data
