"""Event models: one pydantic model per event type, agreeing field for field with ``schemas/``.

Every event is an ``Envelope`` (id, type, time, producer, correlation, tenant) plus a flat
payload. Models validate strictly (no coercion: ``"100"`` is not an integer) and forbid
unknown fields, so a producer's mistake is reported as ``(field path, reason)`` by
``build_event`` and a bad record on receipt becomes an ``EventValidationError``.

The Avro schemas in ``schemas/<event type>/v<N>.avsc`` are the wire contract; a unit test
checks that each model's fields, optionality and defaults equal its latest schema's.
Time values are integers in milliseconds since the epoch (``occurred_at_ms``).

Longer than ~400 lines on purpose: it is a catalogue (one short model per event type, read by
type, mirroring ``schemas/``), not a flow; splitting it would scatter the contract.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from datetime import date
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from streams.errors import InvalidPayload, UnknownEventType

AVRO_INT_MAX = 2**31 - 1
AVRO_LONG_MAX = 2**63 - 1
MAX_EVENT_ID_CHARS = 128
MAX_ID_CHARS = 256

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_MIME = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*(?:\s*;\s*[^\x00-\x1f\x7f]*)?$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --- reusable field types ---------------------------------------------------------------


def _no_control(value: str) -> str:
    # printable ASCII has no control character: checked in C (ids are ASCII, ~4x faster)
    if value.isascii() and value.isprintable() and value.strip():
        return value
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.match(value) or ".." in value:
        raise ValueError("must be an e-mail address like name@example.com")
    return value


def _http_url(value: str) -> str:
    if len(value) > 2048:
        raise ValueError("must be at most 2048 characters")
    if _CONTROL.search(value) or any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not host:
        raise ValueError("must name a host")
    return value


def _json_text(value: str) -> str:
    try:
        json.loads(value)
    except ValueError as exc:
        raise ValueError(f"must be JSON text ({exc})") from None
    return value


def _mime_type(value: str) -> str:
    if len(value) > 255 or not _MIME.match(value):
        raise ValueError("must be a media type like application/json")
    return value


@lru_cache(maxsize=1024)
def _known_zone(key: str) -> bool:
    try:
        ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _timezone(value: str) -> str:
    if len(value) > 64 or not _known_zone(value):
        raise ValueError("must be an IANA time zone name like Europe/Paris or UTC")
    return value


def _day(value: str) -> str:
    try:
        if not _DAY.match(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a calendar day YYYY-MM-DD") from None
    return value


def _uri(value: str) -> str:
    if len(value) > 2048 or not _URI_SCHEME.match(value):
        raise ValueError("must be a URI with a scheme, like s3://bucket/key")
    return value


def _base_name(value: str) -> str:
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be a file name without a directory part")
    return value


Id = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_no_control)
]
"""An identifier (a partition key or a reference): 1-256 characters, no control characters."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_no_control)]
Text = Annotated[str, StringConstraints(min_length=1)]
EmailAddress = Annotated[str, AfterValidator(_email)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
JsonText = Annotated[str, AfterValidator(_json_text)]
MediaType = Annotated[str, AfterValidator(_mime_type)]
TimeZoneName = Annotated[str, AfterValidator(_timezone)]
Day = Annotated[str, AfterValidator(_day)]
Uri = Annotated[str, AfterValidator(_uri)]
FileName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255),
    AfterValidator(_no_control),
    AfterValidator(_base_name),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
AmountMinor = Annotated[int, Field(gt=0, le=AVRO_LONG_MAX)]
TimestampMs = Annotated[int, Field(ge=0, le=AVRO_LONG_MAX)]
StrMap = dict[str, str]

_STRICT = ConfigDict(extra="forbid", strict=True)


# --- envelope and base ------------------------------------------------------------------


class Envelope(BaseModel):
    """What every event carries besides its payload (Avro ``streams.Envelope``)."""

    model_config = _STRICT

    event_id: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_EVENT_ID_CHARS),
        AfterValidator(_no_control),
    ]
    event_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$")]
    occurred_at_ms: TimestampMs
    producer: Name = "unknown"
    correlation_id: Id | None = None
    tenant_id: Id | None = None


