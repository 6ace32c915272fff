"""Email suppression: who must not be mailed, kept in the email family's state table.

Entries are keyed by user (the email family's key) so the worker owning a user's
partition consults them locally:

- ``suppress/<user>/<address>`` — a hard bounce (the email job's SMTP 5xx on RCPT, or an
  ``email.bounced`` event from the provider side) or a spam complaint (``email.complained``):
  no email to that address for that user;
- ``unsubscribed/<user>`` — the user followed the HMAC unsubscribe link
  (``email.unsubscribed``, published by the API's ``/v1/unsubscribe``): no ``notification``
  emails (transactional templates — welcome, password reset, receipt — still go);
- the configured blacklist (``STREAMS_EMAIL_BLACKLIST``: addresses and ``@domain`` or
  ``domain`` entries, case-insensitive; a domain covers its subdomains).

A suppressed email is not sent: the email job raises ``Suppressed`` (acked, counted as
outcome ``suppressed``). ``SuppressionJob`` handles the feedback events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any, ClassVar

from streams.errors import Retryable, Suppressed
from streams.events import now_ms
from streams.jobs.base import JobContext, JobSettings, JobSpec, JobTable

NON_TRANSACTIONAL_TEMPLATES = frozenset({"notification"})


def suppression_key(user_id: str, address: str) -> str:
    return f"suppress/{user_id}/{address.strip().lower()}"


def unsubscribed_key(user_id: str) -> str:
    return f"unsubscribed/{user_id}"


def unsubscribe_event_id(user_id: str) -> str:
    """The id of a user's ``email.unsubscribed``: clicking the link twice records one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"streams:email:unsubscribe:{user_id}"))


def entry(reason: str, at_ms: int) -> bytes:
    return json.dumps({"reason": reason, "at_ms": at_ms}).encode()


class Blacklist:
    """Blocked addresses and domains (``"a@x.com, @spam.example, junk.test"``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        addresses: set[str] = set()
        domains: set[str] = set()
        for raw in entries:
            item = raw.strip().lower()
            if not item:
                continue
            if item.startswith("@"):
                domains.add(item[1:])
            elif "@" in item:
                addresses.add(item)
            else:
                domains.add(item)
        self.addresses = frozenset(addresses)
        self.domains = frozenset(domains)

    @classmethod
    def parse(cls, text: str) -> Blacklist:
        return cls(text.split(","))

    def blocks(self, address: str) -> bool:
        address = address.strip().lower()
        if address in self.addresses:
            return True
        domain = address.rpartition("@")[2]
        parts = domain.split(".")
        return any(".".join(parts[i:]) in self.domains for i in range(len(parts)))


def check_suppressed(
    table: JobTable | None, blacklist: Blacklist, user_id: str, address: str, template: str
) -> None:
    """Raises Suppressed naming why (never the address) when the email must not be sent."""
    if blacklist.blocks(address):
        raise Suppressed("email: the recipient address or its domain is blacklisted")
    if table is None:
        return
    found = table.get(suppression_key(user_id, address))
    if found is not None:
        reason = json.loads(found).get("reason", "suppressed")
        raise Suppressed(f"email: the recipient address is on the suppression list ({reason})")
    if template in NON_TRANSACTIONAL_TEMPLATES and table.get(unsubscribed_key(user_id)):
        raise Suppressed("email: the user unsubscribed from notification emails")


async def suppress(
    table: JobTable | None, partition: int, user_id: str, address: str, reason: str
) -> None:
    """Put ``address`` on ``user_id``'s suppression list (durable when this returns)."""
    if table is None:
        return
    await table.put(partition, suppression_key(user_id, address), entry(reason, now_ms()))


class SuppressionJob:
    """Handles the provider-side feedback and unsubscribe events of the email family."""

    event_types: ClassVar[tuple[str, ...]] = (
        "email.bounced",
        "email.complained",
        "email.unsubscribed",
    )

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, event: Any, ctx: JobContext) -> None:
        table = ctx.tables.get(ctx.family)
        if table is None:
            raise Retryable(f"family {ctx.family!r} has no state table (state_table: true)")
        at_ms = event.envelope.occurred_at_ms
        if event.event_type == "email.unsubscribed":
            await table.put(
                ctx.partition, unsubscribed_key(event.user_id), entry("unsubscribe", at_ms)
            )
            return
        reason = "hard_bounce" if event.event_type == "email.bounced" else "complaint"
        await table.put(
            ctx.partition, suppression_key(event.user_id, event.address), entry(reason, at_ms)
        )


JOB = JobSpec(family="email", job_type=SuppressionJob, settings_type=JobSettings)
