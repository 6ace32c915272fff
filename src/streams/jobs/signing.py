"""HMAC signatures with purpose labels: outgoing webhooks (``v2``) and unsubscribe tokens.

Every HMAC in streams is taken over a payload that starts with its *purpose label* line
(``streams-webhook.v2``, ``streams-unsubscribe.v1``), so a value signed for one purpose is
never valid for another, even under the same secret.

The webhook scheme ``v2``, as a receiver implements it:

1. Read the headers ``X-Streams-Event-Id``, ``X-Streams-Event-Name`` (UTF-8),
   ``X-Streams-Timestamp`` (unix seconds, decimal digits) and the raw body bytes (before
   any JSON parsing).
2. Build the signed payload, lines joined by ``\\n`` then the body::

       streams-webhook.v2\\n<event id>\\n<url>\\n<event name>\\n<timestamp>\\n<body>

   ``<url>`` is the URL the subscription is registered with (the URL the request was sent
   to, query included). Event id, URL and event name never contain a line break.
3. Compute ``hex(HMAC-SHA256(secret, payload))`` with the subscription's secret (UTF-8).
4. ``X-Streams-Signature`` holds comma-separated ``scheme=hex`` entries, e.g. ``v2=5257..``;
   the request is authentic when a ``v2`` entry equals the computed value (constant-time
   compare). Two entries appear while the sender rotates the subscription's secret;
   unknown schemes are ignored.
5. Reject the request when the timestamp is more than the tolerance (default 300 s) from
   the receiver's clock, either way; then drop duplicates by event id (signed, the same on
   every retry of an event).

``verify_stripe`` checks a Stripe ``Stripe-Signature`` header (``t=..,v1=..``: HMAC over
``"<t>." + body``) for the payment family's incoming provider webhooks.

Pure functions: no clock is read here; callers pass ``now_s``. Every check fails closed: a
non-finite or non-numeric clock or tolerance is a SignatureError, never a pass.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

SCHEME = "v2"
WEBHOOK_PURPOSE = "streams-webhook.v2"
UNSUBSCRIBE_PURPOSE = "streams-unsubscribe.v1"
EVENT_ID_HEADER = "X-Streams-Event-Id"
EVENT_NAME_HEADER = "X-Streams-Event-Name"
SUBSCRIPTION_HEADER = "X-Streams-Subscription-Id"
TIMESTAMP_HEADER = "X-Streams-Timestamp"
SIGNATURE_HEADER = "X-Streams-Signature"
DEFAULT_TOLERANCE_S = 300
MAX_SECRETS = 2  # current and previous, during a rollover
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_ENTRIES = 16

Secret = str | bytes


class SignatureError(ValueError):
    """A signature did not verify; the message says why (never echoes a secret)."""


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _keys(secrets: Secret | Iterable[Secret]) -> list[bytes]:
    keys = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    if not keys or not all(keys):
        raise ValueError("at least one non-empty secret is required")
    return [_as_bytes(k) for k in keys]


def purpose_hmac(secret: Secret, purpose: str, payload: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``purpose + "\\n" + payload`` (the purpose separates
    one use of a secret from every other)."""
    if not secret:
        raise ValueError("secret must not be empty")
    if "\n" in purpose or not purpose:
        raise ValueError("purpose must be one non-empty line")
    data = purpose.encode("ascii") + b"\n" + payload
    return hmac.new(_as_bytes(secret), data, hashlib.sha256).hexdigest()


# --- webhooks (v2) -----------------------------------------------------------------------


def signed_payload(
    *, event_id: str, url: str, event_name: str, timestamp_s: int, body: str | bytes
) -> bytes:
    """The v2 payload after the purpose line: id, URL, name, timestamp lines, then body.

    Raises ValueError when a field contains a line break (the framing would be ambiguous).
    """
    fields = (event_id, url, event_name, str(int(timestamp_s)))
    if any("\n" in f or "\r" in f for f in fields):
        raise ValueError("event id, url and event name must not contain line breaks")
    return "\n".join(fields).encode("utf-8") + b"\n" + _as_bytes(body)