class Event(BaseModel):
    """Base of every event model: an envelope plus the payload fields of one event type."""

    model_config = _STRICT

    EVENT_TYPE: ClassVar[str]
    RATE_LIMITED: ClassVar[bool] = True  # False: the family's rate limits do not count it
    envelope: Envelope

    @field_validator("envelope")
    @classmethod
    def _type_matches(cls, envelope: Envelope) -> Envelope:
        if envelope.event_type != cls.EVENT_TYPE:
            raise ValueError(
                f"event_type {envelope.event_type!r} does not match {cls.EVENT_TYPE!r}"
            )
        return envelope

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def event_type(self) -> str:
        return self.envelope.event_type


# --- email, webhook, push ---------------------------------------------------------------


class EmailRequested(Event):
    EVENT_TYPE: ClassVar[str] = "email.requested"

    user_id: Id
    to: EmailAddress
    locale: Literal["en", "fr"] = "en"
    template: Literal["welcome", "password_reset", "receipt", "notification"]
    variables: StrMap = Field(default_factory=dict)


class WebhookRequested(Event):
    EVENT_TYPE: ClassVar[str] = "webhook.requested"

    subscription_id: Id
    url: HttpUrl
    event_name: Name
    body: JsonText
    content_type: MediaType = "application/json"


class PushRequested(Event):
    EVENT_TYPE: ClassVar[str] = "push.requested"

    user_id: Id
    title: Text
    body: Text
    device_ids: Annotated[list[Id], Field(min_length=1)]
    data: StrMap = Field(default_factory=dict)
    timezone: TimeZoneName = "UTC"
    respect_quiet_hours: bool = True
    category: Literal["transactional", "promotional"] = "transactional"
    platform: Literal["any", "ios", "android"] = "any"
    variables: StrMap = Field(default_factory=dict)


class PushTokenInvalid(Event):
    EVENT_TYPE: ClassVar[str] = "push.token_invalid"
    RATE_LIMITED: ClassVar[bool] = False  # a report, not a push: spends no user's tokens

    user_id: Id
    device_id: Id
    request_event_id: Id


class ConsentChanged(Event):
    EVENT_TYPE: ClassVar[str] = "consent.changed"

    user_id: Id
    promotional: bool
    opted_out: bool = False


class _EmailFeedback(Event):
    RATE_LIMITED: ClassVar[bool] = False  # provider feedback, not an email to send
    user_id: Id
    address: EmailAddress
    reason: Annotated[str, StringConstraints(max_length=1000)] = ""


class EmailBounced(_EmailFeedback):
    EVENT_TYPE: ClassVar[str] = "email.bounced"


class EmailComplained(_EmailFeedback):
    EVENT_TYPE: ClassVar[str] = "email.complained"


class EmailUnsubscribed(Event):
    EVENT_TYPE: ClassVar[str] = "email.unsubscribed"
    RATE_LIMITED: ClassVar[bool] = False

    user_id: Id


# --- payment, refund --------------------------------------------------------------------


Province = Literal["AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT"]


class _Payment(Event):
    payment_id: Id
    customer_id: Id
    amount_minor: AmountMinor
    currency: Currency
    provider: Name
    description: str | None = None
    payment_method: Id | None = None
    receipt_email: EmailAddress | None = None
    locale: Literal["en", "fr"] = "en"
    province: Province | None = None
    customer_name: Name | None = None
    subscription_id: Id | None = None


class PaymentRequested(_Payment):
    EVENT_TYPE: ClassVar[str] = "payment.requested"


class PaymentCaptured(_Payment):
    EVENT_TYPE: ClassVar[str] = "payment.captured"

    provider_payment_id: Id | None = None


class PaymentProviderEvent(Event):
    EVENT_TYPE: ClassVar[str] = "payment.provider_event"

    payment_id: Id
    provider: Name
    provider_event_id: Id
    provider_event_type: Name
    object_id: Id
    status: Name | None = None
    payload: JsonText


class RefundRequested(Event):
    EVENT_TYPE: ClassVar[str] = "refund.requested"

    payment_id: Id
    refund_id: Id
    amount_minor: AmountMinor
    currency: Currency
    reason: Text
    receipt_email: EmailAddress | None = None
    locale: Literal["en", "fr"] = "en"


