"""The handler-outcome errors: they classify themselves (style: dramatiq/aiokafka).

Every error carries a ``retriable`` flag, and the planner (``core.planner``) turns it into a
retry-tier or dead-letter decision. Unknown exceptions are retryable; validation errors are
permanent. ``streams.errors`` re-exports these beside the SDK's and the configuration's.
"""

from __future__ import annotations

from typing import Literal

DeferralKind = Literal["rate_limited", "circuit_open", "quiet_hours", "other"]
"""What deferred an event: the ``reason`` label of ``streams_deferrals_total``."""
DEFERRAL_KINDS: tuple[DeferralKind, ...] = ("rate_limited", "circuit_open", "quiet_hours", "other")


class StreamsError(Exception):
    """Base class of every error raised by streams."""


# --- handler outcomes -------------------------------------------------------------------


class HandlerError(StreamsError):
    """Base of the outcomes a handler may raise on purpose."""

    retriable: bool = True


class Retryable(HandlerError):
    """A transient failure: the event climbs the retry ladder."""

    retriable = True


class Permanent(HandlerError):
    """A failure that retrying cannot fix: the event goes to the DLQ at once."""

    retriable = False


class RetryAfter(Retryable):
    """A transient failure with a known wait (HTTP ``Retry-After``, a provider's hint).

    ``delay_s`` is the minimum wait before the next attempt, in seconds.
    """

    def __init__(self, delay_s: float, message: str = "") -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        super().__init__(message or f"retry after {delay_s:g}s")
        self.delay_s = float(delay_s)


class Deferred(HandlerError):
    """Not a failure: the event must wait (rate limit, open circuit) without using an attempt.

    ``delay_s`` is how long it must wait; ``reason`` names what deferred it (text for the
    failure headers) and ``kind`` classifies it (the deferral metric's label); ``reserved``:
    its rate-limit tokens are already taken (the deferred record says so in a header and is
    not charged again when it comes back).
    """

    retriable = True

    def __init__(
        self,
        delay_s: float,
        reason: str,
        max_defer_s: float | None = None,
        *,
        kind: DeferralKind = "other",
        reserved: bool = False,
    ) -> None:
        if kind not in DEFERRAL_KINDS:
            raise ValueError(f"kind must be one of {DEFERRAL_KINDS}, got {kind!r}")
        super().__init__(f"deferred {delay_s:g}s: {reason}")
        self.delay_s = float(delay_s)
        self.reason = reason
        self.kind: DeferralKind = kind
        self.max_defer_s = max_defer_s  # total deferral allowed; past it: DLQ reason 'expired'
        self.reserved = reserved


class Suppressed(HandlerError):
    """Not a failure: the event must not be delivered (no consent, opted out, a suppressed
    address). Acked like done, counted under outcome ``suppressed``; ``reason`` says why."""

    retriable = False


class Rejected(HandlerError):
    """Refused by policy (e.g. a rate limit whose family rejects): DLQ reason ``rejected``."""

    retriable = False


class Unroutable(HandlerError):
    """The retry tier refused the record (too large with its failure headers, invalid for
    that topic): it cannot climb the ladder. DLQ reason ``unroutable``."""

    retriable = False


class Cancelled(HandlerError):
    """The event was cancelled (``DELETE /v1/events/{id}``): a handler that honours
    ``ctx.cancel`` raises it (``ctx.cancel.raise_if_set()``). Acked with outcome
    ``cancelled``, never retried."""

    retriable = False


class DecodeError(StreamsError):
    """A record could not be decoded (bad framing, unknown fingerprint, invalid body).

    Routed to the DLQ with reason ``undecodable``.
    """


class EventValidationError(DecodeError):
    """A record decoded but its content fails the event model: DLQ reason ``invalid``."""


# Their public import path is ``streams.errors``, and that is the class name failure headers
# record (``streams-error-class``, hence the error fingerprint): keep it stable.
for _outcome in (
    StreamsError,
    HandlerError,
    Retryable,
    Permanent,
    RetryAfter,
    Deferred,
    Suppressed,
    Rejected,
    Cancelled,
    DecodeError,
    EventValidationError,
):
    _outcome.__module__ = "streams.errors"
