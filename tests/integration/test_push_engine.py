"""The push job in a real worker: consent (across a restart), quiet hours, invalid tokens,
the 20/h limit, and device tokens encrypted in every topic (real broker, real provider)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.support.engine import WorkerProcess, provision, read_topic, record_headers, wait_for
from tests.support.engine import write_catalog as _write_catalog

from streams.cli import cli
from streams.core import headers as h
from streams.crypto import decoder_for
from streams.publish.publisher import Publisher
from streams.serde import SchemaStore
from streams.settings import Settings
from streams.testing.push_provider import PushProvider, ThreadedPushProvider

pytestmark = pytest.mark.kafka

KEY_OLD = base64.urlsafe_b64encode(os.urandom(32)).decode()
KEY_NEW = base64.urlsafe_b64encode(os.urandom(32)).decode()
RETRY = {"delays": ["1s", "2s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"}
FAMILY = {"partitions": 2, "concurrency": 8, "handler_timeout": "5s", "retry": RETRY}


class PushRig:
    def __init__(
        self,
        make_settings: Callable[..., Settings],
        tmp: Path,
        provider: PushProvider,
        *,
        quiet_hours: str = "",
        rate_limits: list[Any] | None = None,
    ) -> None:
        push = {**FAMILY, "rate_limits": rate_limits or []}
        families = {"push": push, "consent": {**FAMILY, "rate_limits": []}}
        self.settings = make_settings(catalog_path=_write_catalog(tmp, families))
        self.catalog = provision(self.settings)
        self.tmp = tmp
        self.keys = f"k1={KEY_OLD}"
        self.key_id = "k1"
        self.env = {"STREAMS_PUSH_API_URL": provider.url, "STREAMS_PUSH_QUIET_HOURS": quiet_hours}
        self.workers: list[WorkerProcess] = []
        self.publisher = self._publisher()

    def _publisher(self) -> Publisher:
        os.environ["STREAMS_ENCRYPTION_KEYS"] = self.keys
        os.environ["STREAMS_ENCRYPTION_KEY_ID"] = self.key_id
        try:
            return Publisher(self.settings, catalog=self.catalog)
        finally:
            del os.environ["STREAMS_ENCRYPTION_KEYS"], os.environ["STREAMS_ENCRYPTION_KEY_ID"]

    def rotate(self) -> None:
        """New events use k2; workers started afterwards hold both keys."""
        self.publisher.close()
        self.keys, self.key_id = f"k2={KEY_NEW},k1={KEY_OLD}", "k2"
        self.publisher = self._publisher()

    def start(self, worker_id: str = "w1", *, static: bool = True) -> WorkerProcess:
        """``static=False``: a dynamic member (its partitions move as soon as it leaves)."""
        env = {
            **self.env,
            "STREAMS_ENCRYPTION_KEYS": self.keys,
            "STREAMS_ENCRYPTION_KEY_ID": self.key_id,
        }
        if not static:
            env["STREAMS_WORKER_ID"] = ""
            env["STREAMS_HOME"] = str(self.tmp / f"home-{worker_id}")
        w = WorkerProcess(
            self.settings,
            ["push", "consent"],
            self.tmp / "unused.db",
            self.tmp / f"{worker_id}-{len(self.workers)}.log",
            worker_id=worker_id,
            extra_env=env,
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        )
        self.workers.append(w.start())
        w.wait_ready(90)
        return w

    def topic(self, name: str) -> list[Any]:
        return read_topic(self.settings, f"{self.settings.topic_prefix}{name}", 2)

    def publish(self, event_type: str, payload: dict[str, Any]) -> str:
        return self.publisher.publish(event_type, payload).event_id

    def close(self) -> None:
        self.publisher.close()
        for w in self.workers:
            w.stop()


def push(user: str, device: str, category: str = "transactional", **over: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "title": "Hi ${name}",
        "body": f"{category} news",
        "device_ids": [device],
        "category": category,
        "variables": {"name": user},
        "timezone": "UTC",
        **over,
    }


@pytest.fixture
def provider() -> Iterator[PushProvider]:
    with ThreadedPushProvider() as p:
        yield p


def count(worker: WorkerProcess, family: str, outcome: str) -> float:
    return worker.metric("streams_events_total", family=family, outcome=outcome)


def test_consent_invalid_tokens_and_encryption_end_to_end(
    make_settings: Callable[..., Settings], tmp_path: Path, provider: PushProvider
) -> None:
    rig = PushRig(make_settings, tmp_path, provider)
    provider.invalid_devices = {"tok-expired-u2"}
    try:
        w = rig.start()
        rig.publish("consent.changed", {"user_id": "u1", "promotional": True})
        wait_for(lambda: count(w, "consent", "done") >= 1, 30, "consent granted")
        rig.publish("push.requested", push("u1", "tok-secret-u1", "promotional"))
        wait_for(lambda: len(provider.deliveries) >= 1, 30, "the consented promotional push")
        assert provider.deliveries[0].heading == "Hi u1"  # personalised
        assert provider.deliveries[0].devices == ("tok-secret-u1",)  # the handler's plaintext

        rig.publish("consent.changed", {"user_id": "u1", "promotional": False})
        wait_for(lambda: count(w, "consent", "done") >= 2, 30, "consent revoked")
        suppressed_id = rig.publish("push.requested", push("u1", "tok-secret-u1", "promotional"))
        rig.publish("push.requested", push("u1", "tok-secret-u1", "transactional"))
        wait_for(
            lambda: count(w, "push", "suppressed") >= 1 and len(provider.deliveries) >= 2,
            30,
            "revoked: promotional suppressed, transactional sent",
        )
        assert [d.content for d in provider.deliveries] == [
            "promotional news",
            "transactional news",
        ]

        # an invalid token: push.token_invalid, DLQ as permanent, not retried
        invalid_id = rig.publish("push.requested", push("u2", "tok-expired-u2"))
        wait_for(lambda: count(w, "push", "dead_lettered") >= 1, 30, "invalid token DLQ'd")
        # a provider failure: the record (ciphertext) climbs to a retry tier, then goes
        provider.fail_next(1, 503)
        rig.publish("push.requested", push("u5", "tok-retried-u5"))
        wait_for(lambda: len(provider.delivered_to("tok-retried-u5")) >= 1, 30, "after a retry")
        requests_after, delivered_before = provider.requests, len(provider.deliveries)

        # across a restart, and after a key rotation: old and new records decrypt
        w.stop()
        rig.rotate()
        w = rig.start()
        rig.publish("push.requested", push("u1", "tok-secret-u1", "promotional"))
        rig.publish("push.requested", push("u1", "tok-secret-u1", "transactional"))
        wait_for(
            lambda: (
                count(w, "push", "suppressed") >= 1 and len(provider.deliveries) > delivered_before
            ),
            60,
            "after the restart: promotional still suppressed",
        )
        assert provider.requests == requests_after + 1  # the invalid one was never retried
        assert provider.deliveries[-1].content == "transactional news"
        # a record sealed with a key the worker does not hold: DLQ, permanent, readable
        rig.keys, rig.key_id = f"k9={base64.urlsafe_b64encode(os.urandom(32)).decode()}", "k9"
        stranger = rig._publisher()
        try:
            unknown_id = stranger.publish("push.requested", push("u6", "tok-unknown-u6")).event_id
        finally:
            stranger.close()
        wait_for(lambda: count(w, "push", "dead_lettered") >= 1, 30, "unknown key id DLQ'd")
    finally:
        rig.close()

    # the suppressed push is visible in its status (control plane's streams.status topic)
    from streams.control.topics import status_topic

    statuses = read_topic(rig.settings, status_topic(rig.settings.topic_prefix), 3)
    states = [json.loads(m.value()) for m in statuses if m.key() == suppressed_id.encode()]
    assert states and states[-1]["state"] == "suppressed"
    assert "without the user's consent" in states[-1]["reason"]
    dlq = {record_headers(m)[h.EVENT_ID]: m for m in rig.topic("push.dlq")}
    assert set(dlq) == {invalid_id, unknown_id}
    headers = record_headers(dlq[invalid_id])
    position = f"{dlq[invalid_id].partition()}:{dlq[invalid_id].offset()}"
    dlq_show_decrypts_only_with_the_flag_and_key(rig.settings, tmp_path, position)
    assert headers[h.DLQ_REASON] == "permanent"
    assert "invalid or expired" in headers[h.ERROR_MESSAGE]
    headers = record_headers(dlq[unknown_id])
    assert headers[h.DLQ_REASON] == "permanent"
    assert "unknown key id 'k9' (known: k2, k1)" in headers[h.ERROR_MESSAGE]
    assert headers[h.ERROR_CLASS].endswith("UnknownKeyId")
    tiers = rig.topic("push.retry.1s") + rig.topic("push.retry.2s")
    assert len(tiers) == 1 and b"enc1:k1:" in tiers[0].value()
    main = rig.topic("push")
    store = SchemaStore.load(rig.settings.schemas_dir)
    reports = [m for m in main if record_headers(m)[h.EVENT_TYPE] == "push.token_invalid"]
    assert len(reports) == 1
    os.environ["STREAMS_ENCRYPTION_KEYS"] = f"k2={KEY_NEW},k1={KEY_OLD}"
    try:
        decoder = decoder_for(store)
    finally:
        del os.environ["STREAMS_ENCRYPTION_KEYS"]
    report = decoder.decode_event(reports[0].value())
    assert report.device_id == "tok-expired-u2" and report.request_event_id == invalid_id
    # the tokens' plaintext is in no record of the main topic or the DLQ; both keys were used
    every = main + list(dlq.values()) + tiers
    raw = b"".join(m.value() for m in every) + b"".join(
        v for m in every for _, v in (m.headers() or [])
    )
    assert b"tok-" not in raw  # no device token of this test, in any value or header
    assert b"enc1:k1:" in raw and b"enc1:k2:" in raw
    decoded = [
        decoder.decode_event(m.value()) for m in main if m.value() != dlq[unknown_id].value()
    ]
    assert {e.event_type for e in decoded} >= {"push.requested", "push.token_invalid"}


def test_quiet_hours_defer_without_an_attempt_and_deliver_at_the_window_end(
    make_settings: Callable[..., Settings], tmp_path: Path, provider: PushProvider
) -> None:
    start = datetime.now(UTC)
    # whole seconds, as the window is written; the worker start (~5-15 s) happens inside it
    end = (start + timedelta(seconds=25)).replace(microsecond=0)
    window = f"{start:%H:%M:%S}-{end:%H:%M:%S}"
    if end.date() != start.date():
        pytest.skip("the short window would cross midnight UTC")
    rig = PushRig(make_settings, tmp_path, provider, quiet_hours=window)
    try:
        w = rig.start()
        if datetime.now(UTC) >= end - timedelta(seconds=2):  # the start outlasted the window
            pytest.skip("worker start outlasted the quiet window")
        rig.publish("push.requested", push("u3", "tok-quiet"))
        wait_for(lambda: len(provider.deliveries) >= 1, 30, "the push after the quiet window")
        delivered_at = time.time()
        assert delivered_at >= end.timestamp() - 0.5  # never before the window's end (skew)
        assert w.metric("streams_deferrals_total", family="push", reason="quiet_hours") >= 1
        assert w.metric("streams_retries_total", family="push") == 0  # no attempt used
    finally:
        rig.close()
    tiers = [m for t in ("push.retry.1s", "push.retry.2s") for m in rig.topic(t)]
    assert tiers and all(record_headers(m)[h.ATTEMPT] == "1" for m in tiers)
    # it keeps the rate-limit token it was charged: not charged again when it comes back
    assert all(record_headers(m)[h.RATE_RESERVED] == "1" for m in tiers)


def test_the_21st_push_in_an_hour_is_deferred(
    make_settings: Callable[..., Settings], tmp_path: Path, provider: PushProvider
) -> None:
    limit = {
        "name": "per_user",
        "scope": "key",
        "limit": 20,
        "per": "1h",
        "on_exceed": "defer",
        "max_defer": "12h",
    }
    rig = PushRig(make_settings, tmp_path, provider, rate_limits=[limit])
    try:
        w = rig.start()
        for i in range(21):
            rig.publish("push.requested", push("u4", f"tok-rate-{i}"))
        wait_for(
            lambda: w.metric("streams_deferrals_total", family="push", reason="rate_limited") >= 1,
            30,
            "the 21st deferred",
        )
        wait_for(lambda: len(provider.deliveries) >= 20, 30, "20 pushes delivered")
        assert len(provider.deliveries) == 20
        assert count(w, "push", "done") == 20
    finally:
        rig.close()


def dlq_show_decrypts_only_with_the_flag_and_key(
    settings: Settings, tmp: Path, position: str
) -> None:
    env = {
        "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
        "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMS_APP_ID": settings.app_id,
        "STREAMS_CATALOG_PATH": str(settings.catalog_path),
        "STREAMS_HOME": str(settings.home),
    }
    runner = CliRunner()
    plain = runner.invoke(cli, ["dlq", "show", "push", position], env=env, catch_exceptions=False)
    assert plain.exit_code == 0, plain.output
    assert "enc1:k1:" in plain.output and "tok-expired-u2" not in plain.output
    keyfile = tmp / "keys"
    keyfile.write_text(f"k1={KEY_OLD}\n")
    opened = runner.invoke(
        cli,
        ["dlq", "show", "push", position, "--decrypt", str(keyfile)],
        env=env,
        catch_exceptions=False,
    )
    assert opened.exit_code == 0, opened.output
    assert "tok-expired-u2" in opened.output and "enc1:" not in opened.output


def test_revoked_consent_holds_on_whichever_worker_owns_the_user(
    make_settings: Callable[..., Settings], tmp_path: Path, provider: PushProvider
) -> None:
    rig = PushRig(make_settings, tmp_path, provider)
    users = [f"r{i}" for i in range(6)]  # spread over both partitions
    revoked, granted = users[::2], users[1::2]
    try:
        w1 = rig.start("w1", static=False)
        for user in users:
            rig.publish("consent.changed", {"user_id": user, "promotional": True})
        for user in revoked:
            rig.publish("consent.changed", {"user_id": user, "promotional": False})
        wait_for(lambda: count(w1, "consent", "done") >= 9, 30, "consents recorded")
        w2 = rig.start("w2", static=False)  # the group rebalances: partitions split

        def promote_all() -> None:
            for user in users:
                rig.publish("push.requested", push(user, f"tok-{user}", "promotional"))

        def delivered(user: str) -> int:
            return len(provider.delivered_to(f"tok-{user}"))

        promote_all()
        wait_for(lambda: all(delivered(u) == 1 for u in granted), 60, "granted, after rebalance")
        wait_for(
            lambda: count(w1, "push", "suppressed") + count(w2, "push", "suppressed") >= 3,
            60,
            "revoked, after rebalance",
        )
        assert count(w2, "push", "suppressed") + count(w2, "push", "done") > 0  # w2 took some
        w1.stop()  # its partitions move to w2, with the consent table's changelog
        base = count(w2, "push", "suppressed")
        promote_all()
        wait_for(lambda: all(delivered(u) == 2 for u in granted), 60, "granted, on w2 alone")
        wait_for(
            lambda: count(w2, "push", "suppressed") >= base + len(revoked),
            60,
            "revoked, on w2 alone",
        )
        assert all(delivered(u) == 0 for u in revoked)
    finally:
        rig.close()
