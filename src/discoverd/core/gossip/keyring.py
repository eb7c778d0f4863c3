"""memberlist's AES-GCM keyring (spec §1.4).

A blob is ``[version][12-byte nonce][ciphertext || 16-byte tag]``. Version 1 encrypts the plaintext as is;
version 0 (used by nodes running protocol version 1) first pads it PKCS#7-style to a multiple of 16 bytes
(always 1–16 bytes added) and strips the padding after decryption. Keys are 16, 24 or 32 bytes (AES-128,
-192, -256); the first key is the primary, used to encrypt; every key is tried to decrypt, primary first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from discoverd.errors import GossipDecodeError, MissingExtra

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:
    raise MissingExtra("cryptography", "gossip", "the gossip registry backend (gossip://)") from exc

NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
BLOCK_SIZE: Final = 16
KEY_SIZES: Final = (16, 24, 32)
#: Bytes encryption adds at most, per version (v0: up to a full block of padding).
ENCRYPT_OVERHEAD: Final[dict[int, int]] = {
    0: 1 + NONCE_SIZE + TAG_SIZE + BLOCK_SIZE,
    1: 1 + NONCE_SIZE + TAG_SIZE,
}


def encrypted_length(version: int, plaintext_len: int) -> int:
    """Exact blob size for a plaintext of ``plaintext_len`` bytes (Go ``encryptedLength``)."""
    if version == 0:
        return 1 + NONCE_SIZE + plaintext_len + BLOCK_SIZE - plaintext_len % BLOCK_SIZE + TAG_SIZE
    return ENCRYPT_OVERHEAD[1] + plaintext_len


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) not in KEY_SIZES:
        raise ValueError("a key must be 16, 24 or 32 bytes (AES-128, AES-192 or AES-256)")
    return key


class Keyring:
    """An ordered set of AES keys; the first is the primary. Not thread-safe (mutate from one thread)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        """``keys``: at least one, each 16, 24 or 32 bytes (ValueError otherwise); duplicates are dropped."""
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        for key in keys:
            self.add_key(key)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """All installed keys, primary first."""
        return tuple(self._keys)

    @property
    def primary(self) -> bytes:
        """The key used to encrypt."""
        return self._keys[0]

    def add_key(self, key: bytes) -> None:
        """Install ``key`` as a secondary key (no-op if it is already installed)."""
        if _check_key(key) not in self._ciphers:
            self._keys.append(key)
            self._ciphers[key] = AESGCM(key)

    def use_key(self, key: bytes) -> None:
        """Make an installed key the primary (ValueError if it is not installed)."""
        if key not in self._ciphers:
            raise ValueError("the key is not installed in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove_key(self, key: bytes) -> None:
        """Uninstall ``key`` (ValueError if it is the primary; no-op if it is not installed)."""
        if key == self._keys[0]:
            raise ValueError("the primary key cannot be removed")
        if key in self._ciphers:
            self._keys.remove(key)
            del self._ciphers[key]

    def encrypt(
        self, plaintext: bytes, *, aad: bytes = b"", version: int = 1, nonce: bytes | None = None
    ) -> bytes:
        """``[version][nonce][ciphertext||tag]`` under the primary key; a random nonce unless one is given
        (12 bytes). ValueError for a version other than 0/1 or a nonce of the wrong size."""
        if version not in (0, 1):
            raise ValueError(f"unknown encryption version {version}")
        if nonce is None:
            nonce = os.urandom(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
        if version == 0:
            pad = BLOCK_SIZE - len(plaintext) % BLOCK_SIZE
            plaintext += bytes((pad,)) * pad
        sealed = self._ciphers[self._keys[0]].encrypt(nonce, plaintext, aad)
        return bytes((version,)) + nonce + sealed

    def decrypt(self, blob: bytes, *, aad: bytes = b"") -> bytes:
        """The plaintext of ``blob``, trying every key, primary first.

        GossipDecodeError for an empty blob, a version above 1, a blob shorter than the minimum (29 bytes
        for v1, 45 for v0), invalid v0 padding, or when no key authenticates it.
        """
        if not blob:
            raise GossipDecodeError("cannot decrypt an empty message")
        version = blob[0]
        if version > 1:
            raise GossipDecodeError(f"unsupported encryption version {version}")
        if len(blob) < ENCRYPT_OVERHEAD[version]:
            raise GossipDecodeError(f"encrypted message too short ({len(blob)} bytes)")
        nonce, sealed = blob[1 : 1 + NONCE_SIZE], blob[1 + NONCE_SIZE :]
        for key in self._keys:
            try:
                plain = self._ciphers[key].decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
            return plain if version == 1 else _unpad(plain)
        raise GossipDecodeError("no installed key decrypts the message")


def _unpad(plain: bytes) -> bytes:
    """Strip PKCS#7 padding: the last byte says how many bytes to drop (1–16), as Go's ``pkcs7decode``."""
    pad = plain[-1] if plain else 0
    if not 1 <= pad <= min(BLOCK_SIZE, len(plain)):
        raise GossipDecodeError("invalid padding in a version 0 encrypted message")
    return plain[:-pad]
