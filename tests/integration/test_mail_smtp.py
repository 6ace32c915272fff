"""The email job against a real SMTP server (aiosmtpd on 127.0.0.1, a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from streams.errors import ConfigError, Permanent, Retryable
from streams.events import EmailRequested, build_event
from streams.jobs.base import JobContext
from streams.jobs.mail import EmailJob, verify_unsubscribe_token
from streams.jobs.mail_settings import EmailSettings
from streams.testing.processes import free_port
from streams.testing.smtp import RecordingSMTPServer

SECRET = "integration-secret"


def make_settings(port: int, **overrides: Any) -> EmailSettings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_timeout_s": 5.0,
        "email_from": "Streams <no-reply@streams.example>",
        "email_message_id_domain": "mail.streams.example",
        "unsubscribe_base_url": "https://app.example.com/unsubscribe",
        "unsubscribe_secret": SecretStr(SECRET),
    }
    values.update(overrides)
    return EmailSettings(**values)


def email_event(
    to: str = "alice@example.com", locale: str = "fr", event_id: str | None = None
) -> EmailRequested:
    built = build_event(
        "email.requested",
        {
            "user_id": "user-7",
            "to": to,
            "locale": locale,
            "template": "password_reset",
            "variables": {
                "name": "Zoé <b>",
                "reset_url": "https://app.example.com/reset?token=t0k",
                "expires_minutes": "30",
            },
        },
        event_id=event_id,
    )
    assert isinstance(built, EmailRequested)
    return built


@dataclass
class GuardLog:
    """A dependency guard like the worker's breaker: records what each guarded call raised."""

    calls: list[tuple[str, BaseException | None]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def guard(self, name: str) -> AsyncIterator[None]:
        try:
            yield
        except BaseException as exc:
            self.calls.append((name, exc))
            raise
        self.calls.append((name, None))


def context(event: EmailRequested, guard: GuardLog | None = None, attempt: int = 1) -> JobContext:
    if guard is None:
        return JobContext(event.event_id, event.event_type, "email", attempt=attempt)
    return JobContext(
        event.event_id, event.event_type, "email", attempt=attempt, dependency=guard.guard
    )


@pytest.fixture
def smtp() -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer() as server:
        yield server


@pytest.fixture
async def job(smtp: RecordingSMTPServer) -> AsyncIterator[EmailJob]:
    email_job = EmailJob(make_settings(smtp.port))
    await email_job.start()
    yield email_job
    await email_job.stop()


def text_and_html(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


# --- delivery ---------------------------------------------------------------------------


async def test_delivers_french_email_with_both_parts_and_unsubscribe_link(
    smtp: RecordingSMTPServer, job: EmailJob
) -> None:
    event = email_event(locale="fr")
    guard = GuardLog()

    await job.handle(event, context(event, guard))

    [mail] = smtp.received
    msg = mail.message
    assert mail.mail_from == "no-reply@streams.example"
    assert mail.rcpt_tos == ("alice@example.com",)
    assert msg["To"] == "alice@example.com"
    assert msg["Subject"] == "Réinitialisez votre mot de passe Streams"
    assert msg["Content-Language"] == "fr"
    assert msg["Message-ID"] == f"<{event.event_id}@mail.streams.example>"
    assert msg["X-Streams-Event-Id"] == event.event_id
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text, html = text_and_html(msg)
    assert "Bonjour Zoé <b>," in text
    assert "<p>Bonjour Zoé &lt;b&gt;,</p>" in html

    link = msg["List-Unsubscribe"].strip("<>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link in text
    assert link.replace("&", "&amp;") in html
    query = parse_qs(urlsplit(link).query)
    assert query["u"] == ["user-7"]
    assert verify_unsubscribe_token(SECRET, "user-7", query["t"][0])
    assert guard.calls == [(f"smtp:127.0.0.1:{smtp.port}", None)]


async def test_english_locale_is_sent_in_english(smtp: RecordingSMTPServer, job: EmailJob) -> None:
    event = email_event(locale="en")
    await job.handle(event, context(event))
    [msg] = smtp.messages
    assert msg["Subject"] == "Reset your Streams password"
    assert msg["Content-Language"] == "en"


async def test_pooled_connection_is_reused(smtp: RecordingSMTPServer, job: EmailJob) -> None:
    for _ in range(5):
        event = email_event()
        await job.handle(event, context(event))

    assert len(smtp.messages) == 5
    assert job.pool is not None and job.pool.connects == 1


async def test_concurrent_sends_stay_within_the_pool(smtp: RecordingSMTPServer) -> None:
    email_job = EmailJob(make_settings(smtp.port), pool_size=3)
    await email_job.start()
    pool = email_job.pool
    assert pool is not None
    events = [email_event(to=f"user{i}@example.com") for i in range(20)]
    try:
        await asyncio.gather(*(email_job.handle(e, context(e)) for e in events))
    finally:
        await email_job.stop()

    received = smtp.received
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(e.to for e in events)
    assert len({r.message["Message-ID"] for r in received}) == 20
    assert 1 <= pool.connects <= 3
    assert len({r.peer for r in received}) == pool.connects
    assert email_job.pool is None  # stopped


async def test_concurrent_first_sends_without_start_share_one_pool(
    smtp: RecordingSMTPServer,
) -> None:
    email_job = EmailJob(make_settings(smtp.port), pool_size=2)
    events = [email_event() for _ in range(6)]
    try:
        await asyncio.gather(*(email_job.handle(e, context(e)) for e in events))
        pool = email_job.pool
        assert pool is not None and pool.connects <= 2
    finally:
        await email_job.stop()
    assert len(smtp.messages) == 6
    assert len({r.peer for r in smtp.received}) <= 2  # no second pool leaked connections


async def test_duplicate_delivery_carries_the_same_message_id(
    smtp: RecordingSMTPServer, job: EmailJob
) -> None:
    event = email_event()
    await job.handle(event, context(event))
    await job.handle(event, context(event, attempt=2))  # a redelivery after a crash

    first, second = smtp.messages
    assert first["Message-ID"] == second["Message-ID"] == f"<{event.event_id}@mail.streams.example>"


async def test_server_restart_between_sends_reconnects(smtp: RecordingSMTPServer) -> None:
    email_job = EmailJob(make_settings(smtp.port))
    try:
        first = email_event()
        await email_job.handle(first, context(first))
        await asyncio.to_thread(smtp.stop)  # the pooled connection is now dead
        down = email_event()
        with pytest.raises(Retryable, match=r"^smtp: connection failed"):
            await email_job.handle(down, context(down))
        await asyncio.to_thread(smtp.start)  # same port
        await email_job.handle(down, context(down))
    finally:
        await email_job.stop()

    assert [m["X-Streams-Event-Id"] for m in smtp.messages] == [first.event_id, down.event_id]
    assert email_job.pool is None


async def test_idle_connection_closed_by_the_server_is_replaced(
    smtp: RecordingSMTPServer,
) -> None:
    email_job = EmailJob(make_settings(smtp.port))
    await email_job.start()
    pool = email_job.pool
    assert pool is not None
    try:
        first = email_event()
        await email_job.handle(first, context(first))
        await asyncio.to_thread(smtp.stop)
        await asyncio.to_thread(smtp.start)  # the idle pooled connection was cut meanwhile
        second = email_event()
        await email_job.handle(second, context(second))  # no error: reconnected once
    finally:
        await email_job.stop()

    assert pool.connects == 2
    assert [m["X-Streams-Event-Id"] for m in smtp.messages] == [first.event_id, second.event_id]


async def test_pooled_connection_cut_on_use_is_replaced_once() -> None:
    """The server cuts a reused connection at MAIL FROM: the pool resends on a fresh one."""
    async with RecordingSMTPServer(max_messages_per_connection=1) as smtp:
        email_job = EmailJob(make_settings(smtp.port))
        await email_job.start()
        pool = email_job.pool
        assert pool is not None
        guard = GuardLog()
        events = [email_event() for _ in range(3)]
        try:
            for event in events:
                await email_job.handle(event, context(event, guard))
        finally:
            await email_job.stop()

        assert smtp.dropped == 2
        assert pool.connects == 3
        assert [m["X-Streams-Event-Id"] for m in smtp.messages] == [e.event_id for e in events]
        assert [exc for _, exc in guard.calls] == [None, None, None]


# --- failures ---------------------------------------------------------------------------


async def test_451_twice_is_retryable_then_delivered_once() -> None:
    async with RecordingSMTPServer(fail_first_n=2, fail_code=451) as smtp:
        email_job = EmailJob(make_settings(smtp.port))
        event = email_event()
        guard = GuardLog()
        try:
            for attempt in (1, 2):
                with pytest.raises(Retryable, match=r"^smtp: temporary failure 451"):
                    await email_job.handle(event, context(event, guard, attempt))
            await email_job.handle(event, context(event, guard, 3))
        finally:
            await email_job.stop()

        assert smtp.failed == 2
        assert len(smtp.messages) == 1
        assert smtp.messages[0]["Message-ID"] == f"<{event.event_id}@mail.streams.example>"
        # the breaker saw two dependency failures, then a success
        assert [type(exc) for _, exc in guard.calls] == [Retryable, Retryable, type(None)]


async def test_rejected_recipient_is_permanent_and_does_not_trip_the_breaker() -> None:
    async with RecordingSMTPServer(reject_recipients={"Nobody@Example.com"}) as smtp:
        email_job = EmailJob(make_settings(smtp.port))
        event = email_event(to="nobody@example.com")
        guard = GuardLog()
        try:
            with pytest.raises(Permanent) as caught:
                await email_job.handle(event, context(event, guard))
            # the connection survives a bounce: the next email goes through on it
            ok = email_event()
            await email_job.handle(ok, context(ok, guard))
            assert email_job.pool is not None and email_job.pool.connects == 1
        finally:
            await email_job.stop()

    assert str(caught.value).startswith("to: bounced, recipient refused 550 5.1.1")
    assert "nobody@example.com" not in str(caught.value)
    assert [m["To"] for m in smtp.messages] == ["alice@example.com"]
    assert guard.calls == [(f"smtp:127.0.0.1:{smtp.port}", None)] * 2


async def test_554_on_data_is_permanent() -> None:
    async with RecordingSMTPServer(fail_first_n=1, fail_code=554) as smtp:
        email_job = EmailJob(make_settings(smtp.port))
        event = email_event()
        try:
            with pytest.raises(Permanent, match=r"^smtp: bounced, DATA refused 554"):
                await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        assert smtp.messages == []


async def test_451_on_rcpt_is_retryable() -> None:
    async with RecordingSMTPServer(fail_first_n=1, fail_stage="rcpt") as smtp:
        email_job = EmailJob(make_settings(smtp.port))
        event = email_event()
        try:
            with pytest.raises(Retryable, match=r"^smtp: temporary failure 451"):
                await email_job.handle(event, context(event))
            await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        assert len(smtp.messages) == 1


async def test_server_down_is_retryable_and_seen_by_the_breaker() -> None:
    email_job = EmailJob(make_settings(free_port(), smtp_timeout_s=2.0))
    event = email_event()
    guard = GuardLog()
    try:
        with pytest.raises(Retryable, match=r"^smtp: connection failed"):
            await email_job.handle(event, context(event, guard))
    finally:
        await email_job.stop()
    [(_, seen)] = guard.calls
    assert isinstance(seen, Retryable)


async def test_slow_server_times_out_as_retryable() -> None:
    async with RecordingSMTPServer(reply_delay_s=1.5) as smtp:
        email_job = EmailJob(make_settings(smtp.port, smtp_timeout_s=0.3))
        event = email_event()
        try:
            with pytest.raises(Retryable, match=r"^smtp: timed out"):
                await email_job.handle(event, context(event))
        finally:
            await email_job.stop()


async def test_bad_input_is_permanent_before_any_connection(smtp: RecordingSMTPServer) -> None:
    email_job = EmailJob(make_settings(smtp.port))
    event = email_event()
    event.variables.pop("reset_url")
    guard = GuardLog()
    with pytest.raises(Permanent, match=r"^variables\.reset_url: required"):
        await email_job.handle(event, context(event, guard))
    assert guard.calls == []
    assert email_job.pool is None or email_job.pool.connects == 0
    await email_job.stop()


# --- STARTTLS and AUTH ------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def tls_server(cert: Path, key: Path) -> RecordingSMTPServer:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    return RecordingSMTPServer(
        tls_context=server_ctx, require_starttls=True, credentials={"mailer": "hunter2"}
    )


async def test_starttls_and_login(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    async with tls_server(cert, key) as smtp:
        settings = make_settings(
            smtp.port, smtp_starttls=True, smtp_username="mailer", smtp_password="hunter2"
        )
        email_job = EmailJob(settings, tls_context=ssl.create_default_context(cafile=str(cert)))
        event = email_event()
        try:
            await email_job.handle(event, context(event))
        finally:
            await email_job.stop()

        [mail] = smtp.received
        assert mail.tls is True
        assert mail.login == "mailer"
        assert mail.message["Message-ID"] == f"<{event.event_id}@mail.streams.example>"


async def test_wrong_password_is_retryable(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    async with tls_server(cert, key) as smtp:
        settings = make_settings(
            smtp.port, smtp_starttls=True, smtp_username="mailer", smtp_password="wrong"
        )
        email_job = EmailJob(settings, tls_context=ssl.create_default_context(cafile=str(cert)))
        event = email_event()
        try:
            with pytest.raises(Retryable, match=r"^smtp: session refused 535"):
                await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        assert smtp.messages == []


async def test_untrusted_certificate_is_retryable(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    async with tls_server(cert, key) as smtp:
        settings = make_settings(
            smtp.port, smtp_starttls=True, smtp_username="mailer", smtp_password="hunter2"
        )
        email_job = EmailJob(settings)  # system CAs: the self-signed cert is not trusted
        event = email_event()
        try:
            with pytest.raises(Retryable, match=r"^smtp: (TLS|connection) failed"):
                await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        assert smtp.messages == []


async def test_plain_client_cannot_skip_required_starttls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    async with tls_server(cert, key) as smtp:
        email_job = EmailJob(make_settings(smtp.port))  # no STARTTLS, no login
        event = email_event()
        try:
            with pytest.raises(Retryable):
                await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        assert smtp.messages == []


# --- credentials only over TLS; implicit TLS; configurable CA ----------------------------


def test_credentials_without_tls_are_refused_at_start() -> None:
    for overrides in ({"smtp_username": "mailer"}, {"smtp_password": SecretStr("hunter2")}):
        with pytest.raises(ConfigError, match=r"refusing to send credentials in clear text"):
            EmailJob(make_settings(2525, **overrides))


def test_both_tls_modes_and_placeholder_passwords_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^STREAMS_SMTP_IMPLICIT_TLS: choose"):
        EmailJob(make_settings(465, smtp_starttls=True, smtp_implicit_tls=True))
    with pytest.raises(ConfigError, match=r"^STREAMS_SMTP_PASSWORD: is a placeholder"):
        EmailJob(
            make_settings(
                587, smtp_starttls=True, smtp_username="m", smtp_password=SecretStr("change-me")
            )
        )
    with pytest.raises(ConfigError, match=r"^STREAMS_SMTP_CA_FILE: "):
        EmailJob(make_settings(587, smtp_starttls=True, smtp_ca_file=Path("/nonexistent.pem")))


def implicit_tls_server(cert: Path, key: Path) -> RecordingSMTPServer:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    return RecordingSMTPServer(implicit_tls_context=server_ctx, credentials={"mailer": "hunter2"})


async def test_implicit_tls_and_login_verified_by_the_configured_ca(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    async with implicit_tls_server(cert, key) as smtp:
        settings = make_settings(
            smtp.port,
            smtp_implicit_tls=True,
            smtp_ca_file=cert,
            smtp_username="mailer",
            smtp_password=SecretStr("hunter2"),
        )
        email_job = EmailJob(settings)  # the CA comes from STREAMS_SMTP_CA_FILE
        event = email_event()
        try:
            await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        [mail] = smtp.received
        assert mail.tls is True
        assert mail.login == "mailer"


async def test_implicit_tls_with_an_untrusted_certificate_sends_nothing(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    async with implicit_tls_server(cert, key) as smtp:
        settings = make_settings(
            smtp.port,
            smtp_implicit_tls=True,
            smtp_username="mailer",
            smtp_password=SecretStr("hunter2"),
        )
        email_job = EmailJob(settings)  # system CAs: the self-signed cert is not trusted
        event = email_event()
        try:
            with pytest.raises(Retryable, match=r"^smtp: (TLS|connection) failed"):
                await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        assert smtp.received == []


async def test_starttls_verified_by_the_configured_ca(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    async with tls_server(cert, key) as smtp:
        settings = make_settings(
            smtp.port,
            smtp_starttls=True,
            smtp_ca_file=cert,
            smtp_username="mailer",
            smtp_password=SecretStr("hunter2"),
        )
        email_job = EmailJob(settings)
        event = email_event()
        try:
            await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        [mail] = smtp.received
        assert mail.tls is True and mail.login == "mailer"


async def test_a_server_offering_starttls_is_upgraded_without_credentials(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    async with RecordingSMTPServer(tls_context=server_ctx) as smtp:  # offers, not required
        email_job = EmailJob(make_settings(smtp.port, smtp_ca_file=cert))  # STARTTLS not set
        event = email_event()
        try:
            await email_job.handle(event, context(event))
        finally:
            await email_job.stop()
        [mail] = smtp.received
        assert mail.tls is True  # opportunistic STARTTLS is no longer switched off
