"""Data keys for field encryption, behind a small KMS-shaped interface.

``KeyProvider`` is what the sealer and the opener need: the id and bytes of the key that
encrypts new records, and the bytes of any key by id (old keys keep decrypting after a
rotation). ``StaticKeyring`` serves keys from configuration
(``STREAMS_ENCRYPTION_KEYS="k2=<base64>,k1=<base64>"`` and ``STREAMS_ENCRYPTION_KEY_ID=k2``);
a KMS-backed provider implements the same two methods (fetching and caching data keys).
Keys are AES keys of 16, 24 or 32 bytes, given in standard or URL-safe base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Protocol

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
AES_KEY_BYTES = (16, 24, 32)


class KeyProvider(Protocol):
    """Where data keys come from (configuration, a KMS)."""

    def current(self) -> tuple[str, bytes]:
        """(key id, key bytes) of the key new records are encrypted with; raises
        ConfigError when no key is configured."""
        ...

    def key(self, key_id: str) -> bytes | None:
        """The key with this id, or None when unknown."""
        ...

    def key_ids(self) -> tuple[str, ...]:
        """Every known key id (for error messages)."""
        ...


class EncryptionSettings(BaseSettings):
    """Field-encryption configuration, read once at the edge (SDK, worker, CLI).

    ``sensitive_fields`` adds fields to those the schemas mark (``"streams.sensitive":
    true``): a comma list of ``<event type>.<field>``, e.g. ``email.requested.to``.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")

    encryption_keys: SecretStr | None = Field(
        default=None, description="comma list of <key id>=<base64 AES key>"
    )
    encryption_key_id: str | None = Field(
        default=None, description="the key id new events use (default: the first listed)"
    )
    sensitive_fields: str = Field(default="", description="extra <event type>.<field> list")

    def keyring(self) -> StaticKeyring:
        """The configured keys; ConfigError names a malformed entry."""
        text = self.encryption_keys.get_secret_value() if self.encryption_keys else ""
        return StaticKeyring.parse(text, current=self.encryption_key_id)

    def extra_fields(self) -> frozenset[str]:
        return frozenset(f.strip() for f in self.sensitive_fields.split(",") if f.strip())


def _decode_key(key_id: str, text: str) -> bytes:
    try:
        padded = text + "=" * (-len(text) % 4)
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"STREAMS_ENCRYPTION_KEYS: key {key_id!r} is not base64") from None
    if len(raw) not in AES_KEY_BYTES:
        raise ConfigError(
            f"STREAMS_ENCRYPTION_KEYS: key {key_id!r} has {len(raw)} bytes; "
            "an AES key has 16, 24 or 32"
        )
    return raw


class StaticKeyring:
    """Keys from configuration; the ``current`` one encrypts, every one decrypts."""

    def __init__(self, keys: Mapping[str, bytes], current: str | None = None) -> None:
        for key_id, raw in keys.items():
            if not KEY_ID.match(key_id):
                raise ConfigError(f"encryption key id {key_id!r}: use 1-64 of [A-Za-z0-9_.-]")
            if len(raw) not in AES_KEY_BYTES:
                raise ConfigError(f"encryption key {key_id!r}: {len(raw)} bytes, not 16/24/32")
        if current is not None and current not in keys:
            raise ConfigError(
                f"STREAMS_ENCRYPTION_KEY_ID={current!r} is not among the configured keys "
                f"({', '.join(keys) or 'none'})"
            )
        self._keys = dict(keys)
        self._current = current if current is not None else next(iter(keys), None)

    @classmethod
    def parse(cls, text: str, *, current: str | None = None) -> StaticKeyring:
        """``"k2=<base64>,k1=<base64>"``; ConfigError names the malformed entry."""
        keys: dict[str, bytes] = {}
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            key_id, sep, value = entry.partition("=")
            key_id = key_id.strip()
            if not sep or not key_id:
                raise ConfigError(
                    "STREAMS_ENCRYPTION_KEYS: each entry must be <key id>=<base64 key>"
                )
            if key_id in keys:
                raise ConfigError(f"STREAMS_ENCRYPTION_KEYS: key id {key_id!r} listed twice")
            keys[key_id] = _decode_key(key_id, value.strip())
        return cls(keys, current=current)

    def current(self) -> tuple[str, bytes]:
        if self._current is None:
            raise ConfigError(
                "no encryption key configured: set STREAMS_ENCRYPTION_KEYS "
                "(and STREAMS_ENCRYPTION_KEY_ID) to publish sensitive fields"
            )
        return self._current, self._keys[self._current]

    def key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)


def new_key_b64() -> str:
    """A fresh random AES-256 key in URL-safe base64 (for configuration)."""
    import os

    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
