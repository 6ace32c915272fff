"""The payment job's pure parts: the receipt email (EN/FR, tax lines), the provider-event
branches, the money settings check (a recording publisher stands in for Kafka)."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import ConfigError, Permanent
from streams.events import build_event
from streams.jobs.base import JobContext
from streams.jobs.money import derived_id
from streams.jobs.payment import PaymentJob, receipt_email_payload
from streams.jobs.payment_stripe import PaymentSettings

AT_MS = 1_780_000_000_000  # 2026-05-28 UTC


def captured(**over: Any) -> Any:
    fields = {"payment_id": "p-1", "customer_id": "c-1", "amount_minor": 11_498,
              "currency": "CAD", "provider": "payments", "receipt_email": "a@example.com",
              "province": "QC", "customer_name": "Ada"}  # fmt: skip
    fields.update(over)
    return build_event("payment.captured", fields, event_id="e-1", occurred_at_ms=AT_MS)


def test_receipt_lists_gst_and_qst_in_english() -> None:
    payload = receipt_email_payload(captured())
    assert payload["template"] == "receipt" and payload["to"] == "a@example.com"
    assert payload["variables"] == {
        "name": "Ada", "order_id": "p-1", "amount": "114.98 CAD", "subtotal": "100.00 CAD",
        "tax_lines": "GST 5%: 5.00 CAD; QST 9.975%: 9.98 CAD",
    }  # fmt: skip


def test_receipt_in_french_uses_decimal_commas() -> None:
    v = receipt_email_payload(captured(locale="fr", province="ON", amount_minor=11_300))
    assert v["variables"]["tax_lines"] == "TVH 13 % : 13,00 CAD"
    assert v["variables"]["subtotal"] == "100,00 CAD" and v["locale"] == "fr"


def test_french_quebec_receipt_names_tps_and_tvq() -> None:
    v = receipt_email_payload(captured(locale="fr"))["variables"]
    assert v["tax_lines"] == "TPS 5 % : 5,00 CAD; TVQ 9,975 % : 9,98 CAD"


def test_receipt_without_province_has_no_tax_lines() -> None:
    v = receipt_email_payload(captured(province=None))["variables"]
    assert v["tax_lines"] == "none" and v["subtotal"] == v["amount"] == "114.98 CAD"


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    async def publish_async(
        self, event_type: str, payload: dict[str, Any], *, event_id: str
    ) -> None:
        self.sent.append((event_type, payload, event_id))


def job(recorder: Recorder) -> PaymentJob:
    settings = PaymentSettings(payment_api_key="sk_test_x", payment_admin_email="ops@example.com")
    return PaymentJob(settings, publisher=recorder, provider=object())


def provider_event(kind: str) -> Any:
    return build_event("payment.provider_event", {
        "payment_id": "p-9", "provider": "stripe", "provider_event_id": "evt_9",
        "provider_event_type": kind, "object_id": "dp_9", "status": "needs_response",
        "payload": "{}"}, event_id="pe-1")  # fmt: skip


async def test_dispute_opened_is_audited_and_mailed_to_the_admin() -> None:
    rec = Recorder()
    ctx = JobContext("pe-1", "payment.provider_event", "payment")
    await job(rec).handle(provider_event("charge.dispute.created"), ctx)
    kinds = [(t, i) for t, _, i in rec.sent]
    assert kinds == [
        ("audit.payment_event", derived_id("pe-1", "audit:dispute.opened")),
        ("email.requested", derived_id("pe-1", "email:dispute.opened")),
    ]
    assert rec.sent[0][1]["action"] == "dispute.opened"
    assert rec.sent[1][1]["to"] == "ops@example.com"
    assert rec.sent[1][1]["variables"]["title"] == "Dispute opened on payment p-9"


async def test_status_events_are_synced_to_the_audit_trail_and_others_ignored() -> None:
    rec = Recorder()
    ctx = JobContext("pe-1", "payment.provider_event", "payment")
    await job(rec).handle(provider_event("payment_intent.succeeded"), ctx)
    await job(rec).handle(provider_event("customer.created"), ctx)
    assert [p["action"] for _, p, _ in rec.sent] == ["payment.status_synced"]


def test_missing_api_key_is_refused_when_the_job_is_built() -> None:
    with pytest.raises(ConfigError, match="STREAMS_PAYMENT_API_KEY"):
        PaymentJob(PaymentSettings())
    PaymentJob(PaymentSettings(dev_mode=True))  # make run: a test key


def test_unknown_tax_province_data_is_permanent() -> None:
    event = captured()
    object.__setattr__(event, "province", "XX")
    with pytest.raises(Permanent, match="province"):
        receipt_email_payload(event)
