"""Incoming payment-provider webhooks: ``POST /v1/providers/{provider}/webhooks``.

Authenticated by the provider's signature, not by a bearer token (``@provider_signed``:
the API's auth middleware lets the request through and this handler verifies it). The
``Stripe-Signature`` header (``t=<unix>,v1=<HMAC-SHA256 of "t.body">``) is checked by the
``stripe`` library's verifier against the provider's secret(s) with a tolerance window
(``provider_webhook_tolerance_s``). A bad or missing signature, a stale timestamp or a
body that is not an event is a 400 problem naming the reason, and publishes nothing.

A verified event is published as ``payment.provider_event`` (event id derived from the
provider's event id, so two concurrent deliveries publish one event downstream) and its id
is then recorded (``provider_webhook_events``); a delivery of an id already recorded is a
replay: 200 ``{"replayed": true}`` (so the provider stops retrying) and nothing is
published. The payment family processes the event (``jobs.payment``).

Secrets: ``STREAMS_PROVIDER_WEBHOOK_SECRETS`` = JSON ``{"stripe": ["whsec_current",
"whsec_previous"]}``; a provider without a secret is a 404 problem.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import stripe
from aiohttp import web
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import BigInteger, Column, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from streams.api.access import provider_signed
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem
from streams.api.state import DATABASE, PUBLISHER
from streams.errors import HandlerError, PublishError
from streams.store.database import Database
from streams.store.schema import metadata

seen_events = Table(
    "provider_webhook_events",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("provider_event_id", String(256), primary_key=True),
    Column("received_at_ms", BigInteger, nullable=False),
)
"""Provider event ids already published (migration ``0003_subscriptions``)."""


class ProviderWebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")

    provider_webhook_secrets: dict[str, list[SecretStr]] = Field(default_factory=dict)
    provider_webhook_tolerance_s: int = Field(default=300, ge=1, le=3600)


class WebhookReceipt(BaseModel):
    """The answer to a verified delivery."""

    received: bool
    replayed: bool = Field(description="already received: nothing was published")
    event_id: str | None = Field(default=None, description="the payment.provider_event id")


class ProviderEventBody(BaseModel):
    """A provider event as Stripe sends it (only what the route reads is described)."""

    model_config = {"extra": "allow"}

    id: str = Field(description="the provider's event id (evt_...)")
    type: str = Field(description="e.g. charge.dispute.created")
    data: dict[str, Any] = Field(description="``object``: the object the event is about")


WEBHOOK_SETTINGS = web.AppKey("provider_webhook_settings", ProviderWebhookSettings)


def derived_event_id(provider: str, provider_event_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"streams:provider:{provider}:{provider_event_id}"))


def verify(body: bytes, header: str | None, secrets: list[str], tolerance_s: int) -> None:
    """Raise Problem 400 unless one of ``secrets`` signed ``body`` within the tolerance."""
    if not header:
        raise Problem(400, "bad-signature", "Stripe-Signature header missing")
    reason = "no secret configured"
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body.decode("utf-8"), header, secret, tolerance_s)
            return
        except stripe.SignatureVerificationError as exc:
            reason = str(exc.user_message or exc)
        except UnicodeDecodeError:
            reason = "body is not UTF-8"
    raise Problem(400, "bad-signature", f"signature refused: {reason}")


def provider_event_payload(provider: str, event: Any, body: bytes) -> dict[str, Any]:
    """The ``payment.provider_event`` payload of a verified provider event (Problem 400 when
    it is not shaped like one)."""
    try:
        event_id = str(event["id"])
        event_type = str(event["type"])
        obj = event["data"]["object"]
        object_id = str(obj["id"])
    except (KeyError, TypeError):
        detail = "body: expected an event with id, type, data.object.id"
        raise Problem(400, "bad-event", detail) from None
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    payment_id = meta.get("payment_id") or obj.get("payment_intent") or object_id
    status = obj.get("status")
    return {
        "payment_id": str(payment_id),
        "provider": provider,
        "provider_event_id": event_id,
        "provider_event_type": event_type,
        "object_id": object_id,
        "status": None if status is None else str(status),
        "payload": body.decode("utf-8"),
    }


async def _seen(db: Database, provider: str, event_id: str) -> bool:
    async with db.transaction(write=False) as conn:
        row = await conn.execute(
            select(seen_events.c.provider_event_id).where(
                seen_events.c.provider == provider, seen_events.c.provider_event_id == event_id
            )
        )
        return row.first() is not None


async def _record(db: Database, provider: str, event_id: str) -> None:
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    values = {
        "provider": provider,
        "provider_event_id": event_id,
        "received_at_ms": time.time_ns() // 1_000_000,
    }
    async with db.transaction() as conn:
        await conn.execute(insert(seen_events).values(**values).on_conflict_do_nothing())


@provider_signed
@operation(
    "Receive a payment provider's webhook",
    ok=(200, WebhookReceipt),
    tags=("providers",),
    description="Authenticated by the provider's signature (Stripe-Signature: t=...,v1=...),"
    " not by a bearer token or API key. Publishes one payment.provider_event per provider"
    " event id; a replay is answered 200 with replayed=true and publishes nothing.",
    params=(
        Param("provider", "path", "the provider, e.g. stripe"),
        Param("Stripe-Signature", "header", "t=<unix seconds>,v1=<HMAC-SHA256 hex>"),
    ),
    body=ProviderEventBody,
    problems={
        400: "signature missing, refused or outside the tolerance window; or not an event",
        404: "no webhook secret configured for this provider",
        503: "the broker or the store is unavailable (the provider retries)",
    },
    probe=Probe(
        ok=404,
        path={"provider": "no-such-provider"},
        body={"id": "evt_1", "type": "charge.dispute.created", "data": {"object": {}}},
    ),
)
async def receive_webhook(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    settings = request.app[WEBHOOK_SETTINGS]
    secrets = [s.get_secret_value() for s in settings.provider_webhook_secrets.get(provider, [])]
    if not secrets:
        raise Problem(404, "unknown-provider", f"provider: no webhook secret for {provider!r}")
    body = await request.read()
    verify(
        body,
        request.headers.get("Stripe-Signature"),
        secrets,
        settings.provider_webhook_tolerance_s,
    )
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise Problem(400, "bad-event", f"body: not JSON ({exc})") from None
    payload = provider_event_payload(provider, event, body)
    db = request.app[DATABASE]
    event_id = derived_event_id(provider, payload["provider_event_id"])
    try:
        if await _seen(db, provider, payload["provider_event_id"]):
            return web.json_response(WebhookReceipt(received=True, replayed=True).model_dump())
        publisher: Any = request.app[PUBLISHER]
        await publisher.publish_async("payment.provider_event", payload, event_id=event_id)
        await _record(db, provider, payload["provider_event_id"])
    except (PublishError, HandlerError) as exc:  # the provider retries the delivery
        raise Problem(503, "unavailable", f"not stored yet: {type(exc).__name__}") from None
    return web.json_response(
        WebhookReceipt(received=True, replayed=False, event_id=event_id).model_dump()
    )


def add_routes(app: web.Application) -> None:
    """The webhook route; it uses the app's ``PUBLISHER`` and ``DATABASE`` (``create_app``
    sets them) and ``WEBHOOK_SETTINGS`` (default: from the environment)."""
    if WEBHOOK_SETTINGS not in app:
        app[WEBHOOK_SETTINGS] = ProviderWebhookSettings()
    app.router.add_post("/v1/providers/{provider}/webhooks", receive_webhook)
