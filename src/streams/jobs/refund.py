"""The refund job: ``refund.requested`` -> one provider refund, never twice, never too much.

The payment is found at the provider by its ``metadata.payment_id`` (the payment job sets
it), then refunded with ``Idempotency-Key`` = ``refund:<refund_id>`` (the event's refund
id, unique per refund: a redelivery, or a producer publishing the same refund twice, sends
the same key and gets the stored answer). The provider is the authority on how much
remains refundable: a refund over the remainder (in total, across partial refunds) is
refused by it and is ``Permanent`` with a reason naming the refund, the amount and the
payment; so partial refunds add up and stop at the captured amount. On success: an
``audit.payment_event`` ``refund.succeeded`` and, when the event names a
``receipt_email``, a confirmation email. A payment the provider does not (yet) know is
``Retryable`` (the search index lags a capture by seconds at most).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from streams.errors import Permanent, Retryable
from streams.jobs.base import JobContext, JobSpec
from streams.jobs.money import MoneyJobBase, amount_text
from streams.jobs.payment_stripe import PaymentSettings, classify

log = logging.getLogger(__name__)

DEPENDENCY = "refunds"  # the provider API's breaker for this family


class RefundJob(MoneyJobBase):
    """Handles ``refund.requested``."""

    actor = "refund-job"
    event_types: ClassVar[tuple[str, ...]] = ("refund.requested",)

    async def handle(self, event: Any, ctx: JobContext) -> None:
        await self.ensure_started()
        what = (
            f"refund {event.refund_id} of {amount_text(event.amount_minor, event.currency, 'en')}"
        )
        what += f" on payment {event.payment_id}"
        source = f"refund:{event.refund_id}"  # the same refund published twice: same events
        failure: Permanent | None = None
        async with ctx.dependency(f"{DEPENDENCY}:{self.provider.base}"):
            try:
                intent_id = await self.provider.find_payment(event.payment_id)
                refund_id = None
                if intent_id is not None:
                    refund_id = await self.provider.refund(
                        idempotency_key=source,
                        intent_id=intent_id,
                        amount_minor=event.amount_minor,
                        metadata={"refund_id": event.refund_id, "payment_id": event.payment_id},
                    )
            except Exception as exc:
                outcome = classify(exc, what=what)
                if not isinstance(outcome, Permanent):
                    raise outcome from exc
                failure = outcome
        if failure is not None:
            code = str(failure)
            if "amount_too_large" in code:
                failure = Permanent(
                    f"amount_minor: {what} exceeds what remains refundable"
                    f" (refunds add up to at most the captured amount): {code}"
                )
            await self.audit(
                source,
                event.payment_id,
                "refund.refused",
                {"refund_id": event.refund_id, "reason": str(failure)},
            )
            raise failure
        if intent_id is None:
            raise Retryable(f"{what}: the provider knows no captured payment {event.payment_id}")
        await self.audit(
            source,
            event.payment_id,
            "refund.succeeded",
            {
                "refund_id": event.refund_id,
                "amount_minor": event.amount_minor,
                "currency": event.currency,
                "provider_refund_id": refund_id,
            },
        )
        if event.receipt_email:
            fr = event.locale == "fr"
            amount = amount_text(event.amount_minor, event.currency, event.locale)
            await self.notify(
                source,
                "refund",
                user_id=event.payment_id,
                to=event.receipt_email,
                locale=event.locale,
                title=f"Remboursement de {amount}" if fr else f"Refund of {amount}",
                message=(
                    f"Votre remboursement de {amount} pour {event.payment_id} est effectué."
                    if fr
                    else f"Your refund of {amount} for {event.payment_id} has been issued."
                ),
            )
        log.info("%s done (%s)", what, refund_id)


JOB = JobSpec(
    family="refund", job_type=RefundJob, settings_type=PaymentSettings, dependencies=(DEPENDENCY,)
)
