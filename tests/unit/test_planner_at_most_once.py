"""planner: an at-most-once family's failures, all dead-lettered (never a retry tier)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from streams.core import headers as h
from streams.core.planner import AT_MOST_ONCE, DEFERRED_ERROR_CLASS, DeadLetter, plan_at_most_once
from streams.errors import (
    DecodeError,
    Deferred,
    EventValidationError,
    Permanent,
    Rejected,
    Retryable,
    RetryAfter,
)

NOW_MS = 1_700_000_000_000
DLQ = "dev.email.dlq"
MAIN_ORIGIN = h.Origin("dev.email", 3, 42, NOW_MS - 5_000)


def plan(error: BaseException, headers: Mapping[str, str] | None = None) -> DeadLetter:
    return plan_at_most_once(
        family="email",
        prefix="dev.",
        error=error,
        headers=headers or {},
        origin=MAIN_ORIGIN,
        now_ms=NOW_MS,
    )


@pytest.mark.parametrize(
    "error",
    [Retryable("smtp 451"), ValueError("boom"), RetryAfter(0.5), TimeoutError()],
)
def test_what_would_be_retried_is_dead_lettered_at_most_once(error: Exception) -> None:
    decision = plan(error)
    assert (decision.topic, decision.reason) == (DLQ, AT_MOST_ONCE)
    assert decision.headers[h.DLQ_REASON] == AT_MOST_ONCE
    assert decision.headers[h.ERROR_CLASS].endswith(type(error).__name__)
    assert decision.headers[h.ATTEMPT] == "1"  # the attempt it ran as: none follows
    assert h.DUE_AT_MS not in decision.headers
    assert AT_MOST_ONCE in h.DLQ_REASONS


def test_a_deferral_is_dead_lettered_with_its_cause() -> None:
    headers = {h.RATE_RESERVED: "1", h.DUE_AT_MS: str(NOW_MS - 1)}
    decision = plan(Deferred(5, "rate limit per_user", kind="rate_limited", reserved=True), headers)
    assert decision.reason == AT_MOST_ONCE
    assert decision.headers[h.ERROR_CLASS] == DEFERRED_ERROR_CLASS
    assert decision.headers[h.ERROR_MESSAGE] == "rate limit per_user"
    assert h.RATE_RESERVED not in decision.headers  # a replay pays for its tokens again
    assert h.DUE_AT_MS not in decision.headers


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DecodeError("bad magic byte"), "undecodable"),
        (EventValidationError("to: not an address"), "invalid"),
        (Rejected("over the limit"), "rejected"),
        (Permanent("mailbox does not exist"), "permanent"),
    ],
)
def test_errors_never_retried_anyway_keep_their_reason(error: Exception, reason: str) -> None:
    assert plan(error).reason == reason


def test_failure_headers_name_the_origin_and_input_is_not_mutated() -> None:
    headers = {h.EVENT_ID: "e1", h.ATTEMPT: "1"}
    before = dict(headers)
    decision = plan(Retryable("down"), headers)
    assert headers == before
    assert decision.headers[h.ORIGINAL_TOPIC] == "dev.email"
    assert decision.headers[h.ORIGINAL_OFFSET] == "42"
    assert decision.headers[h.FAILED_AT_MS] == str(NOW_MS)
    assert decision.headers[h.EVENT_ID] == "e1"