def compute_signature(
    secret: Secret,
    *,
    event_id: str,
    url: str,
    event_name: str,
    timestamp_s: int,
    body: str | bytes,
) -> str:
    """The v2 signature (lower-case hex) of one request under one secret."""
    payload = signed_payload(
        event_id=event_id, url=url, event_name=event_name, timestamp_s=timestamp_s, body=body
    )
    return purpose_hmac(secret, WEBHOOK_PURPOSE, payload)


def sign_headers(
    secrets: Secret | Sequence[Secret],
    *,
    event_id: str,
    url: str,
    event_name: str,
    timestamp_s: int,
    body: str | bytes,
) -> dict[str, str]:
    """``X-Streams-Timestamp`` and ``X-Streams-Signature`` (one ``v2`` entry per secret)."""
    keys = _keys(secrets)
    if len(keys) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} secrets (current and previous)")
    entries = [
        compute_signature(
            key,
            event_id=event_id,
            url=url,
            event_name=event_name,
            timestamp_s=timestamp_s,
            body=body,
        )
        for key in keys
    ]
    return {
        TIMESTAMP_HEADER: str(int(timestamp_s)),
        SIGNATURE_HEADER: ",".join(f"{SCHEME}={hex_}" for hex_ in entries),
    }


def parse_signatures(header: str | None, scheme: str = SCHEME) -> list[str]:
    """The hex values of ``scheme`` entries in a ``v2=..,v2=..`` list (others ignored)."""
    values: list[str] = []
    for entry in (header or "").split(",")[:_MAX_ENTRIES]:
        name, sep, value = entry.strip().partition("=")
        if sep and name.strip() == scheme:
            values.append(value.strip())
    return values


def parse_timestamp(value: str | None) -> int:
    """Unix seconds from a header value; SignatureError when missing or not an integer."""
    if value is None or not value.strip():
        raise SignatureError("missing timestamp")
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise SignatureError("malformed timestamp")
    return int(text)


