"""The demo's sample events (pure): a realistic mix and the outcome each one should have.

Every event id starts with ``demo-<run id>-`` so a run recognises its own events in the
DLQ and at the peers, whatever else the topics hold. User and subscription ids carry the
run id too, so per-user rate limits never build up across runs.

email (26): four templates x three English and three French users (done); one address the
SMTP catcher rejects with ``550 5.1.1`` (DLQ, ``permanent``); one address it greylists with
``451`` once (retried on the 10 s tier, then done).

webhook (17): twelve deliveries to endpoints that answer 200 (done); ``/fail/503-then-200``
(retried once, done); ``/fail/429-then-200`` with ``Retry-After: 1`` (retried, done);
``/fail/503`` (503 every time: DLQ ``exhausted`` after three attempts); ``/fail/400`` (DLQ
``permanent``); the cloud metadata address ``169.254.169.254``, which is not allow-listed
(DLQ ``permanent``, refused by the SSRF guard before any request).

At most four endpoint failures can happen in a row, under the webhook circuit breaker's
threshold of five, so no delivery is deferred by an open circuit.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

Outcome = Literal["done", "dlq"]

BOUNCE_ADDRESS = "no-such-user@example.com"
GREYLIST_ADDRESS = "greylisted@example.net"
PRIVATE_WEBHOOK_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
EVENT_ID_PREFIX = "demo-"


@dataclass(frozen=True)
class DemoEvent:
    """One event to publish and the outcome it should reach."""

    family: str
    event_type: str
    event_id: str
    payload: dict[str, Any]
    expect: Outcome
    expect_reason: str | None = None  # the DLQ reason when ``expect`` is "dlq"
    note: str = ""  # what makes it interesting, for the summary

    def item(self) -> dict[str, Any]:
        """The ``Publisher.publish_batch`` item."""
        return {"event_type": self.event_type, "payload": self.payload, "event_id": self.event_id}


@dataclass(frozen=True)
class Scenario:
    run_id: str
    events: list[DemoEvent] = field(default_factory=list)

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(e.family for e in self.events))

    @cached_property
    def by_id(self) -> dict[str, DemoEvent]:
        return {e.event_id: e for e in self.events}

    def published(self) -> Counter[str]:
        return Counter(e.family for e in self.events)

    def expected_dlq(self) -> Counter[str]:
        return Counter(e.family for e in self.events if e.expect == "dlq")

    def owns(self, event_id: str | None) -> bool:
        return event_id is not None and event_id in self.by_id


_USERS = [
    ("ada", "Ada Lovelace", "ada.lovelace@example.com", "en"),
    ("grace", "Grace Hopper", "grace.hopper@example.com", "en"),
    ("alan", "Alan Turing", "alan.turing@example.org", "en"),
    ("marie", "Marie Curie", "marie.curie@example.fr", "fr"),
    ("jean", "Jean Dupont", "jean.dupont@example.fr", "fr"),
    ("camille", "Camille Martin", "camille.martin@example.fr", "fr"),
]

_SUBSCRIBERS = [
    ("acme", "/hooks/acme/orders", "order.paid"),
    ("globex", "/hooks/globex/billing", "invoice.created"),
    ("initech", "/hooks/initech/crm", "customer.updated"),
    ("hooli", "/hooks/hooli/shipping", "order.shipped"),
    ("stark", "/hooks/stark/refunds", "refund.issued"),
    ("wayne", "/hooks/wayne/subscriptions", "subscription.renewed"),
]


def _variables(template: str, name: str, locale: str, n: int) -> dict[str, str]:
    first = name.split()[0]
    if template == "welcome":
        return {"name": first, "login_url": "https://app.example.com/login"}
    if template == "password_reset":
        return {
            "name": first,
            "expires_minutes": "30",
            "reset_url": f"https://app.example.com/reset?token=demo{n:04d}",
        }
    if template == "receipt":
        amount = "48,03 CAD" if locale == "fr" else "48.03 CAD"
        subtotal = "42,50 CAD" if locale == "fr" else "42.50 CAD"
        taxes = "HST 13% : 5,53 CAD" if locale == "fr" else "HST 13%: 5.53 CAD"
        return {
            "name": first,
            "order_id": f"O-{1000 + n}",
            "amount": amount,
            "subtotal": subtotal,
            "tax_lines": taxes,
        }
    title = "Nouveau message" if locale == "fr" else "You have a new message"
    message = (
        "Votre demande a été approuvée."
        if locale == "fr"
        else "Your claim was approved and will be paid within 3 days."
    )
    return {"name": first, "title": title, "message": message}


def build_scenario(run_id: str, webhook_base_url: str) -> Scenario:
    """The demo's events for run ``run_id``; webhooks go to ``webhook_base_url`` (no slash)."""
    events: list[DemoEvent] = []
    counter = iter(range(1, 10_000))

    def event_id() -> str:
        return f"{EVENT_ID_PREFIX}{run_id}-{next(counter):03d}"

    def email(
        user: str,
        to: str,
        locale: str,
        template: str,
        variables: dict[str, str],
        expect: Outcome = "done",
        reason: str | None = None,
        note: str = "",
    ) -> None:
        payload = {
            "user_id": f"user-{run_id}-{user}",
            "to": to,
            "locale": locale,
            "template": template,
            "variables": variables,
        }
        events.append(
            DemoEvent("email", "email.requested", event_id(), payload, expect, reason, note)
        )

    n = 0
    for template in ("welcome", "password_reset", "receipt", "notification"):
        for user, name, address, locale in _USERS:
            n += 1
            email(user, address, locale, template, _variables(template, name, locale, n))
    email(
        "ghost",
        BOUNCE_ADDRESS,
        "en",
        "welcome",
        _variables("welcome", "Ghost User", "en", 0),
        "dlq",
        "permanent",
        "550 5.1.1 recipient rejected",
    )
    email(
        "lea",
        GREYLIST_ADDRESS,
        "fr",
        "notification",
        _variables("notification", "Léa Bernard", "fr", 0),
        note="451 greylisted once, then accepted",
    )

    def webhook(
        subscriber: str,
        url: str,
        event_name: str,
        body: dict[str, Any],
        expect: Outcome = "done",
        reason: str | None = None,
        note: str = "",
    ) -> None:
        payload = {
            "subscription_id": f"sub-{run_id}-{subscriber}",
            "url": url,
            "event_name": event_name,
            "body": json.dumps(body, separators=(",", ":")),
        }
        events.append(
            DemoEvent("webhook", "webhook.requested", event_id(), payload, expect, reason, note)
        )

    for round_ in range(2):
        for subscriber, path, event_name in _SUBSCRIBERS:
            number = 5000 + round_ * 10 + len(events)
            webhook(
                subscriber,
                f"{webhook_base_url}{path}",
                event_name,
                {"id": f"evt_{number}", "object": event_name, "amount_minor": 1250 + number},
            )
    webhook(
        "umbrella",
        f"{webhook_base_url}/fail/503-then-200",
        "order.paid",
        {"id": "evt_flaky", "order_id": "O-7001"},
        note="503 once, then 200",
    )
    webhook(
        "cyberdyne",
        f"{webhook_base_url}/fail/429-then-200?retry_after=1",
        "invoice.paid",
        {"id": "evt_throttled", "invoice_id": "INV-88"},
        note="429 with Retry-After: 1, then 200",
    )
    webhook(
        "tyrell",
        f"{webhook_base_url}/fail/503",
        "order.refunded",
        {"id": "evt_down", "order_id": "O-7002"},
        "dlq",
        "exhausted",
        "503 on every attempt",
    )
    webhook(
        "soylent",
        f"{webhook_base_url}/fail/400?body=unknown+subscription",
        "customer.deleted",
        {"id": "evt_gone", "customer_id": "C-19"},
        "dlq",
        "permanent",
        "400 Bad Request",
    )
    webhook(
        "mallory",
        PRIVATE_WEBHOOK_URL,
        "account.updated",
        {"id": "evt_ssrf"},
        "dlq",
        "permanent",
        "private address, not allow-listed",
    )
    return Scenario(run_id, events)
