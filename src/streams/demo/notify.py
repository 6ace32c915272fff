"""The demo's notification phase (issue 12): push consent, quiet hours, an invalid token,
and the suppression of an address that hard-bounced, after the main scenario settled.

It runs its own local push provider (``streams.testing.push_provider``, one device token
answered as invalid) and, in order: grants one user consent to promotional pushes and
waits for the consent table to hold it; then publishes a promotional push to that user
(delivered), one to a user without consent (suppressed), a transactional push to a user
whose local time is inside the quiet hours (deferred to the window's end, no attempt used)
and one to the invalid token (DLQ ``permanent`` plus a ``push.token_invalid`` event); and
a second email to the main scenario's bounced address (suppressed: the SMTP catcher sees
no transaction). ``checks`` turns the worker's metrics and the peers into one line each.
Device tokens are encrypted end to end (``STREAMS_ENCRYPTION_KEYS``; the demo draws a
per-run key in dev mode).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.core.quiet_hours import QuietHours, quiet_wait_ms
from streams.demo.scenario import BOUNCE_ADDRESS

DEFAULT_QUIET_HOURS = "22:00-08:00"
# zones spread so that at any instant one is inside and one outside 22:00-08:00
ZONES = (
    "Pacific/Kiritimati",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/Paris",
    "America/Toronto",
    "America/Los_Angeles",
    "Pacific/Honolulu",
)
INVALID_TOKEN = "demo-expired-device-token"
FAMILIES = ("push", "consent")


def zones_for(window: QuietHours | None, now_ms: int) -> tuple[str, str]:
    """(a zone inside the quiet window now, one outside it)."""
    inside = [z for z in ZONES if quiet_wait_ms(window, z, now_ms) > 0]
    outside = [z for z in ZONES if quiet_wait_ms(window, z, now_ms) == 0]
    return (inside or ["UTC"])[0], (outside or ["UTC"])[0]


@dataclass
class Check:
    label: str
    ok: bool = False
    detail: str = ""


@dataclass
class NotifyDemo:
    run_id: str
    provider: Any  # streams.testing.push_provider.PushProvider
    checks: list[Check] = field(default_factory=list)
    _base: dict[str, float] = field(default_factory=dict)
    _smtp_base: int = 0

    def user(self, name: str) -> str:
        return f"user-{self.run_id}-{name}"

    def _push(self, user: str, token: str, category: str, zone: str) -> dict[str, Any]:
        return {
            "user_id": self.user(user),
            "title": "Hello ${name}",
            "body": f"A {category} notification",
            "device_ids": [token],
            "category": category,
            "timezone": zone,
            "variables": {"name": user},
        }

    def run(
        self,
        publish: Callable[[str, dict[str, Any]], Any],
        metric: Callable[..., float],
        smtp_transactions: Callable[[], int],
        quiet_hours: str,
        timeout_s: float = 30.0,
    ) -> None:
        """Publish the phase's events and wait (at most ``timeout_s``) until every check
        passed; ``checks`` says which did."""
        names = [("push", "suppressed"), ("push", "dead_lettered"), ("email", "suppressed")]
        self._base = {
            f"{f}/{o}": metric("streams_events_total", family=f, outcome=o) for f, o in names
        }
        self._base["deferred"] = metric(
            "streams_deferrals_total", family="push", reason="quiet_hours"
        )
        consent_base = metric("streams_events_total", family="consent", outcome="done")
        self._smtp_base = smtp_transactions()
        window = QuietHours.parse(quiet_hours)
        night, day = zones_for(window, int(time.time() * 1000))
        publish("consent.changed", {"user_id": self.user("opted-in"), "promotional": True})
        deadline = time.monotonic() + timeout_s
        while metric("streams_events_total", family="consent", outcome="done") <= consent_base:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        publish("push.requested", self._push("opted-in", "demo-token-opted-in", "promotional", day))
        publish("push.requested", self._push("no-consent", "demo-token-nc", "promotional", day))
        publish(
            "push.requested", self._push("sleeping", "demo-token-night", "transactional", night)
        )
        publish("push.requested", self._push("moved-on", INVALID_TOKEN, "transactional", day))
        publish(
            "email.requested",
            {
                "user_id": self.user("ghost"),
                "to": BOUNCE_ADDRESS,
                "template": "welcome",
                "variables": {"name": "Ghost", "login_url": "https://x"},
            },
        )
        while time.monotonic() < deadline:
            self.evaluate(metric, smtp_transactions, night)
            if all(c.ok for c in self.checks):
                return
            time.sleep(0.2)

    def evaluate(
        self, metric: Callable[..., float], smtp_transactions: Callable[[], int], night: str = ""
    ) -> list[Check]:
        def grew(key: str, family: str, outcome: str) -> bool:
            return metric("streams_events_total", family=family, outcome=outcome) > self._base[key]

        delivered = self.provider.delivered_to("demo-token-opted-in")
        deferred = metric("streams_deferrals_total", family="push", reason="quiet_hours")
        self.checks = [
            Check("push, consented promotional", bool(delivered), "delivered, personalised"),
            Check(
                "push, promotional without consent",
                grew("push/suppressed", "push", "suppressed"),
                "suppressed (not sent)",
            ),
            Check(
                "push, quiet hours",
                deferred > self._base["deferred"],
                f"deferred to the end of the night in {night or 'its zone'}, no attempt used",
            ),
            Check(
                "push, invalid device token",
                grew("push/dead_lettered", "push", "dead_lettered"),
                "DLQ permanent + push.token_invalid",
            ),
            Check(
                "email, hard-bounced address",
                grew("email/suppressed", "email", "suppressed")
                and smtp_transactions() == self._smtp_base,
                "suppressed; the SMTP catcher saw nothing",
            ),
        ]
        return self.checks

    def lines(self) -> list[str]:
        return [f"  {'ok' if c.ok else '..':<3}{c.label:<36} {c.detail}" for c in self.checks]