# --- subscription -----------------------------------------------------------------------


class SubscriptionRenewalDue(Event):
    EVENT_TYPE: ClassVar[str] = "subscription.renewal_due"

    subscription_id: Id
    customer_id: Id
    period: Id
    amount_minor: AmountMinor
    currency: Currency
    provider: Name
    payment_method: Id | None = None
    receipt_email: EmailAddress | None = None
    locale: Literal["en", "fr"] = "en"
    province: Province | None = None
    dunning_step: Annotated[int, Field(ge=0, le=100)] = 0
    due_at_ms: TimestampMs | None = None


class SubscriptionCancelled(Event):
    EVENT_TYPE: ClassVar[str] = "subscription.cancelled"

    subscription_id: Id
    customer_id: Id
    reason: Text
    receipt_email: EmailAddress | None = None
    locale: Literal["en", "fr"] = "en"


# --- image ------------------------------------------------------------------------------


class ImageUploaded(Event):
    EVENT_TYPE: ClassVar[str] = "image.uploaded"

    image_id: Id
    owner_id: Id
    filename: FileName
    content_type: MediaType
    size_bytes: Annotated[int, Field(ge=0, le=AVRO_LONG_MAX)]
    storage_uri: Uri
    sha256: Sha256Hex | None = None


class ImageProcessed(Event):
    EVENT_TYPE: ClassVar[str] = "image.processed"

    image_id: Id
    owner_id: Id
    source_uri: Uri
    sha256: Sha256Hex
    width: Annotated[int, Field(ge=1, le=AVRO_INT_MAX)]
    height: Annotated[int, Field(ge=1, le=AVRO_INT_MAX)]
    outputs: Annotated[dict[FileName, Uri], Field(min_length=1)]


class ImageQuarantined(Event):
    EVENT_TYPE: ClassVar[str] = "image.quarantined"

    image_id: Id
    owner_id: Id
    source_uri: Uri
    quarantine_uri: Uri
    reason: Name
    detail: Text
    sha256: Sha256Hex | None = None


class ReviewSubmitted(Event):
    EVENT_TYPE: ClassVar[str] = "review.submitted"

    subject_id: Id
    review_id: Id
    user_id: Id
    rating: Annotated[int, Field(ge=1, le=5)]
    comment: str | None = None


# --- audit ------------------------------------------------------------------------------


class _AuditClaim(Event):
    subject_id: Id
    actor_id: Id
    amount_minor: Annotated[int, Field(ge=0, le=AVRO_LONG_MAX)] | None = None
    reason: str | None = None
    details: StrMap = Field(default_factory=dict)


class AuditClaimSubmitted(_AuditClaim):
    EVENT_TYPE: ClassVar[str] = "audit.claim_submitted"


class AuditClaimApproved(_AuditClaim):
    EVENT_TYPE: ClassVar[str] = "audit.claim_approved"


class AuditClaimRejected(_AuditClaim):
    EVENT_TYPE: ClassVar[str] = "audit.claim_rejected"


class AuditClaimSettled(_AuditClaim):
    EVENT_TYPE: ClassVar[str] = "audit.claim_settled"


class AuditAdminAction(Event):
    EVENT_TYPE: ClassVar[str] = "audit.admin_action"

    subject_id: Id
    actor_id: Id
    action: Name
    details: StrMap = Field(default_factory=dict)


class AuditPaymentEvent(Event):
    EVENT_TYPE: ClassVar[str] = "audit.payment_event"

    subject_id: Id
    actor_id: Id
    action: Name
    details: StrMap = Field(default_factory=dict)


# --- cleanup, analytics -----------------------------------------------------------------

CleanupPolicy = Literal[
    "chat_messages",
    "sessions",
    "audit_logs",
    "notifications",
    "payment_records",
    "inactive_accounts",
    "temp_files",
]


class CleanupDue(Event):
    EVENT_TYPE: ClassVar[str] = "cleanup.due"

    policy: CleanupPolicy
    scheduled_for_ms: TimestampMs
    batch_size: Annotated[int, Field(gt=0, le=AVRO_INT_MAX)] = 1000
    dry_run: bool = False


