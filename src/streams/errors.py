"""The error tree.

Handler outcomes classify themselves (style: dramatiq/aiokafka): every error carries a
``retriable`` flag, and the planner turns it into a retry-tier or dead-letter decision.
Unknown exceptions are retryable; validation errors are permanent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.publish.outgoing import PublishResult


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

    ``delay_s`` is how long it must wait; ``reason`` names what deferred it; ``reserved``:
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
        reserved: bool = False,
    ) -> None:
        super().__init__(f"deferred {delay_s:g}s: {reason}")
        self.delay_s = float(delay_s)
        self.reason = reason
        self.max_defer_s = max_defer_s  # total deferral allowed; past it: DLQ reason 'expired'
        self.reserved = reserved


class Rejected(HandlerError):
    """Refused by policy (e.g. a rate limit whose family rejects): DLQ reason ``rejected``."""

    retriable = False


# --- configuration and contracts --------------------------------------------------------


class ConfigError(StreamsError):
    """Invalid configuration (topics.yaml, settings, schema files): names file, path, reason."""


class CatalogError(ConfigError):
    """topics.yaml is invalid."""


class SchemaError(ConfigError):
    """A schema file is invalid or a new schema version breaks existing readers."""


class TopologyError(StreamsError):
    """The cluster does not match the catalog (missing topic, partition mismatch, ...)."""


# --- producing --------------------------------------------------------------------------


class PublishError(StreamsError):
    """Base of the publisher's errors."""


class UnknownEventType(PublishError):
    """The event type is not declared in ``schemas/``."""


class InvalidPayload(PublishError):
    """The payload fails validation; ``errors`` lists ``(field path, reason)`` pairs."""

    def __init__(self, event_type: str, errors: list[tuple[str, str]]) -> None:
        detail = "; ".join(f"{path}: {reason}" for path, reason in errors)
        super().__init__(f"invalid {event_type} payload: {detail}")
        self.event_type = event_type
        self.errors = errors


class EventTooLarge(PublishError):
    """The encoded event exceeds the family's ``max_message_bytes`` less the header reserve."""


class BrokerUnavailable(PublishError):
    """The broker did not answer (or did not acknowledge) within the timeout."""


class DeliveryFailed(PublishError):
    """The broker refused the record; the message names the Kafka error."""


class BatchPublishError(PublishError):
    """Some items of a batch failed; ``errors`` maps item index -> error.

    ``results[i]`` is the PublishResult of item i when the broker acknowledged it, else None;
    an item with a result was stored, an item without one was not (or, for
    ``BrokerUnavailable``, was not acknowledged in time). When ``sent`` is False a check
    before sending failed (validation, a missing topic) and nothing of the batch reached
    the broker.
    """

    def __init__(
        self,
        errors: dict[int, PublishError],
        results: list[PublishResult | None],
        *,
        sent: bool,
    ) -> None:
        self.errors = errors
        self.results = results
        self.sent = sent
        total = len(results)
        first = min(errors)
        head = (
            f"{len(errors)} of {total} items refused; nothing was sent"
            if not sent
            else f"{len(errors)} of {total} items not delivered "
            f"({total - len(errors)} acknowledged)"
        )
        super().__init__(f"{head}; first: item {first}: {errors[first]}")


# --- consuming --------------------------------------------------------------------------


class DecodeError(StreamsError):
    """A record could not be decoded (bad framing, unknown fingerprint, invalid body).

    Routed to the DLQ with reason ``undecodable``.
    """


class EventValidationError(DecodeError):
    """A record decoded but its content fails the event model: DLQ reason ``invalid``."""


# --- reading the DLQ --------------------------------------------------------------------


class DlqError(StreamsError):
    """A DLQ read that cannot be done as asked (bad position, missing topic, ...)."""
