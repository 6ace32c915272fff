"""Pure parts of the webhook job: answer -> outcome, Retry-After, request building, pinning."""

from __future__ import annotations

import socket
from email.utils import formatdate

import pytest

from streams.errors import Permanent, Retryable, RetryAfter
from streams.events import build_event
from streams.jobs import signing
from streams.jobs.webhook import (
    USER_AGENT,
    Answer,
    build_request,
    outcome_for,
    parse_retry_after,
    snippet_of,
)
from streams.jobs.webhook_pin import PIN, Pin, PinnedResolver

NOW_S = 1_700_000_000.0
HOST = "hooks.example.com"


def _outcome(status: int, **fields: object) -> object:
    return outcome_for(Answer(status=status, **fields), host=HOST, now_s=NOW_S)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_done(status: int) -> None:
    assert _outcome(status) is None


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retryable(status: int) -> None:
    outcome = _outcome(status)
    assert type(outcome) is Retryable
    assert str(outcome) == f"HTTP {status} from {HOST}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 422, 451, 499])
def test_other_4xx_are_permanent_with_a_snippet(status: int) -> None:
    outcome = _outcome(status, body=b'{"error": "bad field"}')
    assert type(outcome) is Permanent
    assert str(outcome) == f'HTTP {status} from {HOST}: {{"error": "bad field"}}'


def test_4xx_with_empty_body_says_so() -> None:
    assert str(_outcome(404)) == f"HTTP 404 from {HOST}: (empty body)"


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
def test_redirects_are_permanent_and_name_the_location(status: int) -> None:
    outcome = _outcome(status, location="http://169.254.169.254/latest")
    assert type(outcome) is Permanent
    assert "redirect to http://169.254.169.254/latest not followed" in str(outcome)


def test_redirect_without_location() -> None:
    assert "redirect to (none) not followed" in str(_outcome(302))


@pytest.mark.parametrize("status", [100, 199, 600, 999])
def test_unexpected_statuses_are_retryable(status: int) -> None:
    assert type(_outcome(status)) is Retryable


@pytest.mark.parametrize(
    ("status", "retry_after", "delay_s"),
    [
        (429, "7", 7.0),
        (503, "0", 0.0),
        (408, " 12 ", 12.0),
        (429, "999999", 3600.0),  # capped
        (503, formatdate(NOW_S + 120, usegmt=True), 120.0),
        (503, formatdate(NOW_S - 120, usegmt=True), 0.0),  # in the past: no wait
    ],
)
def test_retry_after_becomes_retry_after(status: int, retry_after: str, delay_s: float) -> None:
    outcome = _outcome(status, retry_after=retry_after)
    assert isinstance(outcome, RetryAfter)
    assert outcome.delay_s == delay_s


@pytest.mark.parametrize(
    "retry_after", ["", "soon", "-5", "7.5", "\uff11\uff12", "Mon, 99 Foo 2024"]
)
def test_malformed_retry_after_is_ignored(retry_after: str) -> None:
    assert type(_outcome(503, retry_after=retry_after)) is Retryable


def test_retry_after_is_not_used_for_permanent_answers() -> None:
    assert type(_outcome(400, retry_after="7")) is Permanent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("30", 30.0),
        ("30000", 600.0),  # capped at max_s
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120.0),  # NOW_S is 2023-11-14 22:13:20 UTC
        ("Tue, 14 Nov 2023 23:15:20 +0100", 120.0),
        ("Tue, 14 Nov 2023 22:15:20 -0000", 120.0),  # no zone: read as UTC
        ("Wed, 15 Nov 2023 22:13:20 GMT", 600.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),  # in the past
        ("Tue, 14 Nov 2023", None),
    ],
)
def test_parse_retry_after_table(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW_S, max_s=600.0) == expected


def test_snippet_is_bounded_scrubbed_and_one_line() -> None:
    body = ("error: token=abc123 for jane@example.com\n\r\tdetail " + "x" * 5000).encode()
    snippet = snippet_of(body)
    assert "abc123" not in snippet
    assert "jane@example.com" not in snippet
    assert "\n" not in snippet and "\t" not in snippet
    assert len(snippet.encode()) <= 200
    assert snippet.startswith("error: token=<redacted> for <email> detail")


def test_snippet_survives_invalid_utf8() -> None:
    assert snippet_of(b"\xff\xfe bad") == "\ufffd\ufffd bad"


# --- request building --------------------------------------------------------------------


def _event(**payload: object) -> object:
    fields: dict[str, object] = {
        "subscription_id": "sub-1",
        "url": "https://hooks.example.com/in",
        "event_name": "order.created",
        "body": '{"order": "o-1"}',
    }
    fields.update(payload)
    return build_event("webhook.requested", fields, event_id="evt-123")


