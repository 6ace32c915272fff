"""What the payment, refund and subscription jobs share: the provider client, the publisher
of the events they emit, derived event ids, audit events and emails.

Every event a money job publishes has an id derived from the event it handles
(``derived_id(source_event_id, what)``, a UUID5), so a redelivery after a crash publishes
the same ids and the consumers' idempotency drops the copies: a capture, a receipt, an
audit record happen once however often the handler runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from streams.jobs.payment_stripe import PaymentSettings, ProviderClient, api_key_of
from streams.jobs.payment_tax import money


def derived_id(source_event_id: str, what: str) -> str:
    """A stable id for the event a money job publishes about ``source_event_id``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"streams:money:{source_event_id}:{what}"))


class MoneyJobBase:
    """Provider client and publisher lifecycle (``publisher``/``provider`` injectable)."""

    actor = "payment-job"

    def __init__(
        self, settings: PaymentSettings, *, publisher: Any = None, provider: Any = None
    ) -> None:
        self.settings = settings
        if provider is None:
            api_key_of(settings)  # ConfigError now, when the worker builds the job
        self._publisher = publisher
        self._owns_publisher = publisher is None
        self._provider: ProviderClient | None = provider
        self._owns_provider = provider is None
        self._starting = asyncio.Lock()

    @property
    def provider(self) -> ProviderClient:
        assert self._provider is not None, "job not started"
        return self._provider

    async def start(self) -> None:
        async with self._starting:
            if self._provider is None:
                self._provider = ProviderClient(self.settings)
            if self._publisher is None:
                from streams.publish.publisher import Publisher

                self._publisher = await asyncio.to_thread(Publisher, producer_name=self.actor)

    async def stop(self) -> None:
        provider, self._provider = self._provider, None
        if provider is not None and self._owns_provider:
            await provider.close()
        publisher, self._publisher = self._publisher, None
        if publisher is not None and self._owns_publisher:
            await asyncio.to_thread(publisher.close)

    async def ensure_started(self) -> None:
        if self._provider is None or self._publisher is None:
            await self.start()

    async def publish(self, event_type: str, payload: Mapping[str, Any], event_id: str) -> None:
        assert self._publisher is not None, "job not started"
        await self._publisher.publish_async(event_type, dict(payload), event_id=event_id)

    async def audit(
        self, source_event_id: str, subject_id: str, action: str, details: Mapping[str, Any]
    ) -> None:
        """An ``audit.payment_event`` (its id derived from the source event and action)."""
        await self.publish(
            "audit.payment_event",
            {
                "subject_id": subject_id,
                "actor_id": self.actor,
                "action": action,
                "details": {k: str(v) for k, v in details.items() if v is not None},
            },
            derived_id(source_event_id, f"audit:{action}"),
        )

    async def notify(
        self,
        source_event_id: str,
        what: str,
        *,
        user_id: str,
        to: str,
        locale: str,
        title: str,
        message: str,
        name: str = "",
    ) -> None:
        """A ``notification`` email (refund confirmations, dunning steps, disputes)."""
        await self.publish(
            "email.requested",
            {
                "user_id": user_id,
                "to": to,
                "locale": locale,
                "template": "notification",
                "variables": {"name": name or user_id, "title": title, "message": message},
            },
            derived_id(source_event_id, f"email:{what}"),
        )


def amount_text(amount_minor: int, currency: str, locale: str) -> str:
    text = money(amount_minor, currency)
    return text.replace(".", ",", 1) if locale == "fr" else text
