"""The scrubber: the issue's examples, and property tests per class of secret."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streams.core import headers as h
from streams.core.scrub import MAX_INPUT_CHARS, is_secret_key, luhn_valid, scrub

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MARKERS = "<redacted> <email> <jwt> <card> <key>"

# --- the issue's examples ------------------------------------------------------------------

EXAMPLES = [
    ("Authorization: Bearer abc.def.ghi", ["abc.def.ghi", "def"]),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", ["dXNlcjpwYXNzd29yZA"]),
    ("Bearer abc.def.ghi rejected", ["abc.def.ghi"]),
    ("connect failed db_password=Hunter2!", ["Hunter2"]),
    ("oauth client_secret=cs-9f8e7d6c", ["cs-9f8e7d6c"]),
    ("refresh access_token=at.12345.xyz failed", ["at.12345.xyz"]),
    ("login pwd=p4ss", ["p4ss"]),
    ('body {"password": "s3cret value", "user": "bob"}', ["s3cret", "value"]),
    ("{'api_key': 'k-123456'}", ["k-123456"]),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y",
        ["eyJ", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6y"],
    ),
    ("card 4242424242424242 declined", ["4242424242424242"]),
    ("card 4242 4242 4242 4242 declined", ["4242 4242 4242 4242"]),
    ("card 5555-5555-5555-4444 declined", ["5555-5555-5555-4444"]),
    ("amex 378282246310005", ["378282246310005"]),
    ("cannot reach postgres://admin:pa55w0rd@db/x", ["admin", "pa55w0rd"]),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc refused", ["4eC39HqLyjWDarjtT1zdp7dc"]),
    ("aws AKIAIOSFODNN7EXAMPLE denied", ["AKIAIOSFODNN7EXAMPLE"]),
    ("smtp 550 for alice@localhost", ["alice"]),
    ("smtp 550 for o'brien@example.com", ["brien", "o'"]),
    (
        "POST https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        ["XXXXXXXXXXXXXXXXXXXXXXXX"],
    ),
    (
        "GET https://api.example.com/v1/items?sig=8d1f0a9bc7e64d2a&page=2",
        ["8d1f0a9bc7e64d2a"],
    ),
]


@pytest.mark.parametrize(("message", "secrets"), EXAMPLES)
def test_the_issue_examples_are_redacted(message: str, secrets: list[str]) -> None:
    out = scrub(message)
    for secret in secrets:
        assert secret not in out, out


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Authorization: Bearer abc.def.ghi", "Authorization: <redacted>"),
        ("db_password=x1 user=bob", "db_password=<redacted> user=bob"),
        ("postgres://admin:pw@db/x", "postgres://<redacted>@db/x"),
        ("to alice@localhost now", "to <email> now"),
        ("card 4111 1111 1111 1111 ok", "card <card> ok"),
        ("HTTP 503 from hooks.example.com", "HTTP 503 from hooks.example.com"),
        ("order 1700000000000 at 12:30", "order 1700000000000 at 12:30"),  # Luhn-invalid/ts
        ("Error: connection refused", "Error: connection refused"),
    ],
)
def test_what_stays_readable(message: str, expected: str) -> None:
    assert scrub(message) == expected


@pytest.mark.parametrize("separator", ["\n", "\r\n", "\t", "\x85", "\u2028", "\u2029", "\x0b"])
def test_every_line_separator_becomes_one_space(separator: str) -> None:
    assert scrub(f"first{separator}{separator}second") == "first second"


def test_invisible_and_control_characters_become_spaces() -> None:
    assert scrub("a\x00b\x1bc\u200bd\u202ee\ufefff") == "a b c d e f"


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    "key", ["password", "db_password", "clientSecret", "X-Api-Key", "pwd", "auth", "sig"]
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["user", "host", "error", "status", "code", "page"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_long_input_is_cut_at_a_space_before_scrubbing() -> None:
    token = "eyJ" + "a" * 50 + "." + "b" * 50 + "." + "c" * 50
    message = "x " * (MAX_INPUT_CHARS // 2 - 10) + token
    assert "aaaa" not in scrub(message)


def test_the_failure_headers_use_the_scrubber() -> None:
    failure = h.Failure("E", "boom\npassword=hunter22 for bob@example.com")
    message = failure.headers()[h.ERROR_MESSAGE]
    assert message == "boom password=<redacted> for <email>"


# --- properties: a generated secret embedded in a generated message never survives -----------

text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40
)  # anything, incl. separators and control characters
secret_chars = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=6, max_size=30
)
token_chars = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/",
    min_size=8,
    max_size=40,
)
key_names = st.sampled_from(
    [
        "password",
        "db_password",
        "DB_PASSWORD",
        "passwd",
        "pwd",
        "pass",
        "client_secret",
        "clientSecret",
        "secret",
        "access_token",
        "refreshToken",
        "token",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "private_key",
        "aws_secret_access_key",
        "Authorization",
        "auth",
        "credentials",
        "session_id",
        "cookie",
    ]
)


def _embedded(prefix: str, secret: str, suffix: str) -> str:
    return f"{prefix} {secret} {suffix}"


def _check(prefix: str, shown: str, secret: str, suffix: str) -> None:
    assume(secret not in prefix and secret not in suffix and secret not in MARKERS)
    label = shown.replace(secret, "", 1)  # the key name or scheme: shown on purpose
    assume(secret not in label)  # e.g. the token "Authoriz": found in "Authorization: "
    out = scrub(_embedded(prefix, shown, suffix))
    assert secret not in out, out


@PROPERTY
@given(text, key_names, st.sampled_from(["=", ": ", ":", " = "]), secret_chars, text)
def test_key_value_secrets_never_survive(
    prefix: str, key: str, sep: str, value: str, suffix: str
) -> None:
    assume(not value.startswith(("'", '"')))
    _check(prefix, f"{key}{sep}{value}", value, suffix)


@PROPERTY
@given(text, key_names, secret_chars, st.booleans(), text)
def test_quoted_json_and_repr_secrets_never_survive(
    prefix: str, key: str, value: str, as_json: bool, suffix: str
) -> None:
    shown = json.dumps({key: value}) if as_json else repr({key: value})
    _check(prefix, shown, value, suffix)


@PROPERTY
@given(text, st.sampled_from(["Bearer", "Basic", "bearer", "Digest"]), token_chars, text)
def test_authorization_schemes_never_survive(
    prefix: str, scheme: str, token: str, suffix: str
) -> None:
    _check(prefix, f"Authorization: {scheme} {token}", token, suffix)
    _check(prefix, f"{scheme} {token}", token, suffix)


b64url = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    min_size=4,
    max_size=60,
)


@PROPERTY
@given(text, b64url, b64url, b64url, text)
def test_jwts_never_survive(prefix: str, head: str, body: str, sig: str, suffix: str) -> None:
    token = f"eyJ{head}.{body}.{sig}"
    _check(prefix, token, token, suffix)
    _check(prefix, token, f"{body}.{sig}", suffix)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["4", "51", "55", "2221", "2720", "34", "37", "6011", "65"]))
    length = draw(st.integers(min_value=max(13, len(prefix) + 2), max_value=19))
    body = prefix + "".join(
        draw(
            st.lists(
                st.sampled_from("0123456789"),
                min_size=length - len(prefix) - 1,
                max_size=length - len(prefix) - 1,
            )
        )
    )
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("no Luhn digit")  # pragma: no cover - one always exists


@PROPERTY
@given(text, card_numbers(), st.sampled_from(["", " ", "-"]), st.integers(3, 5), text)
def test_card_numbers_never_survive(
    prefix: str, card: str, sep: str, group: int, suffix: str
) -> None:
    shown = sep.join(card[i : i + group] for i in range(0, len(card), group))
    _check(prefix, shown, shown, suffix)
    assert card not in scrub(_embedded(prefix, shown, suffix)).replace(sep or " ", "")


@PROPERTY
@given(
    text,
    st.sampled_from(["postgres", "mysql", "redis", "amqp", "https", "smtp"]),
    st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True),
    st.text(alphabet="abcXYZ0123456789-._~!$&'()*+,;=%:@", min_size=6, max_size=20),
    text,
)
def test_url_userinfo_never_survives(
    prefix: str, scheme: str, user: str, password: str, suffix: str
) -> None:
    url = f"{scheme}://{user}:{password}@db.internal:5432/app"
    _check(prefix, url, f"{user}:{password}", suffix)
    _check(prefix, url, password, suffix)


@PROPERTY
@given(
    text,
    st.sampled_from(["sk_live_", "sk_test_", "rk_live_", "whsec_", "ghp_", "xoxb-", "glpat-"]),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        min_size=24,
        max_size=40,
    ),
    text,
)
def test_provider_keys_never_survive(prefix: str, kind: str, body: str, suffix: str) -> None:
    _check(prefix, kind + body, body, suffix)


@PROPERTY
@given(text, st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16), text)
def test_aws_access_key_ids_never_survive(prefix: str, body: str, suffix: str) -> None:
    _check(prefix, "AKIA" + body, body, suffix)


@PROPERTY
@given(
    text,
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=24, max_size=32
    ),
    text,
)
def test_slack_style_url_path_tokens_never_survive(prefix: str, token: str, suffix: str) -> None:
    assume(token != token.lower() and token != token.upper())
    url = f"https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{token}"
    _check(prefix, url, token, suffix)


@PROPERTY
@given(
    text,
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-", min_size=1, max_size=20
    ),
    st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z0-9-]{1,12}){0,3}", fullmatch=True),
    text,
)
def test_email_addresses_never_survive(prefix: str, local: str, domain: str, suffix: str) -> None:
    address = f"{local}@{domain}"
    _check(prefix, address, address, suffix)


@PROPERTY
@given(st.text(max_size=200))
def test_output_is_one_line_without_invisible_characters(message: str) -> None:
    out = scrub(message)
    assert "  " not in out
    assert out == out.strip()
    assert all(ch == " " or not ch.isspace() for ch in out)
    assert all(ch.isprintable() or ch == " " for ch in out), repr(out)


@PROPERTY
@given(st.text(max_size=200))
def test_scrubbing_twice_changes_nothing(message: str) -> None:
    once = scrub(message)
    assert scrub(once) == once