def test_build_request_sets_every_header_and_signs_the_exact_body() -> None:
    outgoing = build_request(_event(), secrets=["s3cret"], timestamp_s=int(NOW_S))  # type: ignore[arg-type]
    assert outgoing.body == b'{"order": "o-1"}'
    assert outgoing.target.host == "hooks.example.com"
    headers = dict(outgoing.headers)
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("streams-webhook/")
    assert headers["Idempotency-Key"] == "evt-123"
    assert headers["X-Streams-Event-Id"] == "evt-123"
    assert headers["X-Streams-Event-Name"] == "order.created"
    assert headers["X-Streams-Timestamp"] == "1700000000"
    assert headers["X-Streams-Subscription-Id"] == "sub-1"
    expected = signing.compute_signature(
        "s3cret",
        event_id="evt-123",
        url="https://hooks.example.com/in",
        event_name="order.created",
        timestamp_s=1_700_000_000,
        body=b'{"order": "o-1"}',
    )
    assert headers["X-Streams-Signature"] == f"v2={expected}"


def test_build_request_signs_with_both_secrets_while_rotating() -> None:
    outgoing = build_request(_event(), secrets=["new-1", "old-1"], timestamp_s=1)  # type: ignore[arg-type]
    for secret in ("new-1", "old-1"):
        signing.verify_request(
            outgoing.headers,
            outgoing.body,
            url="https://hooks.example.com/in",
            secrets=secret,
            now_s=1,
        )


def test_build_request_without_a_secret_is_permanent() -> None:
    with pytest.raises(Permanent, match=r"^subscription_id: no signing secret"):
        build_request(_event(), secrets=[], timestamp_s=1)  # type: ignore[arg-type]


def test_build_request_keeps_a_custom_content_type() -> None:
    event = _event(content_type="application/cloudevents+json; charset=utf-8")
    outgoing = build_request(event, secrets=["s"], timestamp_s=1)  # type: ignore[arg-type]
    assert outgoing.headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"


def test_build_request_signs_non_ascii_bodies_as_utf8() -> None:
    event = _event(body='{"name": "Zoë ✓"}')
    outgoing = build_request(event, secrets=["s"], timestamp_s=5)  # type: ignore[arg-type]
    assert outgoing.body == '{"name": "Zoë ✓"}'.encode()
    signing.verify_request(
        outgoing.headers, outgoing.body, url="https://hooks.example.com/in", secrets="s", now_s=5
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("url", "ftp://hooks.example.com/x", "url: scheme 'ftp' not allowed"),
        ("url", "not a url", "url: "),
        ("content_type", "text/plain\r\nX-Evil: 1", "content_type: must not contain control"),
        ("event_name", "order\ncreated", "event_name: must not contain control"),
        ("event_name", "", "event_name: must be a non-empty string"),
        ("body", 42, "body: must be a string"),
        ("body", '{"x": "\ud800"}', "body: not encodable as UTF-8"),
    ],
)
def test_build_request_refuses_bad_fields_permanently(
    field: str, value: object, reason: str
) -> None:
    from streams.events import WebhookRequested

    event = _event()
    bad = WebhookRequested.model_construct(**{**dict(event), field: value})  # type: ignore[call-overload]  # bypass validation
    with pytest.raises(Permanent) as info:
        build_request(bad, secrets=["s"], timestamp_s=1)
    assert str(info.value).startswith(reason)


# --- the pinned resolver -------------------------------------------------------------------


async def test_pinned_resolver_answers_only_with_vetted_addresses() -> None:
    resolver = PinnedResolver()
    token = PIN.set(Pin("hooks.example.com", 443, ("93.184.215.14", "2606:4700::1")))
    try:
        results = await resolver.resolve("Hooks.Example.com.", 443, family=socket.AF_UNSPEC)
        assert [(r["host"], r["family"], r["port"]) for r in results] == [
            ("93.184.215.14", socket.AF_INET, 443),
            ("2606:4700::1", socket.AF_INET6, 443),
        ]
        v4 = await resolver.resolve("hooks.example.com", 443, family=socket.AF_INET)
        assert [r["host"] for r in v4] == ["93.184.215.14"]
        with pytest.raises(OSError, match="unvetted"):
            await resolver.resolve("other.example.com", 443)
    finally:
        PIN.reset(token)


async def test_pinned_resolver_fails_closed_without_a_pin() -> None:
    with pytest.raises(OSError, match="unvetted"):
        await PinnedResolver().resolve("hooks.example.com", 443)
