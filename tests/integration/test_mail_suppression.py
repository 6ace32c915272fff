"""Email suppression in a real worker: a hard bounce (SMTP 550 on RCPT), a provider-side
``email.bounced``, the blacklist and an unsubscribe — the email's HMAC link followed on the
real API (``/v1/unsubscribe``) — stop later emails (real SMTP catcher, real broker)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.api import running_api
from tests.support.engine import WorkerProcess, provision, read_topic, record_headers, wait_for
from tests.support.engine import write_catalog as _write_catalog

from streams.core import headers as h
from streams.jobs.mail_render import unsubscribe_url
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.testing.smtp import RecordingSMTPServer

pytestmark = pytest.mark.kafka

SECRET = "unsub-secret"
RETRY = {"delays": ["1s", "2s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"}


def email(user: str, to: str, template: str = "notification") -> dict[str, object]:
    variables = {"name": user, "title": "t", "message": "m"}
    if template == "password_reset":  # transactional: an unsubscribe does not stop it
        variables = {"name": user, "reset_url": "https://example.com/r", "expires_minutes": "30"}
    return {"user_id": user, "to": to, "template": template, "variables": variables}


def test_bounced_blacklisted_and_unsubscribed_addresses_are_suppressed(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    family = {
        "partitions": 2,
        "concurrency": 8,
        "handler_timeout": "5s",
        "retry": RETRY,
        "rate_limits": [],
    }
    settings = make_settings(catalog_path=_write_catalog(tmp_path, {"email": family}))
    catalog = provision(settings)
    server = RecordingSMTPServer(reject_recipients=["gone@example.com"])
    server.start()
    env = {
        "STREAMS_SMTP_PORT": str(server.port),
        "STREAMS_SMTP_HOST": "127.0.0.1",
        "STREAMS_UNSUBSCRIBE_SECRET": "unsub-secret",
        "STREAMS_EMAIL_BLACKLIST": "@blocked.example, spam@junk.example",
    }
    worker = WorkerProcess(
        settings,
        ["email"],
        tmp_path / "unused.db",
        tmp_path / "w1.log",
        extra_env=env,
        handlers="streams.jobs.registry",
        builtin_jobs=True,
    )
    publisher = Publisher(settings, catalog=catalog)
    try:
        worker.start().wait_ready(90)

        def outcome(name: str) -> float:
            return worker.metric("streams_events_total", family="email", outcome=name)

        publisher.publish("email.requested", email("b1", "gone@example.com"))
        wait_for(lambda: outcome("dead_lettered") >= 1, 30, "the hard bounce")
        server.reject_recipients = frozenset()  # the server would accept it now
        transactions = server.transactions
        publisher.publish("email.requested", email("b1", "gone@example.com"))
        publisher.publish("email.bounced", {"user_id": "b2", "address": "old@example.com"})
        publisher.publish("email.requested", email("b2", "old@example.com"))
        publisher.publish("email.requested", email("b3", "x@sub.blocked.example"))
        publisher.publish("email.requested", email("b3", "spam@junk.example"))
        with running_api(
            settings,
            tmp_path / "api",
            families=("email",),
            extra={"STREAMS_UNSUBSCRIBE_SECRET": SECRET},
        ) as api:
            link = unsubscribe_url(f"{api.url}/v1/unsubscribe", SECRET, "b4")
            with urllib.request.urlopen(link, timeout=10) as answer:
                assert answer.status == 200
            forged = unsubscribe_url(f"{api.url}/v1/unsubscribe", "not-the-secret", "b5")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(forged, timeout=10)
            refused.value.close()
            assert refused.value.code == 403
        publisher.publish("email.requested", email("b4", "b4@example.com", "notification"))
        publisher.publish("email.requested", email("b4", "b4@example.com", "password_reset"))
        wait_for(lambda: outcome("suppressed") >= 5, 30, "five suppressed emails")
        server.wait_for(1, timeout_s=30)
        assert outcome("suppressed") == 5
        assert server.transactions == transactions + 1  # only the password reset was sent
        assert [m["To"] for m in server.messages] == ["b4@example.com"]
        assert server.messages[0]["Subject"] and "assword" in str(server.messages[0].get_body())
    finally:
        publisher.close()
        worker.stop()
        server.stop()
    dlq = read_topic(settings, f"{settings.topic_prefix}email.dlq", 2)
    assert [record_headers(m)[h.DLQ_REASON] for m in dlq] == ["permanent"]
