"""Issue 14 acceptance: payments under repeated SIGKILL never charge twice; receipts carry
the province's tax lines. Real broker, real worker processes, real provider and SMTP."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import wait_for
from tests.support.money import MoneyRig, ThreadedProvider, family, money_env
from tests.support.progress import wait_for_count

from streams.core import headers as h
from streams.jobs.money import derived_id
from streams.jobs.payment_tax import PROVINCES, money, receipt_breakdown
from streams.settings import Settings
from streams.testing.payment_provider import DECLINED_METHOD
from streams.testing.smtp import RecordingSMTPServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PAYMENTS = 1000
DECLINED = 10
EMAIL_CONCURRENCY = 32
_ORDER = re.compile(r"(?:order|commande) (p-\d+)")


@pytest.fixture
def smtp() -> Iterator[RecordingSMTPServer]:
    with RecordingSMTPServer() as server:
        yield server


def payment(i: int, *, declined: bool = False) -> tuple[str, dict[str, Any]]:
    fields: dict[str, Any] = {
        "payment_id": f"p-{i}",
        "customer_id": f"c-{i}",
        "amount_minor": 1000 + 7 * i,
        "currency": "CAD",
        "provider": "payments",
        "receipt_email": f"c{i}@example.com",
        "province": PROVINCES[i % len(PROVINCES)],
        "locale": "fr" if i % 5 == 0 else "en",
    }
    if declined:
        fields["payment_method"] = DECLINED_METHOD
    return "payment.requested", fields


def expected_lines(i: int, at_ms: int) -> tuple[str, str]:
    """(subtotal line, taxes line) of payment ``i``'s receipt in its language, computed
    here independently of the job's formatting code."""
    _, fields = payment(i)
    parts = receipt_breakdown(fields["amount_minor"], fields["province"], at_ms)
    fr = fields["locale"] == "fr"

    def amount(minor: int) -> str:
        text = money(minor, "CAD")
        return text.replace(".", ",") if fr else text

    sep = " : " if fr else ": "
    taxes = "; ".join(
        f"{x.label(fields['locale'])}{sep}{amount(x.amount_minor)}" for x in parts.lines
    )
    if fr:
        return f"Sous-total : {amount(parts.subtotal_minor)}", f"Taxes : {taxes}"
    return f"Subtotal: {amount(parts.subtotal_minor)}", f"Taxes: {taxes}"


def test_sigkill_while_paying_charges_each_payment_once(
    make_settings: Callable[..., Settings], tmp_path: Path, smtp: RecordingSMTPServer
) -> None:
    with ThreadedProvider() as provider:
        rig = MoneyRig(
            make_settings,
            tmp_path,
            {
                "payment": family(
                    rate_limits=[
                        {
                            "name": "provider",
                            "scope": "provider",
                            "provider": "payments",
                            "limit": 400,
                            "per": "1s",
                            "on_exceed": "defer",
                            "max_defer": "1h",
                        }
                    ],
                ),
                "email": family(concurrency=EMAIL_CONCURRENCY, rate_limits=[]),
                "audit": family(),
            },
            money_env(provider, smtp, tmp_path),
        )
        try:
            run_acceptance(rig, provider, smtp)
        finally:
            rig.close()


