"""Signing: the v2 webhook vector, what is signed, fail-closed clocks, rotation, purpose
labels, placeholder secrets, Stripe-style headers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import ConfigError
from streams.jobs import signing
from streams.jobs.mail_render import unsubscribe_token
from streams.jobs.signing import SignatureError

SECRET = "whsec_test_secret_value"
BODY = '{"order_id":"o-1","amount":1250}'
TS = 1_700_000_000
EVENT_ID = "evt-1"
URL = "https://hooks.example.com/in?t=1"
NAME = "order.created"
# printf 'streams-webhook.v2\nevt-1\nhttps://hooks.example.com/in?t=1\norder.created\n
#   1700000000\n{"order_id":"o-1","amount":1250}' | openssl dgst -sha256 -hmac "$SECRET"
KNOWN_HEX = "7c7c34fa299140fffc686f9961578a81cea2f19f40566df83ed900bcd68eb3bc"
# printf 'streams-unsubscribe.v1\nuser-7' | openssl dgst -sha256 -hmac "$SECRET"
UNSUBSCRIBE_HEX = "3fe0130a44473500c1b147f3ec4d5d430705a4b5c0384ba9792b5b95fd03e62b"
# printf '1700000000.{"order_id":"o-1","amount":1250}' | openssl ... -hmac whsec_test_secret
STRIPE_SECRET = "whsec_test_secret"
STRIPE_HEX = "5860ceb2d72b4cae9bf4f8a0952a743fc4c8e1b73c7d099d077dc723ffd0ab55"

FIELDS = {"event_id": EVENT_ID, "url": URL, "event_name": NAME, "timestamp_s": TS, "body": BODY}


def _verify(**overrides: object) -> int:
    args: dict[str, object] = {
        "body": BODY,
        "timestamp": str(TS),
        "signature": f"v2={KNOWN_HEX}",
        "event_id": EVENT_ID,
        "url": URL,
        "event_name": NAME,
        "secrets": SECRET,
        "now_s": TS + 10,
    }
    args.update(overrides)
    return signing.verify(**args)  # type: ignore[arg-type]


def test_signature_matches_an_independent_openssl_vector() -> None:
    assert signing.compute_signature(SECRET, **FIELDS) == KNOWN_HEX  # type: ignore[arg-type]
    as_bytes = {**FIELDS, "body": BODY.encode()}
    assert signing.compute_signature(SECRET.encode(), **as_bytes) == KNOWN_HEX  # type: ignore[arg-type]


def test_sign_headers_carry_timestamp_and_one_v2_entry_per_secret() -> None:
    assert signing.sign_headers(SECRET, **FIELDS) == {  # type: ignore[arg-type]
        "X-Streams-Timestamp": "1700000000",
        "X-Streams-Signature": f"v2={KNOWN_HEX}",
    }
    rotating = signing.sign_headers(["new-secret-value", SECRET], **FIELDS)  # type: ignore[arg-type]
    entries = rotating["X-Streams-Signature"].split(",")
    assert len(entries) == 2 and entries[1] == f"v2={KNOWN_HEX}"
    assert _verify(signature=rotating["X-Streams-Signature"]) == TS
    assert _verify(signature=rotating["X-Streams-Signature"], secrets="new-secret-value") == TS


def test_at_most_two_secrets_sign() -> None:
    with pytest.raises(ValueError, match="at most 2"):
        signing.sign_headers(["a-1", "b-2", "c-3"], **FIELDS)  # type: ignore[arg-type]


def test_the_signature_is_stable_for_the_same_request() -> None:
    first = signing.sign_headers(SECRET, **FIELDS)  # type: ignore[arg-type]
    assert signing.sign_headers(SECRET, **FIELDS) == first  # type: ignore[arg-type]


def test_valid_signature_returns_the_timestamp() -> None:
    assert _verify() == TS


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"body": BODY.replace("1250", "1251")}, "does not match"),
        ({"body": BODY + " "}, "does not match"),
        ({"event_id": "evt-2"}, "does not match"),  # replay under another event id
        ({"url": "https://other.example.com/in?t=1"}, "does not match"),  # to another endpoint
        ({"url": "https://hooks.example.com/in?t=2"}, "does not match"),
        ({"event_name": "order.refunded"}, "does not match"),
        ({"event_id": None}, "missing event id"),
        ({"event_id": "evt\n1"}, "malformed signed field"),
        ({"secrets": "another-secret"}, "does not match"),
        ({"signature": f"v2={KNOWN_HEX[:-1]}0"}, "does not match"),
        ({"signature": f"v2={KNOWN_HEX[:-2]}"}, "does not match"),
        ({"signature": "v2=" + "z" * 64}, "does not match"),
        ({"signature": f"v1={KNOWN_HEX}"}, "no v2 signature"),
        ({"signature": ""}, "no v2 signature"),
        ({"signature": None}, "no v2 signature"),
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


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"now_s": math.nan}, "clock is not finite"),
        ({"now_s": math.inf}, "clock is not finite"),
        ({"now_s": -math.inf}, "clock is not finite"),
        ({"now_s": str(TS)}, "clock is not a number"),
        ({"now_s": None}, "clock is not a number"),
        ({"now_s": True}, "clock is not a number"),
        ({"tolerance_s": math.nan}, "tolerance is not finite"),
        ({"tolerance_s": math.inf}, "tolerance is not finite"),
        ({"tolerance_s": "300"}, "tolerance is not a number"),
        ({"tolerance_s": -1}, "tolerance is negative"),
    ],
)
def test_the_timestamp_check_fails_closed(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        _verify(**overrides)


def test_stripe_check_fails_closed_too() -> None:
    header = f"t={TS},v1={STRIPE_HEX}"
    with pytest.raises(SignatureError, match="not finite"):
        signing.verify_stripe(body=BODY, header=header, secrets=STRIPE_SECRET, now_s=math.nan)


def test_tolerance_boundary_is_inclusive() -> None:
    assert _verify(now_s=TS + 300) == TS
    assert _verify(now_s=TS - 300) == TS


def test_any_of_several_secrets_verifies_during_rotation() -> None:
    assert _verify(secrets=["new-secret", SECRET]) == TS
    assert _verify(secrets=(SECRET.encode(),)) == TS
    with pytest.raises(SignatureError):
        _verify(secrets=["new-secret", "older-secret"])


def test_unknown_schemes_and_extra_entries_are_ignored() -> None:
    header = f"v0=deadbeef, v1=abc ,v2={'0' * 64},v2={KNOWN_HEX.upper()}"
    assert _verify(signature=header) == TS


def test_verify_request_reads_the_headers_case_insensitively() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict(
        {
            "x-streams-event-id": EVENT_ID,
            "X-STREAMS-EVENT-NAME": NAME,
            "x-streams-timestamp": str(TS),
            "x-streams-signature": f"v2={KNOWN_HEX}",
        }
    )
    assert signing.verify_request(headers, BODY.encode(), url=URL, secrets=SECRET, now_s=TS) == TS


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
        signing.compute_signature("", **FIELDS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="secret"):
        signing.sign_headers([], **FIELDS)  # type: ignore[arg-type]


def test_signed_fields_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        signing.signed_payload(**{**FIELDS, "event_name": "a\nb"})  # type: ignore[arg-type]


# --- purpose labels ------------------------------------------------------------------------


def test_unsubscribe_tokens_carry_their_own_purpose_label() -> None:
    assert unsubscribe_token(SECRET, "user-7") == UNSUBSCRIBE_HEX


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60), st.text(max_size=60))
def test_an_unsubscribe_token_is_never_a_webhook_signature(prefix: str, body: str) -> None:
    # the old attack: a user id shaped like "<ts>.<body>" made the unsubscribe token a
    # valid webhook signature under a shared construction
    user_id = f"{TS}.{body}"
    other_shape = f"{prefix}\n{EVENT_ID}\n{URL}\n{NAME}\n{TS}\n{body}"
    token = unsubscribe_token(SECRET, user_id)
    with pytest.raises(SignatureError):
        _verify(body=body, signature=f"v2={token}")
    with pytest.raises(SignatureError):
        signing.verify_stripe(body=body, header=f"t={TS},v1={token}", secrets=SECRET, now_s=TS)
    assert unsubscribe_token(SECRET, other_shape) != signing.compute_signature(
        SECRET, event_id=EVENT_ID, url=URL, event_name=NAME, timestamp_s=TS, body=body
    )


# --- secrets from configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["change-me", "CHANGE-ME", " changeme ", "secret", "password", "test", "xxx"]
)
def test_placeholder_secrets_are_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^STREAMS_X: is a placeholder"):
        signing.check_secret("STREAMS_X", value)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_secrets_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^STREAMS_X: must not be empty"):
        signing.check_secret("STREAMS_X", value)


def test_a_random_secret_passes() -> None:
    assert signing.check_secret("STREAMS_X", "p9V0-3mN2q") == "p9V0-3mN2q"


def test_static_keys_look_up_by_subscription_with_a_default() -> None:
    keys = signing.StaticSigningKeys(("global-1",), {"sub-1": ("new-1", "old-1")})
    assert keys.secrets_for("sub-1") == ("new-1", "old-1")
    assert keys.secrets_for("sub-2") == ("global-1",)
    assert signing.StaticSigningKeys().secrets_for("sub-1") == ()
    with pytest.raises(ValueError, match="1 to 2"):
        signing.StaticSigningKeys((), {"sub-1": ("a-1", "b-2", "c-3")})


# --- Stripe ---------------------------------------------------------------------------------


def test_stripe_style_combined_header() -> None:
    assert signing.stripe_signature(STRIPE_SECRET, TS, BODY) == STRIPE_HEX
    header = f"t={TS},v1={STRIPE_HEX},v0=legacy"
    secret = STRIPE_SECRET
    assert signing.verify_stripe(body=BODY, header=header, secrets=secret, now_s=TS) == TS
    with pytest.raises(SignatureError, match="does not match"):
        signing.verify_stripe(body=BODY + "x", header=header, secrets=secret, now_s=TS)
    with pytest.raises(SignatureError, match="missing timestamp"):
        signing.verify_stripe(body=BODY, header=f"v1={STRIPE_HEX}", secrets=secret, now_s=TS)
    with pytest.raises(SignatureError, match="several timestamps"):
        signing.verify_stripe(
            body=BODY, header=f"t={TS},t={TS},v1={STRIPE_HEX}", secrets=secret, now_s=TS
        )
    with pytest.raises(SignatureError, match="tolerance"):
        signing.verify_stripe(body=BODY, header=header, secrets=secret, now_s=TS + 1000)


def test_parse_signatures_bounds_the_number_of_entries() -> None:
    header = ",".join(["v2=" + "0" * 64] * 100)
    assert len(signing.parse_signatures(header)) == 16