class AnalyticsRollupRequested(Event):
    EVENT_TYPE: ClassVar[str] = "analytics.rollup_requested"

    scope: Id
    day: Day
    kind: Literal["daily_counts", "ratings"]


# --- registry and construction ----------------------------------------------------------

_MODELS: tuple[type[Event], ...] = (
    EmailRequested,
    WebhookRequested,
    PushRequested,
    PushTokenInvalid,
    ConsentChanged,
    EmailBounced,
    EmailComplained,
    EmailUnsubscribed,
    PaymentRequested,
    PaymentCaptured,
    PaymentProviderEvent,
    RefundRequested,
    SubscriptionRenewalDue,
    SubscriptionCancelled,
    ImageUploaded,
    ImageProcessed,
    ImageQuarantined,
    ReviewSubmitted,
    AuditClaimSubmitted,
    AuditClaimApproved,
    AuditClaimRejected,
    AuditClaimSettled,
    AuditAdminAction,
    AuditPaymentEvent,
    CleanupDue,
    AnalyticsRollupRequested,
)

EVENT_MODELS: dict[str, type[Event]] = {model.EVENT_TYPE: model for model in _MODELS}
"""Event type -> its model."""


def model_for(event_type: str) -> type[Event]:
    """The model of ``event_type``; raises UnknownEventType naming the known types."""
    try:
        return EVENT_MODELS[event_type]
    except (KeyError, TypeError):
        known = ", ".join(sorted(EVENT_MODELS))
        raise UnknownEventType(f"unknown event type {event_type!r}; known: {known}") from None


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field path, reason)`` pairs of a pydantic error, e.g. ``("envelope.event_id", ...)``."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "<event>"
        kind = err["type"]
        if kind == "missing":
            reason = "required"
        elif kind == "extra_forbidden":
            reason = "unknown field"
        else:
            reason = err["msg"].removeprefix("Value error, ")
        out.append((path, reason))
    return out


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def build_event(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    event_id: str | None = None,
    occurred_at_ms: int | None = None,
    producer: str = "unknown",
    correlation_id: str | None = None,
    tenant_id: str | None = None,
) -> Event:
    """A validated event of ``event_type`` from its payload fields and envelope values.

    ``event_id`` defaults to a new UUID4 string (a caller's id is kept: 1-128 characters),
    ``occurred_at_ms`` to now. Raises UnknownEventType (naming the known types) or
    InvalidPayload with every ``(field path, reason)``.
    """
    model = model_for(event_type)
    if not isinstance(payload, Mapping):
        raise InvalidPayload(
            event_type,
            [("<payload>", f"must be a mapping of fields, got {type(payload).__name__}")],
        )
    if "envelope" in payload:
        raise InvalidPayload(
            event_type,
            [("envelope", "is set by build_event; pass event_id=, producer=, ... instead")],
        )
    data = dict(payload)
    data["envelope"] = {
        "event_id": str(uuid.uuid4()) if event_id is None else event_id,
        "event_type": event_type,
        "occurred_at_ms": now_ms() if occurred_at_ms is None else occurred_at_ms,
        "producer": producer,
        "correlation_id": correlation_id,
        "tenant_id": tenant_id,
    }
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(event_type, validation_errors(exc)) from None


# --- examples ---------------------------------------------------------------------------

EXAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "email.requested": {
        "user_id": "user-42",
        "to": "ada@example.com",
        "locale": "fr",
        "template": "welcome",
        "variables": {"name": "Ada"},
    },
    "webhook.requested": {
        "subscription_id": "sub-7",
        "url": "https://hooks.example.com/in",
        "event_name": "order.paid",
        "body": '{"order_id": "o-1", "total_minor": 1250}',
    },
    "push.requested": {
        "user_id": "user-42",
        "title": "Your order shipped",
        "body": "It arrives tomorrow.",
        "device_ids": ["dev-1", "dev-2"],
        "data": {"order_id": "o-1"},
        "timezone": "America/Toronto",
        "category": "transactional",
        "variables": {"name": "Ada"},
    },
    "push.token_invalid": {
        "user_id": "user-42",
        "device_id": "dev-2",
        "request_event_id": "evt-1",
    },
    "consent.changed": {"user_id": "user-42", "promotional": True, "opted_out": False},
    "email.bounced": {"user_id": "user-42", "address": "ada@example.com", "reason": "550"},
    "email.complained": {"user_id": "user-42", "address": "ada@example.com"},
    "email.unsubscribed": {"user_id": "user-42"},
    "payment.requested": {
        "payment_id": "pay-1",
        "customer_id": "cus-9",
        "amount_minor": 1250,
        "currency": "CAD",
        "provider": "payments",
        "description": "Order o-1",
    },
    "payment.captured": {
        "payment_id": "pay-1",
        "customer_id": "cus-9",
        "amount_minor": 1250,
        "currency": "CAD",
        "provider": "payments",
    },
    "refund.requested": {
        "payment_id": "pay-1",
        "refund_id": "ref-1",
        "amount_minor": 250,
        "currency": "CAD",
        "reason": "damaged item",
    },
    "image.uploaded": {
        "image_id": "img-1",
        "owner_id": "user-42",
        "filename": "cat.png",
        "content_type": "image/png",
        "size_bytes": 48213,
        "storage_uri": "file:///var/uploads/img-1",
        "sha256": "0" * 64,
    },
    "image.processed": {
        "image_id": "img-1",
        "owner_id": "user-42",
        "source_uri": "blob:uploads/img-1",
        "sha256": "0" * 64,
        "width": 1200,
        "height": 800,
        "outputs": {"thumbnail.webp": "blob:images/img-1/thumbnail.webp"},
    },
    "image.quarantined": {
        "image_id": "img-2",
        "owner_id": "user-42",
        "source_uri": "blob:uploads/img-2",
        "quarantine_uri": "blob:quarantine/img-2/e-1/cat.jpg",
        "reason": "executable",
        "detail": "the content is a Windows PE executable (MZ)",
    },
    "review.submitted": {
        "subject_id": "product-7",
        "review_id": "rev-1",
        "user_id": "user-42",
        "rating": 4,
        "comment": "Solid.",
    },
    "audit.claim_submitted": {"subject_id": "claim-1", "actor_id": "user-42", "amount_minor": 5000},
    "audit.claim_approved": {
        "subject_id": "claim-1",
        "actor_id": "adjuster-3",
        "amount_minor": 4500,
        "reason": "partial coverage",
        "details": {"policy": "p-77"},
    },
    "audit.claim_rejected": {"subject_id": "claim-2", "actor_id": "adjuster-3", "reason": "late"},
    "audit.claim_settled": {"subject_id": "claim-1", "actor_id": "system", "amount_minor": 4500},
    "audit.admin_action": {
        "subject_id": "email.dlq",
        "actor_id": "admin-1",
        "action": "dlq.replay",
        "details": {"count": "12"},
    },
    "audit.payment_event": {
        "subject_id": "pay-1",
        "actor_id": "payment-job",
        "action": "payment.captured",
        "details": {"amount_minor": "1250", "provider_payment_id": "pi_1"},
    },
    "payment.provider_event": {
        "payment_id": "pay-1",
        "provider": "stripe",
        "provider_event_id": "evt_1",
        "provider_event_type": "charge.dispute.created",
        "object_id": "dp_1",
        "status": "needs_response",
        "payload": '{"id": "evt_1", "type": "charge.dispute.created"}',
    },
    "subscription.renewal_due": {
        "subscription_id": "sub-1",
        "customer_id": "cus-9",
        "period": "2026-12",
        "amount_minor": 1130,
        "currency": "CAD",
        "provider": "payments",
        "receipt_email": "ada@example.com",
        "province": "ON",
    },
    "subscription.cancelled": {
        "subscription_id": "sub-1",
        "customer_id": "cus-9",
        "reason": "customer request",
    },
    "cleanup.due": {"policy": "sessions", "scheduled_for_ms": 1_767_232_800_000},
    "analytics.rollup_requested": {"scope": "global", "day": "2026-01-01", "kind": "daily_counts"},
}
"""A valid payload per event type (docs, CLI examples, benchmarks, tests)."""
