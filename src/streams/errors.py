"""The error tree: one import path for every error streams raises.

Handler outcomes (``Retryable``, ``Permanent``, ``RetryAfter``, ``Deferred``, ...) classify
themselves; they are defined in ``streams.core.errors`` (see there) and re-exported here
beside the configuration, SDK and DLQ errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The handler outcomes (and StreamsError, their base) live in core, which imports only the
# standard library; they are re-exported here so every error has one import path.
from streams.core.errors import (
    Cancelled,
    DecodeError,
    DeferralKind,
    Deferred,
    EventValidationError,
    HandlerError,
    Permanent,
    Rejected,
    Retryable,
    RetryAfter,
    StreamsError,
    Suppressed,
    Unroutable,
)

if TYPE_CHECKING:
    from streams.publish.outgoing import PublishResult

__all__ = [
    "BatchPublishError",
    "BrokerUnavailable",
    "Cancelled",
    "CatalogError",
    "ConfigError",
    "DecodeError",
    "DeferralKind",
    "Deferred",
    "DeliveryFailed",
    "DlqError",
    "EventTooLarge",
    "EventValidationError",
    "HandlerError",
    "InvalidPayload",
    "Permanent",
    "PublishError",
    "Rejected",
    "RetryAfter",
    "Retryable",
    "SchemaError",
    "StreamsError",
    "Suppressed",
    "TopologyError",
    "UnknownEventType",
    "Unroutable",
]


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


# --- reading the DLQ --------------------------------------------------------------------


class DlqError(StreamsError):
    """A DLQ read that cannot be done as asked (bad position, missing topic, ...)."""
