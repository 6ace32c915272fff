"""Webhook signing: a known vector, verification rules, rotation, Stripe-style headers."""

from __future__ import annotations

import pytest

from streams.jobs import signing
from streams.jobs.signing import SignatureError

SECRET = "whsec_test_secret"
BODY = '{"order_id":"o-1","amount":1250}'
TS = 1_700_000_000
# printf '%s' '1700000000.{"order_id":"o-1","amount":1250}' | openssl dgst -sha256 -hmac ...
KNOWN_HEX = "5860ceb2d72b4cae9bf4f8a0952a743fc4c8e1b73c7d099d077dc723ffd0ab55"
EMPTY_BODY_HEX = "316b9ab98c15bfa039d243f3196acee619cf29749a91a634e6a8154e2f7b6727"


def _verify(**overrides: object) -> int:
    args: dict[str, object] = {
        "body": BODY,
        "timestamp": str(TS),
        "signature": f"v1={KNOWN_HEX}",
        "secrets": SECRET,
        "now_s": TS + 10,
    }
    args.update(overrides)
    return signing.verify(**args)  # type: ignore[arg-type]


def test_signature_matches_an_independent_openssl_vector() -> None:
    assert signing.compute_signature(SECRET, TS, BODY) == KNOWN_HEX
    assert signing.compute_signature(SECRET.encode(), TS, BODY.encode()) == KNOWN_HEX
    assert signing.compute_signature(SECRET, TS, b"") == EMPTY_BODY_HEX


def test_sign_headers_carry_timestamp_and_v1_signature() -> None:
    headers = signing.sign_headers(SECRET, TS, BODY)
    assert headers == {
        "X-Streams-Timestamp": "1700000000",
        "X-Streams-Signature": f"v1={KNOWN_HEX}",
    }


def test_signature_header_has_one_entry_per_secret_for_rotation() -> None:
    header = signing.signature_header(["new-secret", SECRET], TS, BODY)
    entries = header.split(",")
    assert len(entries) == 2
    assert entries[1] == f"v1={KNOWN_HEX}"
    assert _verify(signature=header) == TS


def test_valid_signature_returns_the_timestamp() -> None:
    assert _verify() == TS


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"body": BODY.replace("1250", "1251")}, "does not match"),
        ({"body": BODY + " "}, "does not match"),
        ({"secrets": "another-secret"}, "does not match"),
        ({"signature": f"v1={KNOWN_HEX[:-1]}0"}, "does not match"),
        ({"signature": f"v1={KNOWN_HEX[:-2]}"}, "does not match"),
        ({"signature": "v1=" + "z" * 64}, "does not match"),
        ({"signature": f"v0={KNOWN_HEX}"}, "no v1 signature"),
        ({"signature": ""}, "no v1 signature"),
        ({"signature": None}, "no v1 signature"),
        ({"timestamp": None}, "missing timestamp"),
        ({"timestamp": " "}, "missing timestamp"),
        ({"timestamp": "17e8"}, "malformed timestamp"),
        ({"timestamp": "-1700000000"}, "malformed timestamp"),
        ({"timestamp": "\uff11\uff17\uff10\uff10"}, "malformed timestamp"),  # fullwidth digits
        ({"timestamp": str(TS + 1)}, "does not match"),  # the timestamp is signed too
        ({"now_s": TS + 301}, "tolerance"),
        ({"now_s": TS - 301}, "tolerance"),  # from the future
        ({"now_s": TS + 61, "tolerance_s": 60}, "tolerance"),
    ],
)
def test_verification_fails_with_a_specific_reason(
    overrides: dict[str, object], reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        _verify(**overrides)


def test_tolerance_boundary_is_inclusive() -> None:
    assert _verify(now_s=TS + 300) == TS
    assert _verify(now_s=TS - 300) == TS


def test_any_of_several_secrets_verifies_during_rotation() -> None:
    assert _verify(secrets=["new-secret", SECRET]) == TS
    assert _verify(secrets=(SECRET.encode(),)) == TS
    with pytest.raises(SignatureError):
        _verify(secrets=["new-secret", "older-secret"])


def test_unknown_schemes_and_extra_entries_are_ignored() -> None:
    header = f"v0=deadbeef, v2=abc ,v1={'0' * 64},v1={KNOWN_HEX.upper()}"
    assert _verify(signature=header) == TS


def test_error_messages_never_contain_the_secret_or_expected_signature() -> None:
    with pytest.raises(SignatureError) as info:
        _verify(body="tampered")
    text = str(info.value)
    assert SECRET not in text
    assert KNOWN_HEX not in text


@pytest.mark.parametrize("secrets", [[], [""], ""])
def test_verify_requires_a_secret(secrets: object) -> None:
    with pytest.raises(ValueError, match="secret"):
        _verify(secrets=secrets)


def test_signing_requires_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        signing.compute_signature("", TS, BODY)
    with pytest.raises(ValueError, match="secret"):
        signing.signature_header([], TS, BODY)


def test_stripe_style_combined_header() -> None:
    header = f"t={TS},v1={KNOWN_HEX},v0=legacy"
    assert signing.verify_stripe(body=BODY, header=header, secrets=SECRET, now_s=TS) == TS
    with pytest.raises(SignatureError, match="does not match"):
        signing.verify_stripe(body=BODY + "x", header=header, secrets=SECRET, now_s=TS)
    with pytest.raises(SignatureError, match="missing timestamp"):
        signing.verify_stripe(body=BODY, header=f"v1={KNOWN_HEX}", secrets=SECRET, now_s=TS)
    with pytest.raises(SignatureError, match="several timestamps"):
        signing.verify_stripe(
            body=BODY, header=f"t={TS},t={TS},v1={KNOWN_HEX}", secrets=SECRET, now_s=TS
        )
    with pytest.raises(SignatureError, match="tolerance"):
        signing.verify_stripe(body=BODY, header=header, secrets=SECRET, now_s=TS + 1000)


def test_parse_signatures_bounds_the_number_of_entries() -> None:
    header = ",".join(["v1=" + "0" * 64] * 100)
    assert len(signing.parse_signatures(header)) == 16
