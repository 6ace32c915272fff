"""Rendering email.requested events: locales, escaping, header injection, ids, unsubscribe."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from streams.errors import ConfigError, InvalidPayload, Permanent
from streams.events import EmailRequested, Envelope, build_event
from streams.jobs.mail import EmailJob, render_email, verify_unsubscribe_token
from streams.jobs.mail_render import (
    LOCALES,
    TEMPLATES,
    load_template,
    message_id,
    resolve_locale,
    to_wire_bytes,
    unsubscribe_token,
    unsubscribe_url,
)
from streams.jobs.mail_settings import EmailSettings

SECRET = "s3cret-for-tests"
EVENT_ID = "0b7e4a52-6f0e-4a8e-9d55-3a1f8c2d9e10"
OCCURRED_AT_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

VARIABLES: dict[str, dict[str, str]] = {
    "welcome": {"name": "Alice", "login_url": "https://app.example.com/login"},
    "password_reset": {
        "name": "Alice",
        "reset_url": "https://app.example.com/reset?token=abc",
        "expires_minutes": "30",
    },
    "receipt": {
        "name": "Alice",
        "order_id": "A-1001",
        "amount": "12.50 CAD",
        "subtotal": "11.06 CAD",
        "tax_lines": "HST 13%: 1.44 CAD",
    },
    "notification": {"name": "Alice", "title": "Your claim moved", "message": "It is approved."},
}


@pytest.fixture
def settings() -> EmailSettings:
    return EmailSettings(
        email_from="Streams <no-reply@streams.example>",
        email_message_id_domain="mail.streams.example",
        unsubscribe_base_url="https://app.example.com/unsubscribe",
        unsubscribe_secret=SecretStr(SECRET),
    )


def event(template: str = "welcome", **overrides: Any) -> EmailRequested:
    payload: dict[str, Any] = {
        "user_id": "user-42",
        "to": "alice@example.com",
        "locale": "en",
        "template": template,
        "variables": dict(VARIABLES[template]),
    }
    payload.update(overrides)
    built = build_event(
        "email.requested", payload, event_id=EVENT_ID, occurred_at_ms=OCCURRED_AT_MS
    )
    assert isinstance(built, EmailRequested)
    return built


def raw_event(**fields: Any) -> EmailRequested:
    """An event that skipped validation (a record from a newer producer, a bug upstream)."""
    data: dict[str, Any] = {
        "user_id": "user-42",
        "to": "alice@example.com",
        "locale": "en",
        "template": "welcome",
        "variables": dict(VARIABLES["welcome"]),
    }
    data.update(fields)
    envelope = Envelope(
        event_id=EVENT_ID, event_type="email.requested", occurred_at_ms=OCCURRED_AT_MS
    )
    return EmailRequested.model_construct(envelope=envelope, **data)


def parts(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return (
        plain.get_content().replace("\r\n", "\n"),
        html.get_content().replace("\r\n", "\n"),
    )


def wire(msg: EmailMessage) -> EmailMessage:
    """What a receiver parses from the bytes we would send."""
    parsed = email.message_from_bytes(to_wire_bytes(msg), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- locales and structure --------------------------------------------------------------


def test_english_welcome_has_subject_both_parts_and_headers(settings: EmailSettings) -> None:
    msg = wire(render_email(event(), settings, EVENT_ID))

    assert msg["Subject"] == "Welcome to Streams, Alice"
    assert msg["From"] == "Streams <no-reply@streams.example>"
    assert msg["To"] == "alice@example.com"
    assert msg["Content-Language"] == "en"
    assert msg["X-Streams-Event-Id"] == EVENT_ID
    assert parsedate_to_datetime(msg["Date"]).timestamp() * 1000 == OCCURRED_AT_MS
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text, html = parts(msg)
    assert text.startswith("Hello Alice,\n")
    assert "Sign in: https://app.example.com/login" in text
    assert '<html lang="en">' in html
    assert '<a href="https://app.example.com/login">Sign in</a>' in html


def test_french_receipt_is_rendered_in_french(settings: EmailSettings) -> None:
    msg = wire(render_email(event("receipt", locale="fr"), settings, EVENT_ID))

    assert msg["Subject"] == "Votre reçu pour la commande A-1001"
    assert msg["Content-Language"] == "fr"
    text, html = parts(msg)
    assert "Bonjour Alice," in text
    assert "Montant payé : 12.50 CAD" in text
    assert '<html lang="fr">' in html
    assert "Se désabonner" in html


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("locale", LOCALES)
def test_every_template_renders_in_every_locale(
    settings: EmailSettings, template: str, locale: str
) -> None:
    msg = wire(render_email(event(template, locale=locale), settings, EVENT_ID))

    assert msg["Subject"]
    assert msg["Content-Language"] == locale
    text, html = parts(msg)
    assert "${" not in text and "${" not in html  # every placeholder was substituted
    assert f'lang="{locale}"' in html


@pytest.mark.parametrize("template", TEMPLATES)
def test_locales_need_the_same_variables(template: str) -> None:
    wanted = {locale: load_template(template, locale).variables for locale in LOCALES}
    assert len(set(wanted.values())) == 1, wanted
    assert wanted["en"] == set(VARIABLES[template])


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("en", "en"), ("fr", "fr"), ("fr-CA", "fr"), ("FR_ca", "fr"), ("de", "en"), ("pt-BR", "en")],
)
def test_locale_resolution(tag: str, expected: str) -> None:
    assert resolve_locale(tag) == expected


def test_unsupported_but_well_formed_locale_falls_back_to_english(settings: EmailSettings) -> None:
    msg = render_email(raw_event(locale="de"), settings, EVENT_ID)

    assert msg["Content-Language"] == "en"
    assert msg["Subject"] == "Welcome to Streams, Alice"


@pytest.mark.parametrize("tag", ["", "e", "../fr", "fr/../../etc", "fr CA", "english!", None, 3])
def test_malformed_locale_is_permanent(settings: EmailSettings, tag: Any) -> None:
    with pytest.raises(Permanent, match=r"^locale: must be a language tag"):
        render_email(raw_event(locale=tag), settings, EVENT_ID)


@pytest.mark.parametrize("name", ["invoice", "../en/welcome", "_layout", ""])
def test_unknown_template_is_permanent(settings: EmailSettings, name: str) -> None:
    with pytest.raises(Permanent, match=r"^template: unknown; expected one of welcome"):
        render_email(raw_event(template=name), settings, EVENT_ID)


# --- variables --------------------------------------------------------------------------


def test_missing_variable_is_permanent_and_named(settings: EmailSettings) -> None:
    ev = event(
        "receipt",
        variables={"name": "Alice", "amount": "1.00 CAD", "subtotal": "1.00 CAD", "tax_lines": "-"},
    )

    with pytest.raises(Permanent) as caught:
        render_email(ev, settings, EVENT_ID)

    assert str(caught.value) == "variables.order_id: required by template 'receipt' (en)"


def test_every_missing_variable_is_named(settings: EmailSettings) -> None:
    with pytest.raises(Permanent) as caught:
        render_email(event("password_reset", variables={}), settings, EVENT_ID)

    message = str(caught.value)
    for name in ("expires_minutes", "name", "reset_url"):
        assert f"variables.{name}: required by template 'password_reset'" in message


def test_extra_variables_are_ignored(settings: EmailSettings) -> None:
    ev = event(variables={**VARIABLES["welcome"], "unused": "<b>whatever</b>"})
    _, html = parts(render_email(ev, settings, EVENT_ID))
    assert "whatever" not in html


@pytest.mark.parametrize("reserved", ["unsubscribe_url", "subject", "body"])
def test_reserved_variable_is_permanent(settings: EmailSettings, reserved: str) -> None:
    ev = event(variables={**VARIABLES["welcome"], reserved: "https://evil.example/"})
    with pytest.raises(Permanent, match=rf"^variables\.{reserved}: reserved"):
        render_email(ev, settings, EVENT_ID)


def test_control_characters_in_a_variable_are_permanent(settings: EmailSettings) -> None:
    ev = event("notification", variables={**VARIABLES["notification"], "message": "a\x00b"})
    with pytest.raises(Permanent, match=r"^variables\.message: must not contain control"):
        render_email(ev, settings, EVENT_ID)


def test_overlong_variable_is_permanent(settings: EmailSettings) -> None:
    ev = event("notification", variables={**VARIABLES["notification"], "message": "x" * 10_001})
    with pytest.raises(Permanent, match=r"^variables\.message: longer than 10000"):
        render_email(ev, settings, EVENT_ID)


def test_dollar_signs_in_values_are_not_expanded(settings: EmailSettings) -> None:
    message = "Pay $amount or ${unsubscribe_url} $$"
    ev = event("notification", variables={**VARIABLES["notification"], "message": message})
    text, html = parts(render_email(ev, settings, EVENT_ID))
    assert message in text
    assert message in html


def test_multiline_body_variable_becomes_line_breaks_in_html(settings: EmailSettings) -> None:
    ev = event("notification", variables={**VARIABLES["notification"], "message": "one\r\ntwo"})
    text, html = parts(render_email(ev, settings, EVENT_ID))
    assert "one\ntwo" in text
    assert "one<br>\ntwo" in html


# --- escaping ---------------------------------------------------------------------------

SCRIPT = "<script>alert('x')</script>"


def test_script_in_a_variable_is_escaped_in_html(settings: EmailSettings) -> None:
    variables = {
        "name": SCRIPT,
        "title": f"Hi {SCRIPT}",
        "message": f'"><img src=x onerror=1>{SCRIPT}',
    }
    msg = wire(render_email(event("notification", variables=variables), settings, EVENT_ID))

    text, html = parts(msg)
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=1&gt;" in html
    assert SCRIPT in text  # plain text is not HTML: shown as typed
    assert msg["Subject"] == f"Hi {SCRIPT}"


def test_quote_in_a_url_variable_cannot_break_out_of_the_attribute(settings: EmailSettings) -> None:
    url = 'https://app.example.com/login?x="onmouseover="alert(1)'
    ev = event(variables={"name": "Alice", "login_url": url})
    _, html = parts(render_email(ev, settings, EVENT_ID))
    assert '"onmouseover' not in html
    assert "&quot;onmouseover=&quot;alert(1)" in html


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.example/login",
        "/login",
        "https://",
        "https://app.example.com/log in",
        "ftp://app.example.com/",
    ],
)
def test_url_variables_must_be_absolute_http_urls(settings: EmailSettings, url: str) -> None:
    ev = event(variables={"name": "Alice", "login_url": url})
    with pytest.raises(Permanent, match=r"^variables\.login_url: "):
        render_email(ev, settings, EVENT_ID)


# --- header injection -------------------------------------------------------------------

INJECTIONS = [
    "Hi\r\nBcc: evil@x.example",
    "Hi\nBcc: evil@x.example",
    "Hi\rBcc: evil@x.example",
    "Hi\u2028Bcc: evil@x.example",
    "Hi\x85Bcc: evil@x.example",
    "Hi\x0bBcc: evil@x.example",
]


@pytest.mark.parametrize("title", INJECTIONS)
def test_line_breaks_in_a_subject_variable_are_permanent(
    settings: EmailSettings, title: str
) -> None:
    ev = raw_event(template="notification", variables={**VARIABLES["notification"], "title": title})
    with pytest.raises(Permanent, match=r"^variables\.title: "):
        render_email(ev, settings, EVENT_ID)


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_a_body_variable_adds_no_header(settings: EmailSettings, payload: str) -> None:
    """Body variables may hold line breaks; they must still never reach the header block."""
    variables = {**VARIABLES["notification"], "message": payload, "name": payload}
    try:
        msg = render_email(
            raw_event(template="notification", variables=variables), settings, EVENT_ID
        )
    except Permanent as exc:  # control characters other than CR/LF/TAB are refused
        assert str(exc).startswith("variables.")
        return
    received = wire(msg)
    assert received["Bcc"] is None
    assert received.get_all("To") == ["alice@example.com"]
    assert "evil" not in "".join(f"{k}: {v}" for k, v in received.items())


@pytest.mark.parametrize(
    "to",
    [
        "alice@example.com\r\nBcc: evil@x.example",
        "alice@example.com\nBcc: evil@x.example",
        "alice@example.com\u2028Bcc: evil@x.example",
    ],
)
def test_line_breaks_in_the_address_are_permanent(settings: EmailSettings, to: str) -> None:
    with pytest.raises(InvalidPayload):  # the event model already refuses them...
        event(to=to)
    with pytest.raises(Permanent) as caught:  # ...and so does the job, on its own
        render_email(raw_event(to=to), settings, EVENT_ID)
    assert str(caught.value).startswith("to: ")
    assert "evil" not in str(caught.value)


@pytest.mark.parametrize(
    "to",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "Alice <alice@example.com>",
        "alice@example.com, bob@example.com",
        "alice@example.com,bob@example.com",
        "alice@example.com (Alice)",
        "alice@localhost",
        "al..ice@example.com",
        ".alice@example.com",
        "alice@-example.com",
        "alice@exa_mple.com",
        '"alice"@example.com',
        "zoé@example.com",
        "alice@example.com\x00",
        "a" * 65 + "@example.com",
        None,
    ],
)
def test_bad_address_is_permanent_without_echoing_it(settings: EmailSettings, to: Any) -> None:
    with pytest.raises(Permanent) as caught:
        render_email(raw_event(to=to), settings, EVENT_ID)
    message = str(caught.value)
    assert message.startswith("to: ")
    if to:
        assert str(to) not in message.removesuffix("like name@example.com")


@pytest.mark.parametrize("user_id", ["", "   ", "u\r\n1", None])
def test_bad_user_id_is_permanent(settings: EmailSettings, user_id: Any) -> None:
    with pytest.raises(Permanent, match=r"^user_id: "):
        render_email(raw_event(user_id=user_id), settings, EVENT_ID)


# --- Message-ID -------------------------------------------------------------------------


def test_message_id_is_derived_from_the_event_id(settings: EmailSettings) -> None:
    first = wire(render_email(event(), settings, EVENT_ID))
    again = wire(render_email(event(), settings, EVENT_ID))

    assert first["Message-ID"] == f"<{EVENT_ID}@mail.streams.example>"
    assert again["Message-ID"] == first["Message-ID"]
    other = wire(render_email(event(), settings, "another-id"))
    assert other["Message-ID"] == "<another-id@mail.streams.example>"


@pytest.mark.parametrize(
    "event_id", ["id with spaces", "a@b", "<x>", "évènement", "a..b", ".a", "a" * 129, "x>\tBcc:"]
)
def test_unsafe_event_id_is_hashed_into_a_valid_message_id(event_id: str) -> None:
    value = message_id(event_id, "mail.streams.example")
    left, _, domain = value[1:-1].partition("@")

    assert value.startswith("<sha256.") and value.endswith(">")
    assert len(left) == len("sha256.") + 64
    assert domain == "mail.streams.example"
    assert message_id(event_id, "mail.streams.example") == value  # deterministic
    assert message_id(event_id + "!", "mail.streams.example") != value


def test_event_id_with_control_characters_is_permanent(settings: EmailSettings) -> None:
    with pytest.raises(Permanent, match=r"^envelope\.event_id: "):
        render_email(event(), settings, "id\r\nBcc: evil@x.example")


# --- unsubscribe ------------------------------------------------------------------------


def test_unsubscribe_link_in_both_parts_and_headers(settings: EmailSettings) -> None:
    msg = wire(render_email(event(), settings, EVENT_ID))
    token = unsubscribe_token(SECRET, "user-42")
    link = f"https://app.example.com/unsubscribe?u=user-42&t={token}"

    assert msg["List-Unsubscribe"] == f"<{link}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = parts(msg)
    assert link in text
    assert f'<a href="{link.replace("&", "&amp;")}">Unsubscribe</a>' in html


def test_long_unsubscribe_header_is_one_unencoded_line(settings: EmailSettings) -> None:
    long_user = "user-" + "x" * 200
    raw = to_wire_bytes(render_email(event(user_id=long_user), settings, EVENT_ID))
    lines = raw.split(b"\r\n")
    [header] = [line for line in lines if line.startswith(b"List-Unsubscribe:")]
    assert b"=?" not in header
    assert long_user.encode() in header
    assert len(header) <= 998


def test_token_is_hmac_sha256_hex_and_verifies() -> None:
    token = unsubscribe_token(SECRET, "user-42")

    assert len(token) == 64 and int(token, 16) >= 0
    assert verify_unsubscribe_token(SECRET, "user-42", token)
    assert verify_unsubscribe_token(SecretStr(SECRET), "user-42", token)
    assert not verify_unsubscribe_token(SECRET, "user-43", token)
    assert not verify_unsubscribe_token("other-secret", "user-42", token)
    assert not verify_unsubscribe_token(
        SECRET, "user-42", token[:-1] + "0" if token[-1] != "0" else token[:-1] + "1"
    )
    assert not verify_unsubscribe_token(SECRET, "user-42", "")
    assert not verify_unsubscribe_token(SECRET, "user-42", token.upper())
    assert not verify_unsubscribe_token(SECRET, "user-42", "é" * 64)


def test_unsubscribe_url_encodes_the_user_id_and_keeps_base_query() -> None:
    url = unsubscribe_url("https://app.example.com/u?lang=fr", SECRET, "a&t=b c")
    query = parse_qs(urlsplit(url).query)

    assert query == {"lang": ["fr"], "u": ["a&t=b c"], "t": [unsubscribe_token(SECRET, "a&t=b c")]}
    assert verify_unsubscribe_token(SECRET, query["u"][0], query["t"][0])


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "setting"),
    [
        ("email_from", "not an address", "STREAMS_EMAIL_FROM"),
        ("email_from", "Streams <x@y.example>\r\nBcc: evil@x.example", "STREAMS_EMAIL_FROM"),
        ("email_message_id_domain", "bad domain", "STREAMS_EMAIL_MESSAGE_ID_DOMAIN"),
        ("email_message_id_domain", "x>", "STREAMS_EMAIL_MESSAGE_ID_DOMAIN"),
        ("unsubscribe_base_url", "javascript:alert(1)", "STREAMS_UNSUBSCRIBE_BASE_URL"),
        ("unsubscribe_base_url", "https://x.example/u v", "STREAMS_UNSUBSCRIBE_BASE_URL"),
        ("unsubscribe_secret", SecretStr(""), "STREAMS_UNSUBSCRIBE_SECRET"),
    ],
)
def test_invalid_email_settings_fail_at_construction(
    settings: EmailSettings, field: str, value: Any, setting: str
) -> None:
    bad = settings.model_copy(update={field: value})
    with pytest.raises(ConfigError, match=rf"^{setting}: "):
        EmailJob(bad)
    with pytest.raises(ConfigError, match=rf"^{setting}: "):
        render_email(event(), bad, EVENT_ID)
