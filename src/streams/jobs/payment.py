"""The payment job: charge ``payment.requested``, send the receipt of ``payment.captured``,
process the provider's webhooks (``payment.provider_event``). Never charges twice.

``payment.requested``: one confirmed PaymentIntent through the provider
(``payment_stripe``) with ``Idempotency-Key`` = the event id. A redelivery (after a crash,
a timeout, a retry) sends the same key, and the provider answers the stored result instead
of charging again. On success it publishes ``payment.captured`` (id derived from the
source event: a replay publishes the same id, dropped downstream) and an
``audit.payment_event`` ``payment.captured``; a declined card publishes
``payment.declined`` and is ``Permanent``. Errors are classified by
``payment_stripe.classify``. The provider-wide rate limit of topics.yaml is applied by the
worker before the handler runs (a deferral, no attempt used).

``payment.captured``: a receipt ``email.requested`` (template ``receipt``, EN/FR) when the
event names a ``receipt_email``, with the Canadian sales tax lines of its province
(``payment_tax``: subtotal + lines = the amount charged).

``payment.provider_event``: status synchronisation (``payment.status_synced`` audit
event with the provider's status); ``charge.dispute.created`` / ``charge.dispute.closed``
-> an audit event ``dispute.opened`` / ``dispute.closed`` and an email to
``payment_admin_email``. Other types are acknowledged and logged.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from streams.errors import Permanent
from streams.jobs.base import JobContext, JobSpec
from streams.jobs.money import MoneyJobBase, amount_text, derived_id
from streams.jobs.payment_stripe import PaymentSettings, classify
from streams.jobs.payment_tax import TaxConfigError, receipt_breakdown

log = logging.getLogger(__name__)

DEPENDENCY = "payments"  # the circuit breaker of the provider API
SYNCED_TYPES = ("payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded")
DISPUTE_ACTIONS = {
    "charge.dispute.created": "dispute.opened",
    "charge.dispute.closed": "dispute.closed",
}


class PaymentJob(MoneyJobBase):
    """Handles ``payment.requested``, ``payment.captured`` and ``payment.provider_event``."""

    event_types: ClassVar[tuple[str, ...]] = (
        "payment.requested",
        "payment.captured",
        "payment.provider_event",
    )

    async def handle(self, event: Any, ctx: JobContext) -> None:
        await self.ensure_started()
        if ctx.event_type == "payment.requested":
            await self.charge(event, ctx)
        elif ctx.event_type == "payment.captured":
            await self.send_receipt(event, ctx)
        else:
            await self.provider_event(event, ctx)

    # --- payment.requested ------------------------------------------------------------------

    async def charge(self, event: Any, ctx: JobContext) -> None:
        """Charge ``event`` (a payment.requested or a renewal's equivalent) once."""
        await charge_once(self, event, ctx.event_id, ctx)

    # --- payment.captured -------------------------------------------------------------------

    async def send_receipt(self, event: Any, ctx: JobContext) -> None:
        if not event.receipt_email:
            log.info("payment %s captured: no receipt_email, no receipt", event.payment_id)
            return
        await self.publish(
            "email.requested",
            receipt_email_payload(event),
            derived_id(ctx.event_id, "receipt"),
        )

    # --- payment.provider_event -------------------------------------------------------------

    async def provider_event(self, event: Any, ctx: JobContext) -> None:
        kind = event.provider_event_type
        details = {
            "provider": event.provider,
            "provider_event_id": event.provider_event_id,
            "provider_event_type": kind,
            "object_id": event.object_id,
            "status": event.status,
        }
        if kind in DISPUTE_ACTIONS:
            action = DISPUTE_ACTIONS[kind]
            await self.audit(ctx.event_id, event.payment_id, action, details)
            opened = action == "dispute.opened"
            await self.notify(
                ctx.event_id,
                action,
                user_id="payments-admin",
                to=self.settings.payment_admin_email,
                locale="en",
                name="payments admin",
                title=f"Dispute {'opened' if opened else 'closed'} on payment {event.payment_id}",
                message=f"{event.provider} dispute {event.object_id}: status {event.status}"
                f" (provider event {event.provider_event_id}).",
            )
        elif kind in SYNCED_TYPES:
            await self.audit(ctx.event_id, event.payment_id, "payment.status_synced", details)
        else:
            log.info("provider event %s (%s) needs no action", event.provider_event_id, kind)


async def charge_once(
    job: MoneyJobBase,
    event: Any,
    idempotency_key: str,
    ctx: JobContext,
    dependency: str = DEPENDENCY,
) -> str:
    """Charge through the provider with ``idempotency_key``; publish the capture and audit.

    Returns the provider's payment id. ``event`` needs the ``payment.requested`` fields;
    ``dependency`` names the breaker (one per family: a breaker's policy is its family's).
    """
    what = f"payment {event.payment_id}"
    method = event.payment_method or job.settings.payment_default_method
    failure: Exception | None = None
    async with ctx.dependency(f"{dependency}:{job.provider.base}"):
        try:
            charge = await job.provider.charge(
                idempotency_key=idempotency_key,
                amount_minor=event.amount_minor,
                currency=event.currency,
                payment_method=method,
                metadata={"payment_id": event.payment_id, "event_id": ctx.event_id},
                description=event.description,
            )
        except Exception as exc:
            outcome = classify(exc, what=what)
            if not isinstance(outcome, Permanent):
                raise outcome from exc  # counts against the provider's breaker
            failure = outcome
    if failure is not None:  # the provider answered: healthy, but it refused this payment
        await job.audit(
            idempotency_key, event.payment_id, "payment.declined", {"reason": str(failure)}
        )
        raise failure
    if charge.status != "succeeded":
        raise Permanent(f"{what}: provider left it {charge.status!r}, expected 'succeeded'")
    captured = captured_payload(event, charge.intent_id)
    await job.publish("payment.captured", captured, derived_id(idempotency_key, "captured"))
    await job.audit(
        idempotency_key,
        event.payment_id,
        "payment.captured",
        {
            "amount_minor": event.amount_minor,
            "currency": event.currency,
            "provider_payment_id": charge.intent_id,
            "replayed": charge.replayed,
        },
    )
    log.info(
        "payment %s captured as %s (replayed=%s)",
        event.payment_id,
        charge.intent_id,
        charge.replayed,
    )
    return charge.intent_id


PAYMENT_FIELDS = (
    "payment_id",
    "customer_id",
    "amount_minor",
    "currency",
    "provider",
    "description",
    "payment_method",
    "receipt_email",
    "locale",
    "province",
    "customer_name",
    "subscription_id",
)


def captured_payload(event: Any, intent_id: str) -> dict[str, Any]:
    payload = {name: getattr(event, name, None) for name in PAYMENT_FIELDS}
    payload["provider_payment_id"] = intent_id
    return {k: v for k, v in payload.items() if v is not None}


def receipt_email_payload(event: Any) -> dict[str, Any]:
    """The receipt's ``email.requested`` payload (tax lines from ``payment_tax``)."""
    locale = event.locale
    total = event.amount_minor
    if event.province is not None:
        try:
            parts = receipt_breakdown(total, event.province, event.envelope.occurred_at_ms)
        except TaxConfigError as exc:
            raise Permanent(str(exc)) from None
        sep = " : " if locale == "fr" else ": "
        lines = "; ".join(
            f"{line.label(locale)}{sep}{amount_text(line.amount_minor, event.currency, locale)}"
            for line in parts.lines
        )
        subtotal = parts.subtotal_minor
    else:
        lines = "aucune" if locale == "fr" else "none"
        subtotal = total
    return {
        "user_id": event.customer_id,
        "to": event.receipt_email,
        "locale": locale,
        "template": "receipt",
        "variables": {
            "name": event.customer_name or event.customer_id,
            "order_id": event.payment_id,
            "amount": amount_text(total, event.currency, locale),
            "subtotal": amount_text(subtotal, event.currency, locale),
            "tax_lines": lines,
        },
    }


JOB = JobSpec(
    family="payment",
    job_type=PaymentJob,
    settings_type=PaymentSettings,
    dependencies=(DEPENDENCY,),
)
