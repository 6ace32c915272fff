"""The subscription job: renewals through the payment path, dunning, cancellation.

``subscription.renewal_due``: skipped (audit ``renewal.skipped``) when the subscription
is cancelled (the ``subscription_cancellations`` table of the store); deferred (no attempt
used) until its ``due_at_ms``; for the period's first charge (``dunning_step`` 0) a renewal
notice is emailed first. Then it charges like a ``payment.requested`` (``payment.charge_once``:
same provider call, same capture and audit events; the receipt follows from
``payment.captured``) with ``Idempotency-Key`` = ``renewal:<subscription>:<period>:<step>``,
so a redelivery never charges twice. A failed charge (the provider refused it:
``Permanent``) follows the dunning planner (``subscription_dunning``): the next step is
published as a ``subscription.renewal_due`` with ``dunning_step + 1`` and its
``due_at_ms``, and the customer is told; after the last step a ``subscription.cancelled``
is published. Transient provider errors use the worker's retry ladder as usual.

``subscription.cancelled``: recorded (idempotent upsert), audit ``subscription.cancelled``
and a notice email; later renewals of that subscription are skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

from pydantic import Field
from sqlalchemy import BigInteger, Column, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from streams.errors import Deferred, Permanent
from streams.jobs.base import JobContext, JobSpec
from streams.jobs.money import MoneyJobBase, amount_text, derived_id
from streams.jobs.payment import charge_once
from streams.jobs.payment_stripe import PaymentSettings
from streams.jobs.subscription_dunning import Cancel, after_failure, parse_delays, wait_ms
from streams.store.database import Database
from streams.store.schema import metadata
from streams.store.settings import StoreSettings

log = logging.getLogger(__name__)

cancellations = Table(
    "subscription_cancellations",
    metadata,
    Column("subscription_id", String(256), primary_key=True),
    Column("cancelled_at_ms", BigInteger, nullable=False),
    Column("reason", String(1024), nullable=False),
)
"""Cancelled subscriptions (migration ``0003_subscriptions``)."""

DEPENDENCY = "renewals"  # the provider API's breaker for this family
MAX_DEFER_S = 400 * 86_400.0  # a dunning step may wait this long for its due time


class SubscriptionSettings(PaymentSettings, StoreSettings):
    """The provider, the store and the dunning schedule."""

    subscription_dunning_delays: str = Field(
        default="1d,3d,7d", description="retry delays after each failed renewal, then cancel"
    )


class SubscriptionJob(MoneyJobBase):
    """Handles ``subscription.renewal_due`` and ``subscription.cancelled``."""

    actor = "subscription-job"
    event_types: ClassVar[tuple[str, ...]] = (
        "subscription.renewal_due",
        "subscription.cancelled",
    )

    def __init__(
        self,
        settings: SubscriptionSettings,
        *,
        publisher: Any = None,
        provider: Any = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        super().__init__(settings, publisher=publisher, provider=provider)
        self.sub_settings = settings
        self.delays_s = parse_delays(settings.subscription_dunning_delays)
        self.clock_ms = clock_ms
        self._db: Database | None = None

    async def start(self) -> None:
        await super().start()
        if self._db is None:
            db = Database.from_settings(self.sub_settings)
            await db.migrate()
            self._db = db

    async def stop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.dispose()
        await super().stop()

    async def ensure_started(self) -> None:
        if self._db is None:
            await self.start()
        await super().ensure_started()

    @property
    def db(self) -> Database:
        assert self._db is not None, "job not started"
        return self._db

    async def handle(self, event: Any, ctx: JobContext) -> None:
        await self.ensure_started()
        if ctx.event_type == "subscription.cancelled":
            await self.cancel(event, ctx)
        else:
            await self.renew(event, ctx)

    # --- state ------------------------------------------------------------------------------

    async def is_cancelled(self, subscription_id: str) -> bool:
        async with self.db.transaction(write=False) as conn:
            row = await conn.execute(
                select(cancellations.c.subscription_id).where(
                    cancellations.c.subscription_id == subscription_id
                )
            )
            return row.first() is not None

    async def record_cancellation(self, subscription_id: str, reason: str) -> None:
        values = {
            "subscription_id": subscription_id,
            "cancelled_at_ms": self.clock_ms(),
            "reason": reason[:1024],
        }
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        async with self.db.transaction() as conn:
            await conn.execute(insert(cancellations).values(**values).on_conflict_do_nothing())

    # --- renewal ----------------------------------------------------------------------------

    async def renew(self, event: Any, ctx: JobContext) -> None:
        sub = event.subscription_id
        if await self.is_cancelled(sub):
            await self.audit(
                ctx.event_id, sub, "renewal.skipped", {"period": event.period, "why": "cancelled"}
            )
            return
        delay_ms = wait_ms(event.due_at_ms, self.clock_ms())
        if delay_ms > 0:
            raise Deferred(
                delay_ms / 1000, f"dunning step {event.dunning_step} not yet due", MAX_DEFER_S
            )
        amount = amount_text(event.amount_minor, event.currency, event.locale)
        fr = event.locale == "fr"
        if event.dunning_step == 0:
            await self._tell(
                event,
                ctx,
                "notice",
                f"Renouvellement de votre abonnement ({amount})"
                if fr
                else f"Your subscription renews ({amount})",
                f"Nous allons prélever {amount} pour la période {event.period}."
                if fr
                else f"We are charging {amount} for the period {event.period}.",
            )
        key = f"renewal:{sub}:{event.period}:{event.dunning_step}"
        payment = SimpleNamespace(
            payment_id=f"{sub}-{event.period}",
            customer_id=event.customer_id,
            amount_minor=event.amount_minor,
            currency=event.currency,
            provider=event.provider,
            description=f"subscription {sub} {event.period}",
            payment_method=event.payment_method,
            receipt_email=event.receipt_email,
            locale=event.locale,
            province=event.province,
            customer_name=None,
            subscription_id=sub,
        )
        try:
            await charge_once(self, payment, key, ctx, DEPENDENCY)
        except Permanent as refused:
            await self._dunning(event, ctx, str(refused))
            return
        await self.audit(
            ctx.event_id,
            sub,
            "renewal.succeeded",
            {"period": event.period, "step": event.dunning_step},
        )

    async def _dunning(self, event: Any, ctx: JobContext, reason: str) -> None:
        sub = event.subscription_id
        fr = event.locale == "fr"
        plan = after_failure(event.dunning_step, self.clock_ms(), self.delays_s)
        await self.audit(
            ctx.event_id,
            sub,
            "renewal.failed",
            {"period": event.period, "step": event.dunning_step, "reason": reason},
        )
        if isinstance(plan, Cancel):
            await self.publish(
                "subscription.cancelled",
                {
                    "subscription_id": sub,
                    "customer_id": event.customer_id,
                    "reason": plan.reason,
                    "receipt_email": event.receipt_email,
                    "locale": event.locale,
                },
                derived_id(ctx.event_id, "cancelled"),
            )
            return
        payload = event.model_dump(mode="json", exclude={"envelope"})
        payload.update(dunning_step=plan.step, due_at_ms=plan.due_at_ms)
        await self.publish("subscription.renewal_due", payload, derived_id(ctx.event_id, "dunning"))
        when = datetime.fromtimestamp(plan.due_at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        await self._tell(
            event,
            ctx,
            f"dunning-{plan.step}",
            "Échec du paiement de votre abonnement" if fr else "Your subscription payment failed",
            f"Nouvel essai n° {plan.step} le {when}."
            if fr
            else f"We will retry (attempt {plan.step}) on {when}.",
        )

    async def _tell(self, event: Any, ctx: JobContext, what: str, title: str, message: str) -> None:
        if event.receipt_email:
            await self.notify(
                ctx.event_id,
                what,
                user_id=event.customer_id,
                to=event.receipt_email,
                locale=event.locale,
                title=title,
                message=message,
            )

    # --- cancellation -----------------------------------------------------------------------

    async def cancel(self, event: Any, ctx: JobContext) -> None:
        await self.record_cancellation(event.subscription_id, event.reason)
        await self.audit(
            ctx.event_id, event.subscription_id, "subscription.cancelled", {"reason": event.reason}
        )
        fr = event.locale == "fr"
        await self._tell(
            event,
            ctx,
            "cancelled",
            "Abonnement résilié" if fr else "Subscription cancelled",
            f"Votre abonnement est résilié : {event.reason}."
            if fr
            else f"Your subscription is cancelled: {event.reason}.",
        )


JOB = JobSpec(
    family="subscription",
    job_type=SubscriptionJob,
    settings_type=SubscriptionSettings,
    dependencies=(DEPENDENCY,),
)
