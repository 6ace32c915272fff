"""End-to-end encryption of sensitive event fields (issue 12).

``keys`` (KMS-shaped key provider, configuration), ``cipher`` (AES-GCM tokens), ``fields``
(which fields, sealing in the SDK, opening in the worker). ``build`` wires them from
settings for the SDK, the worker and the DLQ CLI.
"""

from __future__ import annotations

from typing import Any

from streams.crypto.cipher import FieldCipher, UndecryptableField, UnknownKeyId
from streams.crypto.fields import DecryptingDecoder, EventSealer, SensitiveCatalog
from streams.crypto.keys import EncryptionSettings, KeyProvider, StaticKeyring

__all__ = [
    "DecryptingDecoder",
    "EncryptionSettings",
    "EventSealer",
    "FieldCipher",
    "KeyProvider",
    "SensitiveCatalog",
    "StaticKeyring",
    "UndecryptableField",
    "UnknownKeyId",
    "decoder_for",
    "sealer_for",
]


def _catalog(store: Any, settings: EncryptionSettings, key_fields: dict[str, str]) -> Any:
    return SensitiveCatalog(store.all_versions, settings.extra_fields(), key_fields)


def sealer_for(
    store: Any,
    *,
    key_fields: dict[str, str] | None = None,
    settings: EncryptionSettings | None = None,
    keys: KeyProvider | None = None,
) -> EventSealer:
    """The SDK's sealer (keys from ``settings``/the environment unless given)."""
    settings = settings or EncryptionSettings()
    catalog = _catalog(store, settings, key_fields or {})
    return EventSealer(catalog, FieldCipher(keys or settings.keyring()))


def decoder_for(
    store: Any,
    *,
    key_fields: dict[str, str] | None = None,
    settings: EncryptionSettings | None = None,
    keys: KeyProvider | None = None,
) -> Any:
    """The worker's decoder: ``store`` itself when no schema has sensitive fields."""
    settings = settings or EncryptionSettings()
    catalog = _catalog(store, settings, key_fields or {})
    if not catalog.by_fingerprint:
        return store
    return DecryptingDecoder(store, catalog, FieldCipher(keys or settings.keyring()))


def decrypted_record(store: Any, value: bytes, keys: KeyProvider) -> dict[str, Any]:
    """The decoded record of ``value`` with its sensitive fields opened (operators' explicit
    ``--decrypt``); raises DecodeError or UndecryptableField."""
    from streams.crypto.fields import open_record

    writer, record = store.decode(value)
    fields = SensitiveCatalog([writer]).by_fingerprint.get(writer.fingerprint)
    if fields:
        open_record(FieldCipher(keys), writer.event_type, fields, record)
    return dict(record)


def read_key_file(path: str) -> StaticKeyring:
    """Keys from a file of ``<key id>=<base64>`` entries (commas or lines); ConfigError."""
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        from streams.errors import ConfigError

        raise ConfigError(f"{path}: cannot read the key file: {exc.strerror}") from None
    return StaticKeyring.parse(",".join(text.split()))
