"""Refunds, provider webhooks and dunning in real workers (issue 14 acceptance, the rest).

Real broker, worker processes with the built-in jobs, the Stripe-shaped provider, the SMTP
catcher, and the webhook route on a real aiohttp server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import wait_for
from tests.support.money import (
    WEBHOOK_SECRET,
    MoneyRig,
    ThreadedApi,
    ThreadedProvider,
    family,
    money_env,
)

from streams.core import headers as h
from streams.jobs.money import derived_id
from streams.settings import Settings
from streams.testing.payment_provider import DECLINED_METHOD, PaymentProvider, sign
from streams.testing.smtp import RecordingSMTPServer

pytestmark = pytest.mark.kafka


@pytest.fixture
def smtp() -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer() as server:
        yield server


@pytest.fixture
def threaded() -> Iterator[ThreadedProvider]:
    tp = ThreadedProvider()
    with tp:
        yield tp


@pytest.fixture
def rig(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    smtp: RecordingSMTPServer,
    threaded: ThreadedProvider,
) -> Iterator[MoneyRig]:
    fams = {
        name: family(rate_limits=[])
        for name in ("payment", "refund", "subscription", "email", "audit")
    }
    env = money_env(threaded.provider, smtp, tmp_path)
    env["STREAMS_SUBSCRIPTION_DUNNING_DELAYS"] = "1s,2s,1s"
    made = MoneyRig(make_settings, tmp_path, fams, env)
    try:
        yield made
    finally:
        made.close()


def audit_ids(rig: MoneyRig) -> set[str]:
    return {x[h.EVENT_ID] for x in rig.events("audit", "audit.payment_event")}


def subjects(smtp: RecordingSMTPServer, to: str) -> list[str]:
    return [str(m["Subject"]) for m in smtp.messages if to in str(m["To"])]


# --- refunds ---------------------------------------------------------------------------------


def test_partial_refunds_add_up_and_stop_at_the_captured_amount(
    rig: MoneyRig, threaded: ThreadedProvider, smtp: RecordingSMTPServer
) -> None:
    provider = threaded.provider
    rig.publisher.publish(
        "payment.requested",
        {
            "payment_id": "p-r",
            "customer_id": "c-r",
            "amount_minor": 10_000,
            "currency": "CAD",
            "provider": "payments",
        },
    )
    rig.start(["payment", "refund", "email"])
    wait_for(lambda: provider.state.charges == 1, 60, "the capture")
    intent = next(iter(provider.state.intents))

    def refund(refund_id: str, amount: int) -> str:
        return rig.publisher.publish(
            "refund.requested",
            {
                "payment_id": "p-r",
                "refund_id": refund_id,
                "amount_minor": amount,
                "currency": "CAD",
                "reason": "test",
                "receipt_email": "c-r@example.com",
            },
        ).event_id

    def dlq() -> list[dict[str, str]]:
        return rig.events("refund.dlq")

    refund("r-1", 3_000)
    wait_for(lambda: provider.refunded_minor(intent) == 3_000, 60, "refund r-1")
    refund("r-1", 3_000)  # the same refund published twice: one refund, one email
    refund("r-2", 5_000)
    wait_for(lambda: provider.refunded_minor(intent) == 8_000, 60, "refund r-2")
    over = refund("r-3", 3_000)  # 2,000 remain
    dead = wait_for(lambda: dlq(), 60, "the over-refund in the DLQ")
    refund("r-4", 2_000)
    wait_for(lambda: provider.refunded_minor(intent) == 10_000, 60, "refund r-4")
    refund("r-5", 1)
    wait_for(lambda: len(dlq()) == 2, 60, "the second over-refund in the DLQ")
    dead = dlq()

    assert provider.refunded_minor(intent) == 10_000
    assert len(provider.state.refunds) == 3
    assert dead[0][h.EVENT_ID] == over
    for record in dead:
        assert record[h.DLQ_REASON] == "permanent"
        assert "exceeds what remains refundable" in record[h.ERROR_MESSAGE]
    assert "refund r-3 of 30.00 CAD on payment p-r" in dead[0][h.ERROR_MESSAGE]
    wait_for(lambda: len(subjects(smtp, "c-r@example.com")) >= 3, 30, "3 confirmations")
    assert sorted(subjects(smtp, "c-r@example.com")) == sorted(
        ["Refund of 30.00 CAD", "Refund of 50.00 CAD", "Refund of 20.00 CAD"]
    )


# --- provider webhooks ----------------------------------------------------------------------


def post(url: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_webhooks_bad_signature_replay_and_dispute(
    rig: MoneyRig, threaded: ThreadedProvider, smtp: RecordingSMTPServer, tmp_path: Path
) -> None:
    provider: PaymentProvider = threaded.provider
    dispute = provider.webhook_event(
        "charge.dispute.created",
        {
            "id": "dp_1",
            "object": "dispute",
            "payment_intent": "pi_9",
            "status": "needs_response",
            "amount": 5000,
            "metadata": {"payment_id": "p-d"},
        },
    )
    body = json.dumps(dispute).encode()
    with ThreadedApi(
        rig.settings, rig.publisher, f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    ) as api:
        url = f"{api.url}/v1/providers/stripe/webhooks"
        now = int(__import__("time").time())
        status, problem = post(url, body, sign(body, "whsec_wrong", now))
        assert status == 400 and problem["type"].endswith("bad-signature"), problem
        assert "signature" in problem["detail"]
        status, problem = post(url, body, sign(body, WEBHOOK_SECRET, now - 3600))  # stale
        assert status == 400 and "tolerance" in problem["detail"], problem
        status, problem = post(url, body, None)
        assert status == 400 and "missing" in problem["detail"]
        status, problem = post(f"{api.url}/v1/other", body, None)
        assert status == 401  # only the provider route is exempt from credentials

        status, first = post(url, body, sign(body, WEBHOOK_SECRET, now))
        assert status == 200 and first["replayed"] is False
        status, again = post(url, body, sign(body, WEBHOOK_SECRET, now + 1))  # a replay
        assert status == 200 and again["replayed"] is True

    provider_events = rig.events("payment", "payment.provider_event")
    assert [x[h.EVENT_ID] for x in provider_events] == [first["event_id"]]
    rig.start(["payment", "email"])
    wait_for(lambda: subjects(smtp, "admin@example.com"), 60, "the admin email")
    assert subjects(smtp, "admin@example.com") == ["Dispute opened on payment p-d"]
    wait_for(
        lambda: derived_id(first["event_id"], "audit:dispute.opened") in audit_ids(rig),
        30,
        "the dispute's audit event",
    )


# --- subscriptions ----------------------------------------------------------------------------


def test_failed_renewal_follows_dunning_to_cancellation_and_stops_renewals(
    rig: MoneyRig, threaded: ThreadedProvider, smtp: RecordingSMTPServer
) -> None:
    provider = threaded.provider
    base = {
        "customer_id": "c-s",
        "amount_minor": 1130,
        "currency": "CAD",
        "provider": "payments",
        "receipt_email": "c-s@example.com",
        "province": "ON",
    }
    rig.publisher.publish(
        "subscription.renewal_due", {**base, "subscription_id": "s-ok", "period": "2026-12"}
    )
    rig.publisher.publish(
        "subscription.renewal_due",
        {
            **base,
            "subscription_id": "s-bad",
            "period": "2026-12",
            "payment_method": DECLINED_METHOD,
        },
    )
    rig.start(["subscription", "payment", "email"])
    cancelled = wait_for(
        lambda: rig.events("subscription", "subscription.cancelled"), 90, "the cancellation"
    )
    # the good one renewed once, with a receipt; the bad one: 1 + 3 dunning attempts
    wait_for(
        lambda: any("receipt" in s.lower() for s in subjects(smtp, "c-s@example.com")),
        30,
        "the renewal receipt",
    )
    declined = [i for i in provider.state.intents.values() if i["status"] != "succeeded"]
    assert provider.state.charges == 1
    assert len(declined) == 4
    assert len(cancelled) == 1
    wait_for(
        lambda: any("cancel" in s.lower() for s in subjects(smtp, "c-s@example.com")),
        30,
        "the cancellation notice",
    )
    mails = subjects(smtp, "c-s@example.com")
    assert mails.count("Your subscription payment failed") == 3
    assert mails.count("Your subscription renews (11.30 CAD)") == 2

    # after the cancellation a renewal of s-bad charges nothing
    later = rig.publisher.publish(
        "subscription.renewal_due", {**base, "subscription_id": "s-bad", "period": "2027-01"}
    ).event_id
    wait_for(
        lambda: derived_id(later, "audit:renewal.skipped") in audit_ids(rig),
        30,
        "the skipped renewal's audit event",
    )
    assert len(provider.state.intents) == 5
