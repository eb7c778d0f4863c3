"""AES-GCM keyring: blob layout (v0/v1), key trial order and rotation, rejection of bad blobs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from discoverd.core.gossip.keyring import ENCRYPT_OVERHEAD, Keyring, encrypted_length
from discoverd.errors import GossipDecodeError

K1 = b"micro-gossip-key"  # go-micro's default secret, 16 bytes
K2 = bytes(range(24))
K3 = bytes(range(32))
NONCE = bytes(range(12))


def test_v1_layout_matches_plain_aes_gcm() -> None:
    blob = Keyring([K1]).encrypt(b"hello", aad=b"ad", nonce=NONCE)
    assert blob[0] == 1 and blob[1:13] == NONCE
    assert blob[13:] == AESGCM(K1).encrypt(NONCE, b"hello", b"ad")
    assert len(blob) == ENCRYPT_OVERHEAD[1] + 5 == encrypted_length(1, 5)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 31, 32])
def test_v0_pads_pkcs7_always(n: int) -> None:
    plain = bytes(range(n))
    blob = Keyring([K1]).encrypt(plain, version=0, nonce=NONCE)
    assert blob[0] == 0
    padded = AESGCM(K1).decrypt(NONCE, blob[13:], b"")
    pad = 16 - n % 16
    assert padded == plain + bytes([pad]) * pad
    assert len(blob) == encrypted_length(0, n) <= ENCRYPT_OVERHEAD[0] + n
    assert Keyring([K1]).decrypt(blob) == plain


def test_overheads() -> None:
    assert ENCRYPT_OVERHEAD == {0: 45, 1: 29}


def test_random_nonces_differ() -> None:
    kr = Keyring([K1])
    assert kr.encrypt(b"x")[1:13] != kr.encrypt(b"x")[1:13]


def test_key_validation() -> None:
    for bad in (b"", b"short", bytes(17), bytes(33)):
        with pytest.raises(ValueError):
            Keyring([bad])
    with pytest.raises(ValueError):
        Keyring([])
    with pytest.raises(ValueError):
        Keyring([K1]).encrypt(b"x", version=2)
    with pytest.raises(ValueError):
        Keyring([K1]).encrypt(b"x", nonce=b"short")
    assert Keyring([K1, K2, K3, K1]).keys == (K1, K2, K3)


def test_rotation() -> None:
    old, new = Keyring([K1]), Keyring([K2])
    blob_old = old.encrypt(b"from old")
    kr = Keyring([K1])
    kr.add_key(K2)
    kr.add_key(K2)  # no-op
    assert kr.keys == (K1, K2) and kr.primary == K1
    assert kr.decrypt(new.encrypt(b"from new")) == b"from new"  # secondary keys decrypt
    kr.use_key(K2)
    assert kr.keys == (K2, K1) and kr.primary == K2
    assert new.decrypt(kr.encrypt(b"x")) == b"x"  # the primary encrypts
    with pytest.raises(ValueError):
        kr.remove_key(K2)
    with pytest.raises(ValueError):
        kr.use_key(K3)
    kr.remove_key(K3)  # not installed: no-op
    kr.remove_key(K1)
    assert list(kr.keys) == [K2]
    with pytest.raises(GossipDecodeError):
        kr.decrypt(blob_old)


def test_rejects_bad_blobs() -> None:
    kr = Keyring([K1])
    blob = kr.encrypt(b"payload", aad=b"ad")
    cases = [
        b"",
        bytes([2]) + blob[1:],  # unknown version
        blob[:-1],  # tag cut
        blob[:12] + bytes([blob[12] ^ 1]) + blob[13:],  # nonce flipped
        bytes([1]) + bytes(27),  # 28 < 29
        bytes([0]) + bytes(43),  # 44 < 45
        Keyring([K2]).encrypt(b"payload", aad=b"ad"),  # unknown key
    ]
    for c in cases:
        with pytest.raises(GossipDecodeError):
            kr.decrypt(c, aad=b"ad")
    with pytest.raises(GossipDecodeError):
        kr.decrypt(blob)  # wrong (empty) AAD
    assert kr.decrypt(blob, aad=b"ad") == b"payload"


@pytest.mark.parametrize("last", [0, 17, 200])
def test_v0_rejects_impossible_padding(last: int) -> None:
    plain = bytes(15) + bytes([last])
    blob = bytes([0]) + NONCE + AESGCM(K1).encrypt(NONCE, plain, b"")
    with pytest.raises(GossipDecodeError, match="padding"):
        Keyring([K1]).decrypt(blob)


@settings(max_examples=200, deadline=None)
@given(
    plain=st.binary(max_size=200),
    aad=st.binary(max_size=8),
    version=st.sampled_from([0, 1]),
    key=st.sampled_from([K1, K2, K3]),
)
def test_round_trip(plain: bytes, aad: bytes, version: int, key: bytes) -> None:
    sender, receiver = Keyring([key]), Keyring([K3 if key != K3 else K1, key])
    blob = sender.encrypt(plain, aad=aad, version=version)
    assert len(blob) == encrypted_length(version, len(plain))
    assert receiver.decrypt(blob, aad=aad) == plain
