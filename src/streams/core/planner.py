"""The routing decision of a failed event as a value: ``Retry`` or ``DeadLetter``.

Pure (style.md, 1): the clock (``now_ms``) and randomness (``rand``) are arguments; the
agents only carry the decision out. Classification of the error:

    EventValidationError            -> DeadLetter 'invalid'
    DecodeError                     -> DeadLetter 'undecodable'
    Rejected                        -> DeadLetter 'rejected'
    Unroutable                      -> DeadLetter 'unroutable'
    Deferred                        -> Retry (attempt not used) or DeadLetter 'expired'
    Permanent / ``retriable=False`` -> DeadLetter 'permanent'
    RetryAfter, Retryable, other    -> Retry (next attempt) or DeadLetter 'exhausted'

An at-most-once family never retries (``plan_at_most_once``): what would be a ``Retry``
(the last two rows) is DeadLetter 'at_most_once' instead.

Failure headers are replaced, never appended: the result's headers are a copy of the
input with at most the names in ``headers.FAILURE_HEADERS`` added (and ``headers.LANE``,
once, for a record first consumed from a priority lane's topic that lacks it), so feeding
them back attempt after attempt does not grow them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streams.core import headers as h
from streams.core.backoff import jittered_delay_ms, tier_for_delay_ms
from streams.core.errors import (
    DecodeError,
    DeferralKind,
    Deferred,
    EventValidationError,
    Rejected,
    RetryAfter,
    Unroutable,
)
from streams.core.policies import RetryPolicy
from streams.core.topology import dlq_topic, lane_of_topic, retry_topic

DEFERRED_ERROR_CLASS = "streams.errors.Deferred"
AT_MOST_ONCE = "at_most_once"  # the DLQ reason of an at-most-once family's retryable failure
_FOREVER_MS = 2**62  # an infinite max_defer_s


@dataclass(frozen=True)
class Retry:
    """Send the unchanged value to ``topic`` with ``headers``; run it at ``due_at_ms``.

    ``attempt`` is the attempt it will run as; ``deferred_by`` says what deferred it (rate
    limit, open circuit) when no attempt was used, else None.
    """

    topic: str
    tier_delay_ms: int
    due_at_ms: int
    attempt: int
    headers: dict[str, str]
    deferred_by: DeferralKind | None = None

    @property
    def deferred(self) -> bool:
        return self.deferred_by is not None


@dataclass(frozen=True)
class DeadLetter:
    """Send the unchanged value to the DLQ ``topic``; ``reason`` is one of DLQ_REASONS."""

    topic: str
    reason: str
    headers: dict[str, str]


@dataclass(frozen=True)
class _Context:
    family: str
    prefix: str
    headers: Mapping[str, str]
    origin: h.Origin
    now_ms: int


def plan_failure(
    *,
    family: str,
    prefix: str,
    retry: RetryPolicy,
    error: BaseException,
    headers: Mapping[str, str],
    origin: h.Origin,
    now_ms: int,
    rand: Callable[[], float] = random.random,
    default_max_defer_ms: int,
) -> Retry | DeadLetter:
    """Where a failed record goes next; times in ms since the epoch.

    ``headers`` are the record's decoded headers (never mutated); ``origin`` is the record
    being processed; ``default_max_defer_ms`` bounds deferrals whose error names no
    ``max_defer_s``, and caps a ``RetryAfter`` hint. Raises nothing for the error tree
    (a NaN delay counts as 0, an infinite one as longer than any budget).
    """
    ctx = _Context(family, prefix, headers, origin, now_ms)
    reason = _dead_letter_reason(error)
    if reason is not None:
        return _dead_letter(ctx, h.Failure.from_exception(error), reason)
    if isinstance(error, Deferred):
        return _plan_deferral(ctx, retry, error, default_max_defer_ms)
    return _plan_retry(ctx, retry, error, rand, default_max_defer_ms)


def plan_at_most_once(
    *,
    family: str,
    prefix: str,
    error: BaseException,
    headers: Mapping[str, str],
    origin: h.Origin,
    now_ms: int,
) -> DeadLetter:
    """The DLQ record of a failure in an at-most-once family (never retried, never deferred).

    An error that is never retried anyway keeps its reason (invalid, undecodable, rejected,
    unroutable, permanent); one that would have been retried or deferred (a rate limit, an
    open circuit) is dead-lettered with reason AT_MOST_ONCE, the deferral's cause in its
    error headers. ``headers`` are never mutated; raises nothing.
    """
    ctx = _Context(family, prefix, headers, origin, now_ms)
    reason = _dead_letter_reason(error)
    if reason is not None:
        return _dead_letter(ctx, h.Failure.from_exception(error), reason)
    if isinstance(error, Deferred):
        return _dead_letter(ctx, h.Failure(DEFERRED_ERROR_CLASS, error.reason), AT_MOST_ONCE)
    return _dead_letter(ctx, h.Failure.from_exception(error), AT_MOST_ONCE)


def _dead_letter_reason(error: BaseException) -> str | None:
    """The DLQ reason of an error that must not be retried, else None."""
    if isinstance(error, EventValidationError):
        return "invalid"
    if isinstance(error, DecodeError):
        return "undecodable"
    if isinstance(error, Rejected):
        return "rejected"
    if isinstance(error, Unroutable):
        return "unroutable"
    if isinstance(error, Deferred):
        return None
    if getattr(error, "retriable", True) is False:
        return "permanent"
    return None


def _plan_retry(
    ctx: _Context,
    retry: RetryPolicy,
    error: BaseException,
    rand: Callable[[], float],
    hint_cap_ms: int,
) -> Retry | DeadLetter:
    """The next attempt on the nominal tier, or DeadLetter 'exhausted'.

    A ``RetryAfter`` hint (capped at ``hint_cap_ms``) longer than the nominal delay also
    moves the record to the tier that fits the hint.
    """
    failure = h.Failure.from_exception(error)
    attempt = h.attempt_of(ctx.headers)
    if attempt >= retry.max_attempts:
        return _dead_letter(ctx, failure, "exhausted")
    next_attempt = attempt + 1
    tier_ms = retry.delay_ms_for(next_attempt)
    wait_ms = jittered_delay_ms(tier_ms, retry.jitter, rand)
    if isinstance(error, RetryAfter):
        hint_ms = seconds_to_ms(error.delay_s, cap_ms=hint_cap_ms)
        wait_ms = max(wait_ms, hint_ms)
        if hint_ms > tier_ms:
            tier_ms = tier_for_delay_ms(retry.tier_delays_ms, hint_ms)
    out = _failure_headers(ctx, failure)
    out[h.ATTEMPT] = str(next_attempt)
    out.pop(h.RATE_RESERVED, None)  # a new attempt pays for its tokens again
    return _retry(ctx, out, tier_ms, ctx.now_ms + wait_ms, next_attempt, deferred_by=None)


def _plan_deferral(
    ctx: _Context, retry: RetryPolicy, error: Deferred, default_max_defer_ms: int
) -> Retry | DeadLetter:
    """A wait that uses no attempt, or DeadLetter 'expired' past the deferral budget."""
    failure = h.Failure(DEFERRED_ERROR_CLASS, error.reason)
    max_defer_ms = default_max_defer_ms
    if error.max_defer_s is not None:
        max_defer_ms = seconds_to_ms(error.max_defer_s, cap_ms=_FOREVER_MS)
    delay_ms = seconds_to_ms(error.delay_s, cap_ms=max_defer_ms + 1)
    out = _failure_headers(ctx, failure)
    out[h.FIRST_DEFERRED_AT_MS] = str(first_deferred_at_ms(ctx.headers, ctx.now_ms))
    if deferral_expires(ctx.headers, ctx.now_ms, delay_ms, max_defer_ms):
        return _finish_dead_letter(ctx, out, "expired")
    out[h.DEFERRALS] = str(max(0, h.int_header(ctx.headers, h.DEFERRALS, 0)) + 1)
    if error.reserved:  # else a reservation made earlier stays (e.g. an open circuit)
        out[h.RATE_RESERVED] = "1"
    tier_ms = tier_for_delay_ms(retry.tier_delays_ms, delay_ms)
    attempt = h.attempt_of(ctx.headers)
    return _retry(ctx, out, tier_ms, ctx.now_ms + delay_ms, attempt, deferred_by=error.kind)


def first_deferred_at_ms(headers: Mapping[str, str], now_ms: int) -> int:
    """When the record was first deferred; ``now_ms`` if never (or the header is bad)."""
    first_ms = h.int_header(headers, h.FIRST_DEFERRED_AT_MS, -1)
    return first_ms if first_ms >= 0 else now_ms


def deferral_expires(
    headers: Mapping[str, str], now_ms: int, delay_ms: int, max_defer_ms: int
) -> bool:
    """True when waiting ``delay_ms`` more would pass the deferral budget (DLQ 'expired')."""
    return now_ms + delay_ms - first_deferred_at_ms(headers, now_ms) > max_defer_ms


def _retry(
    ctx: _Context,
    out: dict[str, str],
    tier_ms: int,
    due_at_ms: int,
    attempt: int,
    *,
    deferred_by: DeferralKind | None,
) -> Retry:
    out[h.DUE_AT_MS] = str(due_at_ms)
    out.pop(h.DLQ_REASON, None)
    topic = retry_topic(ctx.prefix, ctx.family, tier_ms)
    return Retry(topic, tier_ms, due_at_ms, attempt, out, deferred_by)


def _dead_letter(ctx: _Context, failure: h.Failure, reason: str) -> DeadLetter:
    return _finish_dead_letter(ctx, _failure_headers(ctx, failure), reason)


def _finish_dead_letter(ctx: _Context, out: dict[str, str], reason: str) -> DeadLetter:
    out[h.DLQ_REASON] = reason
    out.pop(h.DUE_AT_MS, None)
    out.pop(h.RATE_RESERVED, None)  # a replay is charged again
    return DeadLetter(dlq_topic(ctx.prefix, ctx.family), reason, out)


def _failure_headers(ctx: _Context, failure: h.Failure) -> dict[str, str]:
    """A copy of the record's headers with this failure's headers replaced.

    The ORIGINAL_* group is written as a whole, from ``ctx.origin``, only when
    ORIGINAL_TOPIC is absent or empty, so it keeps the first topic; LANE is derived from
    that topic when absent (the record keeps its lane through retries and redrive).
    ATTEMPT is normalised to the attempt the record ran as.
    """
    out = dict(ctx.headers)
    if not out.get(h.ORIGINAL_TOPIC):
        out.update(ctx.origin.headers())
    if not out.get(h.LANE):  # a producer other than the SDK wrote to the lane topic
        lane = lane_of_topic(ctx.prefix, ctx.family, out[h.ORIGINAL_TOPIC])
        if lane is not None:
            out[h.LANE] = lane
    if h.int_header(out, h.FIRST_FAILURE_AT_MS, -1) < 0:
        out[h.FIRST_FAILURE_AT_MS] = str(ctx.now_ms)
    out[h.FAILED_AT_MS] = str(ctx.now_ms)
    out[h.ATTEMPT] = str(h.attempt_of(ctx.headers))
    out.update(failure.headers())
    return out


def is_due(headers: Mapping[str, str], now_ms: int, skew_margin_ms: int) -> int:
    """Milliseconds to wait before running a retry-tier record (0 = due now).

    The due time is the DUE_AT_MS header, never the record timestamp; a record without a
    parseable one is due now. ``skew_margin_ms`` is added so that a worker whose clock
    runs up to that much ahead of the planner's still never runs a record early.
    Raises ValueError when ``skew_margin_ms`` is negative.
    """
    if skew_margin_ms < 0:
        raise ValueError(f"skew_margin_ms must be >= 0, got {skew_margin_ms}")
    due_at_ms = h.int_header(headers, h.DUE_AT_MS, -1)
    if due_at_ms < 0:
        return 0
    return max(0, due_at_ms + skew_margin_ms - now_ms)


def seconds_to_ms(delay_s: float, *, cap_ms: int) -> int:
    """Seconds to whole ms in [0, ``cap_ms``], rounded up (never shorter than asked).

    NaN and negatives give 0; infinity gives ``cap_ms``. A value a hair above a whole ms
    (from a ms -> s -> ms round trip: 1e-6 ms plus a few float ulps, which outgrow 1e-6 ms
    for delays past ~100 days) is not rounded up. Never raises.
    """
    if math.isnan(delay_s) or delay_s <= 0:
        return 0
    if delay_s * 1000 >= cap_ms:
        return cap_ms
    delay_ms = delay_s * 1000
    return min(cap_ms, math.ceil(delay_ms - (1e-6 + delay_ms * 1e-15)))
