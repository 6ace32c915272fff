"""Webhook signatures: HMAC-SHA256 over a timestamp and the raw body (Stripe-style).

The scheme, as a receiver implements it:

1. Read ``X-Streams-Timestamp`` (unix seconds, decimal) and the raw request body bytes
   (before any JSON parsing or re-encoding).
2. Build the signed payload: ``f"{timestamp}."`` as UTF-8 bytes followed by the body.
3. Compute ``hex(HMAC-SHA256(secret, signed_payload))`` with the shared secret (UTF-8).
4. ``X-Streams-Signature`` holds one or more comma-separated ``scheme=hex`` entries, e.g.
   ``v1=5257a8...``; the request is authentic when a ``v1`` entry equals the computed
   value (compare in constant time). Several ``v1`` entries appear while the sender
   rotates secrets; unknown schemes are ignored, so a new scheme can be added alongside.
5. Reject the request when the timestamp is further than the tolerance (default 300 s)
   from the receiver's clock, in either direction: it bounds replays of a captured
   request.

A receiver rotating its own secret verifies against several secrets (old and new).
``verify_stripe`` checks a Stripe ``Stripe-Signature`` header (``t=...,v1=...``) with the
same rules, for the payment family's incoming provider webhooks.

Pure functions: no clock is read here; callers pass ``now_s``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

SCHEME = "v1"
TIMESTAMP_HEADER = "X-Streams-Timestamp"
SIGNATURE_HEADER = "X-Streams-Signature"
DEFAULT_TOLERANCE_S = 300
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_ENTRIES = 16


class SignatureError(ValueError):
    """A signature did not verify; the message says why (never echoes a secret)."""


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def signed_payload(timestamp_s: int, body: str | bytes) -> bytes:
    """The bytes that are signed: ``b"<timestamp>." + body``."""
    return f"{int(timestamp_s)}.".encode("ascii") + _as_bytes(body)


def compute_signature(secret: str | bytes, timestamp_s: int, body: str | bytes) -> str:
    """Lower-case hex HMAC-SHA256 of the signed payload."""
    if not secret:
        raise ValueError("secret must not be empty")
    payload = signed_payload(timestamp_s, body)
    return hmac.new(_as_bytes(secret), payload, hashlib.sha256).hexdigest()


def signature_header(
    secrets: str | bytes | Sequence[str | bytes], timestamp_s: int, body: str | bytes
) -> str:
    """The ``X-Streams-Signature`` value: ``v1=<hex>``, one entry per secret (rotation)."""
    keys = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    if not keys:
        raise ValueError("at least one secret is required")
    return ",".join(f"{SCHEME}={compute_signature(k, timestamp_s, body)}" for k in keys)


def sign_headers(secret: str | bytes, timestamp_s: int, body: str | bytes) -> dict[str, str]:
    """``X-Streams-Timestamp`` and ``X-Streams-Signature`` for a request body."""
    return {
        TIMESTAMP_HEADER: str(int(timestamp_s)),
        SIGNATURE_HEADER: signature_header(secret, timestamp_s, body),
    }


def parse_signatures(header: str | None, scheme: str = SCHEME) -> list[str]:
    """The hex values of ``scheme`` entries in a ``v1=..,v1=..`` list (others ignored)."""
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


def verify(
    *,
    body: str | bytes,
    timestamp: str | None,
    signature: str | None,
    secrets: str | bytes | Iterable[str | bytes],
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a signed request; return its timestamp (unix seconds).

    ``timestamp`` and ``signature`` are the raw header values; ``secrets`` one secret or
    several (rotation: any may match). Raises SignatureError with the reason: missing or
    malformed timestamp, timestamp outside ``tolerance_s`` of ``now_s``, no ``v1``
    signature, or no signature matching any secret. Comparisons are constant-time.
    """
    keys = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    if not keys or not all(keys):
        raise ValueError("at least one non-empty secret is required")
    timestamp_s = parse_timestamp(timestamp)
    if abs(now_s - timestamp_s) > tolerance_s:
        raise SignatureError(f"timestamp outside the {tolerance_s:g}s tolerance")
    candidates = parse_signatures(signature)
    if not candidates:
        raise SignatureError(f"no {SCHEME} signature")
    payload = signed_payload(timestamp_s, body)
    for key in keys:
        expected = hmac.new(_as_bytes(key), payload, hashlib.sha256).hexdigest()
        for candidate in candidates:
            if _is_hex(candidate) and hmac.compare_digest(expected, candidate.lower()):
                return timestamp_s
    raise SignatureError("signature does not match")


def verify_stripe(
    *,
    body: str | bytes,
    header: str | None,
    secrets: str | bytes | Iterable[str | bytes],
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a Stripe-style combined header ``t=<unix s>,v1=<hex>[,v1=<hex>]``.

    Same payload, tolerance and errors as ``verify``; returns the timestamp.
    """
    stamps = parse_signatures(header, scheme="t")
    if len(stamps) != 1:
        raise SignatureError("missing timestamp" if not stamps else "several timestamps")
    return verify(
        body=body,
        timestamp=stamps[0],
        signature=header,
        secrets=secrets,
        now_s=now_s,
        tolerance_s=tolerance_s,
    )


def _is_hex(value: str) -> bool:
    return len(value) == 64 and all(ch in _HEX_DIGITS for ch in value)
