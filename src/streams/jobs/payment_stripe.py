"""The provider calls of the money jobs, through the official ``stripe`` library (async).

stripe-python >= 10 has an async client: ``StripeClient(..., http_client=AIOHTTPClient())``
and ``*_async`` methods, so no thread pool is needed. The base URL is configurable
(``payment_api_base``: our local provider, stripe-mock, or https://api.stripe.com); the
library's own retries are off (``max_network_retries=0``): the worker's retry ladder
retries, and every call carries an ``Idempotency-Key`` so a retry never charges twice.

Error classes (``classify``): declined card (402 ``CardError``) and invalid request (400,
404, idempotency-key reuse with other parameters) -> ``Permanent``; 429 -> ``RetryAfter``
honouring ``Retry-After`` (else ``Retryable``); 5xx, timeouts and connection errors ->
``Retryable``; bad credentials (401/403) -> ``Retryable`` (a configuration fault an
operator fixes: the events must not be dead-lettered meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import stripe
from pydantic import Field, SecretStr

from streams.core.scrub import scrub
from streams.errors import ConfigError, HandlerError, Permanent, Retryable, RetryAfter
from streams.jobs.base import JobSettings
from streams.jobs.webhook import MAX_RETRY_AFTER_S, parse_retry_after


class PaymentSettings(JobSettings):
    """The provider connection of the payment, refund and subscription jobs."""

    dev_mode: bool = Field(default=False, description="accept a test key (make run)")
    payment_api_base: str = Field(default="https://api.stripe.com", description="provider URL")
    payment_api_key: SecretStr | None = None
    payment_timeout_s: float = Field(default=20.0, gt=0, le=300)
    payment_default_method: str = Field(
        default="pm_card_visa", description="payment method when an event names none"
    )
    payment_admin_email: str = Field(
        default="payments-admin@example.com", description="who hears of disputes"
    )


def api_key_of(settings: PaymentSettings) -> str:
    if settings.payment_api_key is None or not settings.payment_api_key.get_secret_value():
        if settings.dev_mode:
            return "sk_test_streams"
        raise ConfigError("STREAMS_PAYMENT_API_KEY: not set (the provider's secret API key)")
    return settings.payment_api_key.get_secret_value()


def _message(exc: stripe.StripeError) -> str:
    text = exc.user_message or str(exc) or type(exc).__name__
    return scrub(" ".join(str(text).split()))[:300]


def classify(exc: BaseException, *, what: str, now_s: float | None = None) -> HandlerError:
    """The handler outcome of a provider error (see the module docstring)."""
    if not isinstance(exc, stripe.StripeError):
        return Retryable(f"{what}: {type(exc).__name__}")
    status = exc.http_status
    code = exc.code or ""
    if isinstance(exc, stripe.CardError):
        decline = getattr(exc, "error", None)
        reason = getattr(decline, "decline_code", None) or code or "declined"
        return Permanent(f"{what}: card declined ({reason}): {_message(exc)}")
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        headers: Mapping[str, str] = exc.headers or {}
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        delay_s = parse_retry_after(
            retry_after, time.time() if now_s is None else now_s, MAX_RETRY_AFTER_S
        )
        if delay_s is None:
            return Retryable(f"{what}: provider rate limit (HTTP 429)")
        return RetryAfter(delay_s, f"{what}: provider rate limit, retry after {delay_s:g}s")
    if isinstance(exc, stripe.APIConnectionError):
        return Retryable(f"{what}: provider unreachable ({type(exc).__name__})")
    if status is not None and status >= 500:
        return Retryable(f"{what}: provider HTTP {status}")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return Retryable(f"{what}: provider refused our credentials (HTTP {status})")
    if isinstance(exc, stripe.InvalidRequestError | stripe.IdempotencyError) or (
        status is not None and 400 <= status < 500
    ):
        return Permanent(f"{what}: invalid request ({code or status}): {_message(exc)}")
    return Retryable(f"{what}: provider error {type(exc).__name__} (HTTP {status})")


@dataclass(frozen=True)
class Charge:
    intent_id: str
    status: str
    amount_minor: int
    replayed: bool


class ProviderClient:
    """One ``StripeClient`` with an aiohttp session (opened lazily, closed by ``close``)."""

    def __init__(self, settings: PaymentSettings) -> None:
        self.settings = settings
        self.base = settings.payment_api_base.rstrip("/")
        self._http = stripe.AIOHTTPClient(timeout=settings.payment_timeout_s)
        self.client = stripe.StripeClient(
            api_key_of(settings),
            base_addresses={"api": self.base},
            http_client=self._http,
            max_network_retries=0,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def charge(
        self,
        *,
        idempotency_key: str,
        amount_minor: int,
        currency: str,
        payment_method: str,
        metadata: Mapping[str, str],
        description: str | None,
    ) -> Charge:
        """A confirmed PaymentIntent (captured at once); raises stripe errors."""
        params: dict[str, Any] = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "confirm": True,
            "payment_method": payment_method,
            "metadata": dict(metadata),
        }
        if description:
            params["description"] = description
        intent = await self.client.v1.payment_intents.create_async(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
        replayed = _replayed(intent)
        return Charge(str(intent.id), str(intent.status), int(intent.amount), replayed)

    async def find_payment(self, payment_id: str) -> str | None:
        """The provider id of the captured intent whose ``metadata.payment_id`` is ours."""
        found = await self.client.v1.payment_intents.search_async(
            params={"query": f"metadata['payment_id']:'{payment_id}'"}
        )
        for intent in found.data:
            return str(intent.id)
        return None

    async def refund(
        self,
        *,
        idempotency_key: str,
        intent_id: str,
        amount_minor: int,
        metadata: Mapping[str, str],
    ) -> str:
        refund = await self.client.v1.refunds.create_async(
            params={
                "payment_intent": intent_id,
                "amount": amount_minor,
                "metadata": dict(metadata),
            },
            options={"idempotency_key": idempotency_key},
        )
        return str(refund.id)


def _replayed(obj: Any) -> bool:
    response = getattr(obj, "last_response", None)
    headers = getattr(response, "headers", None) or {}
    return str(headers.get("Idempotent-Replayed", headers.get("idempotent-replayed", ""))) == "true"
