"""The webhook job against a real aiohttp receiver on 127.0.0.1 (no mocked HTTP client)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from streams.errors import Permanent, Retryable, RetryAfter
from streams.events import WebhookRequested, build_event
from streams.jobs.base import JobContext
from streams.jobs.ssrf import TargetRefused
from streams.jobs.webhook import WebhookJob, WebhookSettings
from streams.testing.webhook_receiver import Reply, WebhookReceiver

SECRET = "whsec_integration"
TIMEOUT_S = 0.5

MakeJob = Callable[..., Awaitable[WebhookJob]]


class RecordingGuard:
    """A dependency guard that records names and what propagated through it."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.outcomes: list[str] = []  # "ok" or the exception class name

    @contextlib.asynccontextmanager
    async def __call__(self, name: str) -> AsyncIterator[None]:
        self.names.append(name)
        try:
            yield
        except BaseException as exc:
            self.outcomes.append(type(exc).__name__)
            raise
        self.outcomes.append("ok")


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as running:
        yield running


@pytest.fixture
async def make_job() -> AsyncIterator[MakeJob]:
    jobs: list[WebhookJob] = []

    async def make(
        *,
        allow: str = "127.0.0.1",
        secret: str | None = SECRET,
        subscription_secrets: dict[str, list[SecretStr]] | None = None,
        timeout_s: float = TIMEOUT_S,
        **kwargs: Any,
    ) -> WebhookJob:
        if subscription_secrets is not None:
            secret = None
        settings = WebhookSettings(
            webhook_signing_secret=SecretStr(secret) if secret else None,
            webhook_subscription_secrets=subscription_secrets or {},
            webhook_allow_hosts=allow,
            webhook_timeout_s=timeout_s,
        )
        job = WebhookJob(settings, **kwargs)
        await job.start()
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        await job.stop()


def webhook_event(
    url: str, body: str = '{"order_id": "o-1", "total": 1250}', subscription_id: str = "sub-1"
) -> WebhookRequested:
    event = build_event(
        "webhook.requested",
        {
            "subscription_id": subscription_id,
            "url": url,
            "event_name": "order.created",
            "body": body,
        },
    )
    assert isinstance(event, WebhookRequested)
    return event


def context(event: WebhookRequested, guard: RecordingGuard | None = None) -> JobContext:
    ctx = JobContext(
        event_id=event.envelope.event_id, event_type="webhook.requested", family="webhook"
    )
    if guard is not None:
        ctx = JobContext(
            event_id=ctx.event_id, event_type=ctx.event_type, family=ctx.family, dependency=guard
        )
    return ctx


async def deliver(
    job: WebhookJob, event: WebhookRequested, guard: RecordingGuard | None = None
) -> None:
    await job.handle(event, context(event, guard))


# --- success and signatures --------------------------------------------------------------


