"""Sensitive fields: sealed by the SDK's preparer, opened by the worker's decoder."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from streams.catalog import load_catalog
from streams.crypto import DecryptingDecoder, SensitiveCatalog, StaticKeyring, sealer_for
from streams.crypto.cipher import FieldCipher, UndecryptableField, UnknownKeyId
from streams.errors import ConfigError, InvalidPayload, Permanent
from streams.events import EXAMPLE_PAYLOADS
from streams.publish.prepare import Preparer
from streams.serde import SchemaStore

REPO = Path(__file__).resolve().parents[2]
STORE = SchemaStore.load(REPO / "schemas")
CATALOG = load_catalog(REPO / "topics.yaml")
KEY_FIELDS = {n: f.key_field for n, f in CATALOG.families.items()}
K1, K2 = bytes(range(32)), bytes(range(100, 132))  # fixed: test ids must match across xdist workers


def preparer(keys: StaticKeyring) -> Preparer:
    return Preparer(
        CATALOG,
        STORE,
        topic_prefix="",
        producer_name="t",
        sealer=sealer_for(STORE, key_fields=KEY_FIELDS, keys=keys),
    )


def decoder(keys: StaticKeyring) -> DecryptingDecoder:
    return DecryptingDecoder(
        STORE, SensitiveCatalog(STORE.all_versions, key_fields=KEY_FIELDS), FieldCipher(keys)
    )


PUSH = {**EXAMPLE_PAYLOADS["push.requested"], "device_ids": ["tok-SECRET-1", "tok-SECRET-2"]}


def test_the_device_tokens_are_ciphertext_on_the_wire_and_plaintext_for_the_handler() -> None:
    keys = StaticKeyring({"k1": K1})
    _, _, value, _, _ = preparer(keys).record("push.requested", PUSH)
    assert b"tok-SECRET" not in value
    assert value.count(b"enc1:k1:") == 2
    event = decoder(keys).decode_event(value)
    assert event.device_ids == ["tok-SECRET-1", "tok-SECRET-2"]  # type: ignore[attr-defined]
    assert event.user_id == "user-42"  # type: ignore[attr-defined]


def test_rotation_old_records_decrypt_and_new_ones_use_the_new_key() -> None:
    old = preparer(StaticKeyring({"k1": K1})).record("push.requested", PUSH)[2]
    rotated = StaticKeyring({"k2": K2, "k1": K1}, current="k2")
    new = preparer(rotated).record("push.requested", PUSH)[2]
    assert b"enc1:k2:" in new and b"enc1:k1:" not in new
    for value in (old, new):
        assert decoder(rotated).decode_event(value).device_ids[0] == "tok-SECRET-1"  # type: ignore[attr-defined]


def test_an_unknown_key_id_is_permanent_with_a_readable_reason() -> None:
    value = preparer(StaticKeyring({"k0": K1})).record("push.requested", PUSH)[2]
    with pytest.raises(
        UnknownKeyId, match=r"push.requested.device_ids\[0\]: .*unknown key id 'k0' \(known: k1\)"
    ) as info:
        decoder(StaticKeyring({"k1": K2})).decode_event(value)
    assert isinstance(info.value, Permanent)
    assert "tok-SECRET" not in str(info.value)


def test_a_wrong_key_or_a_moved_ciphertext_fails_authentication() -> None:
    cipher = FieldCipher(StaticKeyring({"k1": K1}))
    sealed = cipher.seal("secret", b"push.requested/device_ids")
    with pytest.raises(UndecryptableField, match="authentication failed"):
        cipher.open(sealed, b"email.requested/to", where="x")
    with pytest.raises(UndecryptableField, match="authentication failed"):
        FieldCipher(StaticKeyring({"k1": K2})).open(sealed, b"push.requested/device_ids", where="x")
    with pytest.raises(UndecryptableField, match="not encrypted"):
        cipher.open("plain", b"a", where="x")


def test_publishing_a_sensitive_field_without_a_key_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="no encryption key configured"):
        preparer(StaticKeyring({})).record("push.requested", PUSH)


def test_events_without_sensitive_fields_are_unchanged() -> None:
    keys = StaticKeyring({"k1": K1})
    value = preparer(keys).record("webhook.requested", EXAMPLE_PAYLOADS["webhook.requested"])[2]
    assert b"enc1:" not in value
    assert decoder(keys).decode_event(value) == STORE.decode_event(value)


def test_configured_fields_are_sensitive_too_but_never_the_key_field() -> None:
    extra = frozenset({"email.requested.to"})
    catalog = SensitiveCatalog(STORE.all_versions, extra, KEY_FIELDS)
    assert ("to", "one") in catalog.by_type["email.requested"]
    with pytest.raises(Exception, match="key field"):
        SensitiveCatalog(STORE.all_versions, frozenset({"push.requested.user_id"}), KEY_FIELDS)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("k1", "<key id>=<base64 key>"),
        ("k1=!!!", "not base64"),
        ("k1=" + base64.b64encode(b"short").decode(), "has 5 bytes"),
        ("k1=" + base64.b64encode(K1).decode() + ",k1=" + base64.b64encode(K2).decode(), "twice"),
    ],
)
def test_bad_key_configuration_is_named(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        StaticKeyring.parse(text)


def test_the_current_key_must_be_configured() -> None:
    with pytest.raises(ConfigError, match="STREAMS_ENCRYPTION_KEY_ID='k9'"):
        StaticKeyring.parse("k1=" + base64.urlsafe_b64encode(K1).decode(), current="k9")