def check_timestamp(timestamp_s: int, now_s: float, tolerance_s: float) -> None:
    """SignatureError unless ``timestamp_s`` is within ``tolerance_s`` of ``now_s``.

    Fails closed: a clock or tolerance that is not a finite number (nan, inf, a string)
    never passes.
    """
    for name, value in (("clock", now_s), ("tolerance", tolerance_s)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SignatureError(f"{name} is not a number")
        if not math.isfinite(value):
            raise SignatureError(f"{name} is not finite")
    if tolerance_s < 0:
        raise SignatureError("tolerance is negative")
    if not abs(now_s - timestamp_s) <= tolerance_s:
        raise SignatureError(f"timestamp outside the {tolerance_s:g}s tolerance")


def _match(keys: list[bytes], purpose: str, payload: bytes, candidates: list[str]) -> bool:
    for key in keys:
        expected = purpose_hmac(key, purpose, payload) if purpose else _plain(key, payload)
        for candidate in candidates:
            if _is_hex(candidate) and hmac.compare_digest(expected, candidate.lower()):
                return True
    return False


def _plain(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(
    *,
    body: str | bytes,
    timestamp: str | None,
    signature: str | None,
    event_id: str | None,
    url: str,
    event_name: str | None,
    secrets: Secret | Iterable[Secret],
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a v2-signed request; return its timestamp (unix seconds).

    Header values are passed raw; ``secrets`` is one secret or several (rotation: any may
    match). Raises SignatureError with the reason (missing or malformed timestamp or
    event id, timestamp outside ``tolerance_s``, no ``v2`` signature, no match).
    """
    keys = _keys(secrets)
    timestamp_s = parse_timestamp(timestamp)
    check_timestamp(timestamp_s, now_s, tolerance_s)
    if not event_id:
        raise SignatureError("missing event id")
    candidates = parse_signatures(signature)
    if not candidates:
        raise SignatureError(f"no {SCHEME} signature")
    try:
        payload = signed_payload(
            event_id=event_id,
            url=url,
            event_name=event_name or "",
            timestamp_s=timestamp_s,
            body=body,
        )
    except ValueError:
        raise SignatureError("malformed signed field") from None
    if not _match(keys, WEBHOOK_PURPOSE, payload, candidates):
        raise SignatureError("signature does not match")
    return timestamp_s


def verify_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    url: str,
    secrets: Secret | Iterable[Secret],
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """``verify`` reading the four ``X-Streams-*`` headers from a case-insensitive mapping
    (aiohttp's ``request.headers``, Starlette's, ...)."""
    return verify(
        body=body,
        timestamp=headers.get(TIMESTAMP_HEADER),
        signature=headers.get(SIGNATURE_HEADER),
        event_id=headers.get(EVENT_ID_HEADER),
        url=url,
        event_name=headers.get(EVENT_NAME_HEADER),
        secrets=secrets,
        now_s=now_s,
        tolerance_s=tolerance_s,
    )


# --- Stripe (incoming provider webhooks) -------------------------------------------------


def stripe_signature(secret: Secret, timestamp_s: int, body: str | bytes) -> str:
    """Stripe's v1: hex HMAC-SHA256 of ``"<t>." + body`` (no purpose label: Stripe's)."""
    if not secret:
        raise ValueError("secret must not be empty")
    return _plain(_as_bytes(secret), f"{int(timestamp_s)}.".encode("ascii") + _as_bytes(body))


def verify_stripe(
    *,
    body: str | bytes,
    header: str | None,
    secrets: Secret | Iterable[Secret],
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a Stripe-style combined header ``t=<unix s>,v1=<hex>[,v1=<hex>]``.

    Same tolerance and failure rules as ``verify``; returns the timestamp.
    """
    keys = _keys(secrets)
    stamps = parse_signatures(header, scheme="t")
    if len(stamps) != 1:
        raise SignatureError("missing timestamp" if not stamps else "several timestamps")
    timestamp_s = parse_timestamp(stamps[0])
    check_timestamp(timestamp_s, now_s, tolerance_s)
    candidates = parse_signatures(header, scheme="v1")
    if not candidates:
        raise SignatureError("no v1 signature")
    payload = f"{timestamp_s}.".encode("ascii") + _as_bytes(body)
    if not _match(keys, "", payload, candidates):
        raise SignatureError("signature does not match")
    return timestamp_s


def _is_hex(value: str) -> bool:
    return len(value) == 64 and all(ch in _HEX_DIGITS for ch in value)


# --- secrets: placeholders refused, per-subscription lookup with rotation -----------------

PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "change_me",
        "changeit",
        "replace-me",
        "replaceme",
        "secret",
        "secrets",
        "password",
        "default",
        "example",
        "test",
        "testing",
        "dev",
        "todo",
        "xxx",
        "none",
        "null",
        "12345678",
    }
)


def check_secret(variable: str, value: str) -> str:
    """``value`` unless it is empty or a known placeholder; else ConfigError naming
    ``variable`` (the message never repeats the value)."""
    from streams.errors import ConfigError

    if not value.strip():
        raise ConfigError(f"{variable}: must not be empty")
    if value.strip().lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(
            f"{variable}: is a placeholder, not a secret; set a random value, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


class SigningKeys(Protocol):
    """Where the webhook job finds a subscription's secrets (current first, then the
    previous one during a rollover); empty when the subscription has none."""

    def secrets_for(self, subscription_id: str) -> Sequence[str]: ...


@dataclass(frozen=True)
class StaticSigningKeys:
    """Secrets from configuration: per subscription id, else the default ones."""

    default: tuple[str, ...] = ()
    per_subscription: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for keys in (self.default, *self.per_subscription.values()):
            if len(keys) > MAX_SECRETS or not all(keys):
                raise ValueError(f"1 to {MAX_SECRETS} non-empty secrets per subscription")

    def secrets_for(self, subscription_id: str) -> Sequence[str]:
        return self.per_subscription.get(subscription_id, self.default)