def run_acceptance(rig: MoneyRig, provider: Any, smtp: RecordingSMTPServer) -> None:
    items = [payment(i) for i in range(PAYMENTS)]
    items += [payment(PAYMENTS + j, declined=True) for j in range(DECLINED)]
    produced = {
        r.event_id: fields["payment_id"]
        for r, (_, fields) in zip(rig.publisher.publish_batch(items), items, strict=True)
    }
    provider.fail_next(503, 3)  # 5xx: retried
    provider.fail_next(429, 2, retry_after_s=1)  # 429: retried after Retry-After
    worker = rig.start(["payment", "email"])
    kills = 0
    for threshold in (150, 450, 750):  # kills triggered by charges at the provider
        wait_for_count(lambda: provider.state.charges, threshold, 120, f"{threshold} charges")
        worker.kill()
        assert provider.state.charges < PAYMENTS, "the kill came after the last charge"
        kills += 1
        worker = rig.start(["payment", "email"])

    def orders() -> dict[str, set[str]]:
        by_order: dict[str, set[str]] = defaultdict(set)
        for msg in smtp.messages:
            found = _ORDER.search(str(msg["Subject"]))
            if found:
                by_order[found.group(1)].add(str(msg["Message-ID"]))
        return by_order

    wait_for(lambda: len(orders()) >= PAYMENTS, 180, "a receipt for every payment")
    dlq = wait_for(
        lambda: (d := rig.events("payment.dlq")) and len(d) >= DECLINED and d, 60, "the DLQ"
    )
    captured = rig.events("payment", "payment.captured")

    # exactly one charge per payment, whatever the kills and retries
    assert kills == 3
    assert provider.state.charges == PAYMENTS
    charged = [
        i["metadata"]["payment_id"]
        for i in provider.state.intents.values()
        if i["status"] == "succeeded"
    ]
    assert len(charged) == len(set(charged)) == PAYMENTS
    # every payment captured or dead-lettered, none both
    captured_ids = {h_[h.EVENT_ID] for h_ in captured}
    dlq_sources = {produced[d[h.EVENT_ID]] for d in dlq}
    assert all(d[h.DLQ_REASON] == "permanent" for d in dlq)
    assert all("card declined" in d[h.ERROR_MESSAGE] for d in dlq)
    assert len(captured_ids) == PAYMENTS  # derived ids: a replayed capture is the same id
    assert dlq_sources == {f"p-{PAYMENTS + j}" for j in range(DECLINED)}
    assert not dlq_sources & set(charged)
    # every state change is in the audit trail once (ids derived from the source event)
    audits = {x[h.EVENT_ID] for x in rig.events("audit", "audit.payment_event")}
    for event_id, payment_id in produced.items():
        action = "payment.declined" if payment_id in dlq_sources else "payment.captured"
        assert derived_id(event_id, f"audit:{action}") in audits, (payment_id, action)
    assert len(audits) == PAYMENTS + DECLINED
    # each receipt once (one Message-ID per order), with its province's tax lines
    by_order = orders()
    assert set(by_order) == {f"p-{i}" for i in range(PAYMENTS)}
    assert all(len(ids) == 1 for ids in by_order.values()), "a receipt under two Message-IDs"
    # A receipt whose SMTP transaction finished in the instant before a SIGKILL, before its
    # done-marker was durable, is sent again after the restart: the at-least-once duplicate
    # the email job names, the same Message-ID and the same text, which the receiver drops.
    # Only a send in flight at a kill can repeat: at most the email concurrency per kill.
    bodies: dict[str, str] = {}
    duplicates = 0
    for msg in smtp.messages:
        found = _ORDER.search(str(msg["Subject"]))
        assert found, msg["Subject"]
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        mid = str(msg["Message-ID"])
        if mid in bodies:
            assert text == bodies[mid], f"{mid} re-sent with a different text"
            duplicates += 1
            continue
        subtotal, taxes = expected_lines(int(found.group(1)[2:]), int(msg_time_ms(msg)))
        assert subtotal in text and taxes in text, (found.group(1), text)
        bodies[mid] = text
    assert len(bodies) == PAYMENTS  # every receipt, English and French
    assert duplicates <= kills * EMAIL_CONCURRENCY, duplicates
    print(
        f"\nSIGKILL x{kills}: charges={provider.state.charges} replays="
        f"{provider.state.replays} smtp_transactions={smtp.transactions} dlq={len(dlq)} "
        f"receipts re-sent after a kill={duplicates}"
    )


def msg_time_ms(msg: Any) -> float:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(str(msg["Date"])).timestamp() * 1000
