"""Rate limits, circuit breakers and the email/webhook jobs running inside real workers."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import WorkerProcess, provision, read_topic, record_headers, wait_for
from tests.support.engine import write_catalog as _write_catalog
from tests.support.receiver import ThreadedReceiver

from streams.core import headers as h
from streams.jobs.mail_render import verify_unsubscribe_token
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.testing.smtp import RecordingSMTPServer

pytestmark = pytest.mark.kafka

SECRET = "test-signing-secret"
UNSUB_SECRET = "unsub-secret"


def email_family(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partitions": 3,
        "concurrency": 8,
        "handler_timeout": "5s",
        "retry": {"delays": ["1s", "2s"], "max_attempts": 5, "jitter": 0.0, "retention": "1d"},
        "rate_limits": [],
        "circuit_breaker": {"failure_threshold": 50, "cooldown": "3s"},
    }
    body.update(over)
    return body


class Rig:
    def __init__(
        self,
        make_settings: Callable[..., Settings],
        tmp: Path,
        family: str,
        overrides: dict[str, Any],
        env: dict[str, str],
    ) -> None:
        self.settings = make_settings(catalog_path=_write_catalog(tmp, {family: overrides}))
        self.catalog = provision(self.settings)
        self.family = family
        self.tmp = tmp
        self.env = env
        self.workers: list[WorkerProcess] = []
        self.publisher = Publisher(self.settings, catalog=self.catalog)

    def start(self, worker_id: str = "w1", *, static: bool = True) -> WorkerProcess:
        """Start a worker; ``static=False`` makes it a dynamic group member (it leaves the
        group when it stops, so its partitions move at once)."""
        env = dict(self.env)
        if not static:
            env["STREAMS_WORKER_ID"] = ""
            env["STREAMS_HOME"] = str(self.tmp / f"home-{worker_id}")
        w = WorkerProcess(
            self.settings,
            [self.family],
            self.tmp / "unused.db",
            self.tmp / f"{worker_id}.log",
            worker_id=worker_id,
            extra_env=env,
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        )
        self.workers.append(w.start())
        w.wait_ready(90)
        return w

    def dlq(self) -> list[Any]:
        return read_topic(
            self.settings,
            f"{self.settings.topic_prefix}{self.family}.dlq",
            self.catalog.family(self.family).partitions,
        )

    def close(self) -> None:
        self.publisher.close()
        for w in self.workers:
            w.stop()


def email(user: str, n: int, locale: str = "en") -> tuple[str, dict[str, Any]]:
    return (
        "email.requested",
        {
            "user_id": user,
            "to": f"{user}@example.com",
            "locale": locale,
            "template": "notification",
            "variables": {"name": user, "title": f"Update {n}", "message": f"Message {n}"},
        },
    )


@pytest.fixture
def smtp() -> Iterator[RecordingSMTPServer]:
    server = RecordingSMTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def smtp_env(server: RecordingSMTPServer) -> dict[str, str]:
    return {
        "STREAMS_SMTP_PORT": str(server.port),
        "STREAMS_SMTP_HOST": "127.0.0.1",
        "STREAMS_UNSUBSCRIBE_SECRET": UNSUB_SECRET,
        "STREAMS_UNSUBSCRIBE_BASE_URL": "https://example.com/unsubscribe",
    }


class TimedSMTPServer(RecordingSMTPServer):
    """Also notes when (this process's monotonic clock) each transaction arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failed_at_s: list[float] = []
        self.accepted_at_s: list[float] = []

    def _should_fail(self) -> bool:  # called on the server thread for every transaction
        failing = super()._should_fail()
        (self.failed_at_s if failing else self.accepted_at_s).append(time.monotonic())
        return failing


def event_ids(server: RecordingSMTPServer) -> list[str]:
    return [str(m["X-Streams-Event-Id"]) for m in server.messages]


def test_per_user_rate_limit_defers_without_using_attempts(
    make_settings: Callable[..., Settings], tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    limit = {
        "name": "per_user",
        "scope": "key",
        "limit": 2,
        "per": "3s",
        "on_exceed": "defer",
        "max_defer": "1h",
    }
    rig = Rig(make_settings, tmp_path, "email", email_family(rate_limits=[limit]), smtp_env(smtp))
    try:
        worker = rig.start()
        started = time.time()
        busy = [
            r.event_id for r in rig.publisher.publish_batch([email("alice", i) for i in range(5)])
        ]
        quiet = [
            r.event_id for r in rig.publisher.publish_batch([email("bob", i) for i in range(2)])
        ]
        wait_for(lambda: set(quiet) <= set(event_ids(smtp)), 15, "the other user's emails")
        bob_done = time.time() - started
        wait_for(lambda: set(busy) <= set(event_ids(smtp)), 30, "the limited user's emails")
        alice_done = time.time() - started
        counts = Counter(event_ids(smtp))
        assert all(counts[e] == 1 for e in busy + quiet), counts
        assert bob_done < 5, "an unlimited user waited behind a limited one"
        # 5 sends at 2 per 3 s: the last waits for 1.5 tokens' refill, i.e. >= ~4.5 s
        assert alice_done >= 4.0
        # each over-limit email reserved its token and came back once, paced (no herd of
        # re-deferrals)
        assert worker.metric("streams_deferrals_total") == 3
        assert worker.metric("streams_retries_total") == 0, "a deferral used an attempt"
        assert rig.dlq() == []
    finally:
        rig.close()


def test_open_circuit_defers_without_calls_then_probe_drains_backlog(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    cooldown_s = 4.0
    server = TimedSMTPServer(fail_first_n=3, fail_code=451)
    server.start()
    fam = email_family(circuit_breaker={"failure_threshold": 3, "cooldown": f"{cooldown_s:g}s"})
    rig = Rig(make_settings, tmp_path, "email", fam, smtp_env(server))
    try:
        worker = rig.start()
        first = [
            r.event_id for r in rig.publisher.publish_batch([email(f"u{i}", i) for i in range(3)])
        ]
        wait_for(lambda: server.failed >= 3, 15, "three failures")
        wait_for(lambda: worker.metric("streams_circuit_state") == 2, 5, "the circuit to open")
        opened = time.monotonic()  # the circuit opened at or before this
        later = [
            r.event_id for r in rig.publisher.publish_batch([email(f"v{i}", i) for i in range(5)])
        ]
        wait_for(lambda: set(first + later) <= set(event_ids(server)), 40, "the backlog")
        # it opened after the 3rd failure arrived, so it was open from `opened` until at
        # least that arrival + the cool-down: no call may have arrived in between, however
        # slowly this machine ran (and the deferrals asserted below prove work was held)
        open_until = server.failed_at_s[2] + cooldown_s
        assert open_until > opened, "the circuit half-opened before the test saw it open"
        while_open = [t - opened for t in server.accepted_at_s if opened <= t < open_until]
        assert while_open == [], "a call reached the dependency while open"
        assert server.transactions == 3 + len(first + later)  # 3 failures, then one call each
        counts = Counter(event_ids(server))
        assert all(counts[e] == 1 for e in first + later)
        text = worker.metrics()
        for transition in (
            'from_state="closed",to_state="open"',
            'from_state="open",to_state="half_open"',
            'from_state="half_open",to_state="closed"',
        ):
            assert transition in text, f"missing transition {transition}"
        assert worker.metric("streams_deferrals_total") >= 5
        assert worker.metric("streams_circuit_state") == 0
        assert rig.dlq() == []
    finally:
        rig.close()
        server.stop()


def _check_mail(server: RecordingSMTPServer, locales: dict[str, str]) -> None:
    for msg in server.messages:
        eid = str(msg["X-Streams-Event-Id"])
        assert re.fullmatch(rf"<{re.escape(eid)}@[\w.-]+>", str(msg["Message-ID"]))
        assert str(msg["Content-Language"]).startswith(locales[eid])
        text = msg.get_body(("plain",)).get_content()
        link = re.search(r"https://example\.com/unsubscribe\?u=([\w-]+)&t=([0-9a-f]+)", text)
        assert link, "no unsubscribe link"
        assert verify_unsubscribe_token(UNSUB_SECRET, link.group(1), link.group(2))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_email_across_a_worker_restart(
    make_settings: Callable[..., Settings], tmp_path: Path, how: str
) -> None:
    server = RecordingSMTPServer(reply_delay_s=0.05)
    server.start()
    rig = Rig(make_settings, tmp_path, "email", email_family(concurrency=4), smtp_env(server))
    try:
        items = [email(f"user{i % 12}", i, "fr" if i % 3 == 0 else "en") for i in range(120)]
        results = rig.publisher.publish_batch(items)
        locales = {r.event_id: it[1]["locale"] for r, it in zip(results, items, strict=True)}
        worker = rig.start()
        wait_for(lambda: len(server.messages) >= 20, 60, "some emails")
        worker.signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        assert worker.wait(30) in (0, -signal.SIGKILL)
        sent_before = len(server.messages)
        assert sent_before < len(items), "the run finished before the restart"
        second = rig.start()
        try:
            wait_for(lambda: set(locales) <= set(event_ids(server)), 90, "every email")
        except AssertionError:
            missing = set(locales) - set(event_ids(server))
            counters = "\n".join(
                line
                for line in second.metrics().splitlines()
                if line.startswith(
                    (
                        "streams_events_total",
                        "streams_records_not_admitted",
                        "streams_in_flight",
                        "streams_consumer_lag",
                        "streams_partition_reseeks",
                    )
                )
            )
            raise AssertionError(
                f"{len(missing)} email(s) never sent, e.g. {sorted(missing)[:3]}; "
                f"health {second.health()}; metrics:\n{counters}\n"
                f"worker log:\n{second.tail(60)}"
            ) from None
        # the restarted worker's tables need recovery: faust's recovery once made it drop its
        # backlog (it stalled after ~25 records); the stall watchdog must not be what saved it
        assert second.metric("streams_partition_reseeks_total", reason="stalled") == 0
        counts = Counter(event_ids(server))
        duplicates = sum(c - 1 for c in counts.values())
        print(f"\n{how}: {sent_before} before the restart, {duplicates} duplicate(s)")
        if how == "sigterm":
            assert duplicates == 0, "a graceful restart sent an email twice"
        else:  # a duplicate after a crash carries the same Message-ID (checked below)
            assert duplicates <= 4 * 2
        _check_mail(server, locales)
    finally:
        rig.close()
        server.stop()


def webhook(url: str, sub: str) -> tuple[str, dict[str, Any]]:
    return (
        "webhook.requested",
        {
            "subscription_id": sub,
            "url": url,
            "event_name": "claim.approved",
            "body": '{"claim": 1}',
        },
    )


def test_webhook_outcomes_through_the_engine(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    fam = {
        "partitions": 3,
        "concurrency": 8,
        "handler_timeout": "5s",
        "retry": {"delays": ["1s", "2s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"},
    }
    with ThreadedReceiver(SECRET) as receiver:
        env = {"STREAMS_WEBHOOK_SIGNING_SECRET": SECRET, "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
        rig = Rig(make_settings, tmp_path, "webhook", fam, env)
        try:
            worker = rig.start()
            ok, flaky, bad, private = (
                r.event_id
                for r in rig.publisher.publish_batch(
                    [
                        webhook(receiver.url + "/hooks/ok", "s1"),
                        webhook(receiver.url + "/fail/503-then-200", "s2"),
                        webhook(receiver.url + "/fail/400", "s3"),
                        webhook(receiver.url.replace("127.0.0.1", "127.0.0.2") + "/x", "s4"),
                    ]
                )
            )
            wait_for(lambda: len(rig.dlq()) >= 2, 30, "two DLQ records")
            wait_for(
                lambda: any(d.status == 200 for d in receiver.deliveries_to("/fail/503-then-200")),
                30,
                "the flaky endpoint to get the event",
            )
            assert all(d.verified for d in receiver.deliveries), "a signature failed"
            flaky_calls = receiver.deliveries_to("/fail/503-then-200")
            assert [d.status for d in flaky_calls] == [503, 200]
            assert {d.header("Idempotency-Key") for d in flaky_calls} == {flaky}
            assert [d.status for d in receiver.deliveries_to("/hooks/ok")] == [200]
            assert [d.status for d in receiver.deliveries_to("/fail/400")] == [400]
            reasons = {record_headers(m)[h.EVENT_ID]: record_headers(m) for m in rig.dlq()}
            assert set(reasons) == {bad, private}
            assert reasons[bad][h.DLQ_REASON] == "permanent"
            assert reasons[bad][h.ATTEMPT] == "1"
            assert reasons[private][h.DLQ_REASON] == "permanent"
            assert (
                "private" in reasons[private][h.ERROR_MESSAGE]
                or "loopback" in reasons[private][h.ERROR_MESSAGE]
            )
            assert "STREAMS_WEBHOOK_ALLOW_HOSTS" in reasons[private][h.ERROR_MESSAGE]
            assert worker.metric("streams_retries_total") == 1
            assert ok not in reasons
        finally:
            rig.close()


def _two_per_hour_rig(
    make_settings: Callable[..., Settings], tmp_path: Path, smtp: RecordingSMTPServer
) -> Rig:
    limit = {
        "name": "per_user",
        "scope": "key",
        "limit": 2,
        "per": "1h",
        "on_exceed": "defer",
        "max_defer": "2h",
    }
    return Rig(
        make_settings,
        tmp_path,
        "email",
        email_family(
            rate_limits=[limit],
            retry={"delays": ["1s", "1h"], "max_attempts": 5, "jitter": 0.0, "retention": "1d"},
        ),
        smtp_env(smtp),
    )


def _assert_third_is_deferred(
    rig: Rig, worker: WorkerProcess, smtp: RecordingSMTPServer, user: str, why: str
) -> None:
    """``user`` spent both tokens before: a third email is deferred, another user's is not."""
    third = rig.publisher.publish("email.requested", email(user, 3)[1]).event_id
    other = rig.publisher.publish("email.requested", email(f"not-{user}", 1)[1]).event_id
    wait_for(lambda: other in event_ids(smtp), 30, "another user's email")
    wait_for(lambda: worker.metric("streams_deferrals_total") >= 1, 20, "the deferral")
    assert third not in event_ids(smtp), why
    assert worker.metric("streams_retries_total") == 0


def test_bucket_state_follows_its_partition_to_another_worker(
    make_settings: Callable[..., Settings], tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    """A rebalance, not a restart: the bucket reaches a different worker (its own home,
    in-memory tables) through the changelog only. The first worker's SIGTERM lands while it
    is still rebalancing for the second one (a rolling update); it must drain and exit 0,
    not hang on seeks in a consumer thread that is shutting down."""
    rig = _two_per_hour_rig(make_settings, tmp_path, smtp)
    try:
        first = rig.start("w1", static=False)
        spent = [
            r.event_id for r in rig.publisher.publish_batch([email("erin", i) for i in range(2)])
        ]
        wait_for(lambda: set(spent) <= set(event_ids(smtp)), 20, "the first two emails")
        second = rig.start("w2", static=False)  # joins: the group rebalances
        first.signal(signal.SIGTERM)  # leaves: every partition moves to w2
        assert first.wait(30) == 0
        _assert_third_is_deferred(rig, second, smtp, "erin", "the bucket did not follow")
    finally:
        rig.close()


def test_bucket_state_survives_a_restart(
    make_settings: Callable[..., Settings], tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    rig = _two_per_hour_rig(make_settings, tmp_path, smtp)
    try:
        worker = rig.start()
        spent = [
            r.event_id for r in rig.publisher.publish_batch([email("carol", i) for i in range(2)])
        ]
        wait_for(lambda: set(spent) <= set(event_ids(smtp)), 20, "the first two emails")
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        worker = rig.start()  # the bucket comes back from the changelog
        _assert_third_is_deferred(rig, worker, smtp, "carol", "the bucket was forgotten")
    finally:
        rig.close()