async def test_delivers_a_signed_request_the_receiver_verifies(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job()
    event = webhook_event(f"{receiver.url}/hooks/orders?tenant=t1")
    before_s = int(time.time())
    await deliver(job, event)

    [delivery] = receiver.deliveries
    assert delivery.verified, delivery.verify_error
    assert delivery.status == 200
    assert delivery.method == "POST"
    assert delivery.path == "/hooks/orders"
    assert delivery.query == {"tenant": "t1"}
    assert delivery.body == b'{"order_id": "o-1", "total": 1250}'
    assert delivery.header("Content-Type") == "application/json"
    assert (delivery.header("User-Agent") or "").startswith("streams-webhook/")
    assert delivery.header("Idempotency-Key") == event.envelope.event_id
    assert delivery.header("X-Streams-Event-Id") == event.envelope.event_id
    assert delivery.header("X-Streams-Event-Name") == "order.created"
    assert before_s <= int(delivery.header("X-Streams-Timestamp") or 0) <= time.time() + 1
    assert (delivery.header("X-Streams-Signature") or "").startswith("v2=")
    assert delivery.header("X-Streams-Subscription-Id") == "sub-1"
    assert delivery.header("Cookie") is None


async def test_tampered_body_and_replayed_request_verification(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job()
    await deliver(job, webhook_event(f"{receiver.url}/hook"))
    original = receiver.deliveries[0]
    signed = {
        name: original.header(name) or ""
        for name in (
            "Content-Type",
            "X-Streams-Event-Id",
            "X-Streams-Event-Name",
            "X-Streams-Subscription-Id",
            "X-Streams-Timestamp",
            "X-Streams-Signature",
        )
    }
    async with aiohttp.ClientSession() as client:
        tampered = original.body.replace(b"1250", b"9999")
        async with client.post(f"{receiver.url}/hook", data=tampered, headers=signed) as resp:
            assert resp.status == 401
        async with client.post(f"{receiver.url}/hook", data=original.body, headers=signed) as resp:
            assert resp.status == 200  # an exact replay inside the window verifies
        unsigned = {"Content-Type": "application/json"}
        async with client.post(f"{receiver.url}/hook", data=original.body, headers=unsigned) as r:
            assert r.status == 401
        # the same request replayed to another endpoint, or under another event id, fails
        async with client.post(f"{receiver.url}/other", data=original.body, headers=signed) as r:
            assert r.status == 401
        renamed = {**signed, "X-Streams-Event-Id": "evt-replayed"}
        async with client.post(f"{receiver.url}/hook", data=original.body, headers=renamed) as r:
            assert r.status == 401
        relabelled = {**signed, "X-Streams-Event-Name": "order.refunded"}
        async with client.post(f"{receiver.url}/hook", data=original.body, headers=relabelled) as r:
            assert r.status == 401

    statuses = [(d.verified, d.verify_error) for d in receiver.deliveries]
    assert statuses == [
        (True, None),
        (False, "signature does not match"),
        (True, None),
        (False, "missing timestamp"),
        (False, "signature does not match"),
        (False, "signature does not match"),
        (False, "signature does not match"),
    ]


async def test_old_timestamp_fails_verification_and_is_permanent(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job(clock=lambda: time.time() - 301)
    rejected = r"HTTP 401 from 127\.0\.0\.1: signature rejected: timestamp"
    with pytest.raises(Permanent, match=rejected):
        await deliver(job, webhook_event(f"{receiver.url}/hook"))
    [delivery] = receiver.deliveries
    assert not delivery.verified
    assert delivery.verify_error == "timestamp outside the 300s tolerance"


async def test_wrong_secret_fails_and_rotated_secret_verifies(make_job: MakeJob) -> None:
    async with WebhookReceiver(["whsec_new", "whsec_old"]) as rotating:
        old = await make_job(secret="whsec_old")
        await deliver(old, webhook_event(f"{rotating.url}/hook"))
        stranger = await make_job(secret="whsec_unknown")
        with pytest.raises(Permanent, match="HTTP 401"):
            await deliver(stranger, webhook_event(f"{rotating.url}/hook"))
        assert [d.verified for d in rotating.deliveries] == [True, False]


async def test_per_subscription_secrets_with_rotation(make_job: MakeJob) -> None:
    book = {"sub-1": ["whsec_sub1_new", "whsec_sub1_old"], "sub-2": ["whsec_sub2"]}
    async with WebhookReceiver(book) as receiver:
        settings_secrets = {
            "sub-1": [SecretStr("whsec_sub1_old")],  # the sender has not rotated yet
            "sub-2": [SecretStr("whsec_sub2")],
        }
        job = await make_job(subscription_secrets=settings_secrets)
        for sub in ("sub-1", "sub-2"):
            await deliver(job, webhook_event(f"{receiver.url}/hook", subscription_id=sub))
        # sub-1's secret cannot sign for sub-2: every receiver has its own
        forger = await make_job(subscription_secrets={"sub-2": [SecretStr("whsec_sub1_old")]})
        with pytest.raises(Permanent, match="HTTP 401"):
            await deliver(forger, webhook_event(f"{receiver.url}/hook", subscription_id="sub-2"))
        rotating = await make_job(
            subscription_secrets={"sub-1": [SecretStr("whsec_sub1_new"), SecretStr("x-old-1")]}
        )
        await deliver(rotating, webhook_event(f"{receiver.url}/hook", subscription_id="sub-1"))
        signatures = receiver.deliveries[-1].header("X-Streams-Signature") or ""
        assert signatures.count("v2=") == 2
        verified = [
            (d.header("X-Streams-Subscription-Id"), d.verified) for d in receiver.deliveries
        ]
        assert verified == [("sub-1", True), ("sub-2", True), ("sub-2", False), ("sub-1", True)]


# --- retry outcomes ------------------------------------------------------------------------


async def test_503_then_200_retries_with_the_same_idempotency_key(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job()
    guard = RecordingGuard()
    event = webhook_event(f"{receiver.url}/fail/503-then-200")

    with pytest.raises(Retryable) as first:
        await deliver(job, event, guard)
    assert type(first.value) is Retryable  # no Retry-After header: not RetryAfter
    assert str(first.value) == "HTTP 503 from 127.0.0.1"
    await deliver(job, event, guard)  # the retry succeeds

    deliveries = receiver.deliveries_to("/fail/503-then-200")
    assert [d.status for d in deliveries] == [503, 200]
    assert all(d.verified for d in deliveries)
    keys = {d.header("Idempotency-Key") for d in deliveries}
    assert keys == {event.envelope.event_id}
    assert guard.outcomes == ["Retryable", "ok"]


async def test_429_with_retry_after_seconds(receiver: WebhookReceiver, make_job: MakeJob) -> None:
    job = await make_job()
    with pytest.raises(RetryAfter) as info:
        await deliver(job, webhook_event(f"{receiver.url}/fail/429?retry_after=7"))
    assert info.value.delay_s == 7.0
    assert "HTTP 429 from 127.0.0.1" in str(info.value)


async def test_503_with_retry_after_http_date(receiver: WebhookReceiver, make_job: MakeJob) -> None:
    now_s = time.time()
    receiver.script(
        "/dated", [Reply(503, headers={"Retry-After": formatdate(now_s + 120, usegmt=True)})]
    )
    job = await make_job(clock=lambda: now_s)
    with pytest.raises(RetryAfter) as info:
        await deliver(job, webhook_event(f"{receiver.url}/dated"))
    assert 119.0 <= info.value.delay_s <= 120.0


async def test_huge_retry_after_is_capped(receiver: WebhookReceiver, make_job: MakeJob) -> None:
    job = await make_job(max_retry_after_s=900.0)
    with pytest.raises(RetryAfter) as info:
        await deliver(job, webhook_event(f"{receiver.url}/fail/503?retry_after=86400"))
    assert info.value.delay_s == 900.0


async def test_408_is_retryable(receiver: WebhookReceiver, make_job: MakeJob) -> None:
    job = await make_job()
    with pytest.raises(Retryable, match="HTTP 408"):
        await deliver(job, webhook_event(f"{receiver.url}/fail/408"))


async def test_slow_endpoint_times_out_as_retryable(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job(timeout_s=TIMEOUT_S)
    guard = RecordingGuard()
    started = time.monotonic()
    with pytest.raises(Retryable, match=r"timeout after 0\.5s from 127\.0\.0\.1") as info:
        await deliver(job, webhook_event(f"{receiver.url}/slow/5"), guard)
    elapsed_s = time.monotonic() - started
    assert type(info.value) is Retryable
    assert TIMEOUT_S * 0.9 <= elapsed_s < TIMEOUT_S + 1.0
    assert len(receiver.deliveries_to("/slow/5")) == 1
    assert guard.outcomes == ["Retryable"]


async def test_2xx_whose_body_stalls_past_the_timeout_is_still_done(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job(timeout_s=TIMEOUT_S)
    guard = RecordingGuard()
    started = time.monotonic()
    await deliver(job, webhook_event(f"{receiver.url}/stall/3"), guard)  # no retry: delivered
    assert time.monotonic() - started < TIMEOUT_S + 1.0
    assert [d.status for d in receiver.deliveries] == [200]
    assert guard.outcomes == ["ok"]


async def test_connection_refused_is_retryable(make_job: MakeJob) -> None:
    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    job = await make_job()
    guard = RecordingGuard()
    with pytest.raises(Retryable, match=r"connection to 127\.0\.0\.1:\d+ failed") as info:
        await deliver(job, webhook_event(f"http://127.0.0.1:{port}/hook"), guard)
    assert not isinstance(info.value, Permanent)
    assert str(info.value) == f"connection to 127.0.0.1:{port} failed: ClientConnectorError"
    assert guard.outcomes == ["Retryable"]


@contextlib.asynccontextmanager
async def malformed_http_server(answer: bytes) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server that reads one request head and answers ``answer`` (not valid HTTP)."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], requests
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc Not A Status\r\n\r\n",
        b"garbage without a status line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nhello",
        b"",  # closes without answering
    ],
)
async def test_a_malformed_answer_reports_the_error_type_and_host_port_only(
    make_job: MakeJob, answer: bytes
) -> None:
    token = "T0SECRET1/B0SECRET2/xoxbLeakedPathToken123456"
    async with malformed_http_server(answer) as (port, requests):
        job = await make_job()
        url = f"http://127.0.0.1:{port}/services/{token}?api_key=q-secret-99"
        with pytest.raises(Retryable) as info:
            await deliver(job, webhook_event(url))
    assert len(requests) == 1  # the request went out; the answer was the problem
    message = str(info.value)
    assert message.startswith(f"connection to 127.0.0.1:{port} failed: ")
    kind = message.rsplit(": ", 1)[1]
    assert kind.isidentifier()  # an exception type name, nothing of aiohttp's text
    for leak in ("services", "xoxbLeakedPathToken", "SECRET", "api_key", "q-secret", "url="):
        assert leak not in message


# --- permanent outcomes ----------------------------------------------------------------------


async def test_400_is_permanent_with_a_scrubbed_bounded_snippet(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    body = "invalid payload: token=abc123 for ops@example.com " + "x" * 5000
    receiver.script("/strict", [Reply(400, body=body)])
    job = await make_job()
    guard = RecordingGuard()
    with pytest.raises(Permanent) as info:
        await deliver(job, webhook_event(f"{receiver.url}/strict"), guard)
    message = str(info.value)
    assert message.startswith("HTTP 400 from 127.0.0.1: invalid payload: token=<redacted>")
    assert "abc123" not in message and "ops@example.com" not in message
    assert len(message) < 300
    assert guard.outcomes == ["ok"]  # a 4xx is not a dependency failure


async def test_redirect_is_permanent_and_not_followed(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job()
    guard = RecordingGuard()
    location = "http://169.254.169.254/latest/meta-data"
    with pytest.raises(Permanent) as info:
        await deliver(job, webhook_event(f"{receiver.url}/redirect?to={location}"), guard)
    assert str(info.value) == f"HTTP 302 from 127.0.0.1: redirect to {location} not followed"
    assert [d.path for d in receiver.deliveries] == ["/redirect"]
    assert guard.outcomes == ["ok"]


async def test_loopback_target_without_allow_list_is_refused(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job(allow="")
    guard = RecordingGuard()
    with pytest.raises(TargetRefused) as info:
        await deliver(job, webhook_event(f"{receiver.url}/hook"), guard)
    assert str(info.value) == (
        "url: target 127.0.0.1 resolves to private address 127.0.0.1 (loopback); "
        "allow-list it in STREAMS_WEBHOOK_ALLOW_HOSTS to permit"
    )
    assert isinstance(info.value, Permanent)
    assert receiver.deliveries == []
    assert guard.names == []  # refused before the breaker


async def test_localhost_name_resolved_by_the_system_is_refused_unless_allow_listed(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    url = receiver.url.replace("127.0.0.1", "localhost") + "/by-name"
    refusing = await make_job(allow="")
    with pytest.raises(TargetRefused, match=r"url: target localhost resolves to private address"):
        await deliver(refusing, webhook_event(url))
    assert receiver.deliveries == []

    allowing = await make_job(allow="localhost")
    await deliver(allowing, webhook_event(url))
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert delivery.header("Host") == f"localhost:{url.split(':')[2].split('/')[0]}"


@pytest.mark.parametrize(
    ("allow", "url", "reason"),
    [
        # the allow-list lifts the address rule only: scheme/port/credential rules remain
        ("127.0.0.1", "http://127.0.0.1:22/hook", "url: port 22 not allowed"),
        ("127.0.0.1", "http://user:secret@127.0.0.1:8080/hook", "url: credentials in the URL"),
        ("127.0.0.1", "http://127.1:8080/hook", "url: host '127.1' is not a canonical IP"),
        # yarl normalizes IPv4-mapped literals to hex groups: ::ffff:a9fe:a9fe
        ("", "http://[::ffff:169.254.169.254]:8080/", "url: target ::ffff:a9fe:a9fe resolves"),
        ("", "http://[::ffff:7f00:1]:8080/", "url: target ::ffff:7f00:1 resolves to private"),
        ("", "http://[::1]:8080/", "url: target ::1 resolves to private address ::1 (loopback)"),
        ("", "http://0.0.0.0:8080/", "url: target 0.0.0.0 resolves to private address 0.0.0.0"),
        ("", "http://[fec0::1]:8080/", "url: target fec0::1 resolves to private address fec0::1"),
        ("", "http://[feff::1]:8080/", "url: target feff::1 resolves to private address feff::1"),
    ],
)
async def test_bad_urls_are_permanent_before_any_request(
    make_job: MakeJob, allow: str, url: str, reason: str
) -> None:
    job = await make_job(allow=allow)
    guard = RecordingGuard()
    with pytest.raises(Permanent) as info:
        await deliver(job, webhook_event(url), guard)
    assert str(info.value).startswith(reason)
    assert guard.names == []


async def test_malformed_url_in_an_unvalidated_record_is_permanent(make_job: MakeJob) -> None:
    event = webhook_event("http://127.0.0.1:8080/hook")
    bad = WebhookRequested.model_construct(**{**dict(event), "url": "http://exa mple.com/x"})
    job = await make_job()
    with pytest.raises(Permanent, match=r"^url: contains whitespace"):
        await deliver(job, bad)


# --- breaker, pinning, pooling ---------------------------------------------------------------


async def test_dependency_guard_is_named_after_the_host(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job()
    guard = RecordingGuard()
    await deliver(job, webhook_event(f"{receiver.url}/hook"), guard)
    assert guard.names == ["webhook:127.0.0.1"]
    assert guard.outcomes == ["ok"]


class CountingResolver:
    """Resolves names from a table, in turn per call (to model a rebinding DNS server)."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        turns = self.answers[host]
        seen = sum(1 for name, _ in self.calls if name == host)
        return turns[min(seen, len(turns)) - 1]


async def test_connection_is_pinned_to_the_vetted_address(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    # hooks.example does not exist in real DNS: a delivery proves the connect used our pin.
    resolver = CountingResolver({"hooks.example": [["127.0.0.1"], ["169.254.169.254"]]})
    job = await make_job(allow="127.0.0.1", resolve=resolver)
    guard = RecordingGuard()

    await deliver(job, webhook_event(f"http://hooks.example:{port}/pinned"), guard)
    assert resolver.calls == [("hooks.example", int(port))]  # one lookup, none at connect
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert delivery.header("Host") == f"hooks.example:{port}"
    assert guard.names == ["webhook:hooks.example"]

    # The name now rebinds to the metadata address: the next event is refused.
    with pytest.raises(TargetRefused, match=r"private address 169\.254\.169\.254 \(link-local\)"):
        await deliver(job, webhook_event(f"http://hooks.example:{port}/pinned"))
    assert len(receiver.deliveries) == 1


async def test_mixed_public_and_private_answer_is_refused(make_job: MakeJob) -> None:
    resolver = CountingResolver({"mixed.example": [["93.184.215.14", "10.0.0.8"]]})
    job = await make_job(allow="", resolve=resolver)
    with pytest.raises(TargetRefused, match=r"private address 10\.0\.0\.8"):
        await deliver(job, webhook_event("http://mixed.example:8080/hook"))


async def test_fifty_concurrent_deliveries_share_the_pool(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job(timeout_s=5.0)
    events = [webhook_event(f"{receiver.url}/bulk/{i}") for i in range(50)]
    await asyncio.gather(*(deliver(job, event) for event in events))
    assert len(receiver.deliveries) == 50
    assert all(d.verified for d in receiver.deliveries)
    keys = {d.header("Idempotency-Key") for d in receiver.deliveries}
    assert keys == {e.envelope.event_id for e in events}


async def test_handle_before_start_is_a_clear_error() -> None:
    job = WebhookJob(
        WebhookSettings(webhook_allow_hosts="127.0.0.1", webhook_signing_secret=SecretStr(SECRET))
    )
    event = webhook_event("http://127.0.0.1:8080/hook")
    with pytest.raises(RuntimeError, match=r"before start\(\)"):
        await deliver(job, event)


async def test_stop_closes_the_session_and_start_reopens_it(
    receiver: WebhookReceiver, make_job: MakeJob
) -> None:
    job = await make_job()
    await job.stop()
    with pytest.raises(RuntimeError):
        await deliver(job, webhook_event(f"{receiver.url}/hook"))
    await job.start()
    await deliver(job, webhook_event(f"{receiver.url}/hook"))
    assert len(receiver.deliveries) == 1
