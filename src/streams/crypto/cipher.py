"""AES-GCM sealing of one field value into a self-describing text token.

A sealed value is ``enc1:<key id>:<base64url(nonce(12) | ciphertext | tag(16))>``: it stays
an Avro ``string`` (schemas do not change), names its key (rotation), and authenticates
``aad`` — the event type and field name — so a ciphertext cannot be moved to another field.
``open`` raises ``UnknownKeyId`` or ``UndecryptableField`` (both ``Permanent``: retrying
cannot help) with a reason naming the field and never the value.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.crypto.keys import KeyProvider
from streams.errors import Permanent

PREFIX = "enc1:"
NONCE_BYTES = 12
TAG_BYTES = 16


class UndecryptableField(Permanent):
    """A sensitive field cannot be decrypted (malformed token, wrong key, tampered)."""


class UnknownKeyId(UndecryptableField):
    """A sensitive field names a key id this reader does not hold."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class FieldCipher:
    """Seals and opens field values with the provider's keys (AESGCM objects cached)."""

    def __init__(self, keys: KeyProvider) -> None:
        self._keys = keys
        self._aead: dict[str, AESGCM] = {}

    def _aesgcm(self, key_id: str, raw: bytes) -> AESGCM:
        aead = self._aead.get(key_id)
        if aead is None:
            aead = self._aead[key_id] = AESGCM(raw)
        return aead

    def seal(self, value: str, aad: bytes) -> str:
        """``value`` encrypted with the current key; ConfigError when there is none."""
        key_id, raw = self._keys.current()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aesgcm(key_id, raw).encrypt(nonce, value.encode("utf-8"), aad)
        token = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{PREFIX}{key_id}:{token}"

    def open(self, value: str, aad: bytes, *, where: str) -> str:
        """The plaintext of a sealed ``value``; ``where`` names the field in errors."""
        if not value.startswith(PREFIX):
            raise UndecryptableField(f"{where}: sensitive field is not encrypted (no {PREFIX})")
        key_id, sep, token = value[len(PREFIX) :].partition(":")
        if not sep:
            raise UndecryptableField(f"{where}: malformed encrypted value (no key id)")
        raw = self._keys.key(key_id)
        if raw is None:
            known = ", ".join(self._keys.key_ids()) or "none"
            raise UnknownKeyId(
                f"{where}: encrypted with unknown key id {key_id[:64]!r} (known: {known})"
            )
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise UndecryptableField(f"{where}: malformed encrypted value (base64)") from None
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise UndecryptableField(f"{where}: malformed encrypted value (too short)")
        try:
            plain = self._aesgcm(key_id, raw).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise UndecryptableField(
                f"{where}: authentication failed with key {key_id!r} (wrong key or tampered)"
            ) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise UndecryptableField(f"{where}: decrypted value is not UTF-8") from None
