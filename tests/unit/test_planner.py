"""planner: routing decisions and failure headers, with a frozen clock and a fixed rand."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.catalog import RetrySpec
from streams.core import headers as h
from streams.core.planner import (
    DEFERRED_ERROR_CLASS,
    DeadLetter,
    Retry,
    is_due,
    plan_failure,
    seconds_to_ms,
)
from streams.errors import (
    DecodeError,
    DeferralKind,
    Deferred,
    EventValidationError,
    Permanent,
    Rejected,
    Retryable,
    RetryAfter,
)

NOW_MS = 1_700_000_000_000
DAY_MS = 86_400_000
PREFIX = "dev."
FAMILY = "email"
DLQ = "dev.email.dlq"
TIER_1S, TIER_10S, TIER_60S = "dev.email.retry.1s", "dev.email.retry.10s", "dev.email.retry.1m"
POLICY = RetrySpec.model_validate(
    {"delays": ["1s", "10s", "60s"], "jitter": 0.1, "max_attempts": 4}
).policy()
MAIN_ORIGIN = h.Origin("dev.email", 3, 42, NOW_MS - 5_000)
TIER_ORIGIN = h.Origin(TIER_1S, 3, 7, NOW_MS - 1_000)


def fixed(value: float) -> Callable[[], float]:
    """A frozen ``rand``."""
    return lambda: value


def plan(
    error: BaseException,
    headers: Mapping[str, str] | None = None,
    *,
    now_ms: int = NOW_MS,
    rand_value: float = 0.5,
    origin: h.Origin = MAIN_ORIGIN,
    default_max_defer_ms: int = DAY_MS,
) -> Retry | DeadLetter:
    return plan_failure(
        family=FAMILY,
        prefix=PREFIX,
        retry=POLICY,
        error=error,
        headers=headers or {},
        origin=origin,
        now_ms=now_ms,
        rand=fixed(rand_value),
        default_max_defer_ms=default_max_defer_ms,
    )


class NotRetriable(Exception):
    retriable = False  # e.g. an aiokafka error that classifies itself


class Retriable(Exception):
    retriable = True


# --- classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DecodeError("bad magic byte"), "undecodable"),
        (EventValidationError("to: not an address"), "invalid"),
        (Rejected("over the limit"), "rejected"),
        (Permanent("mailbox does not exist"), "permanent"),
        (NotRetriable("unsupported version"), "permanent"),
    ],
)
def test_errors_that_go_straight_to_the_dlq(error: Exception, reason: str) -> None:
    decision = plan(error)
    assert decision == DeadLetter(DLQ, reason, decision.headers)
    assert decision.headers[h.DLQ_REASON] == reason
    assert h.DUE_AT_MS not in decision.headers
    assert reason in h.DLQ_REASONS


@pytest.mark.parametrize(
    "error",
    [Retryable("smtp 451"), ValueError("boom"), Retriable("x"), RetryAfter(0.5), KeyError("k")],
)
def test_retryable_errors_use_the_next_attempt(error: Exception) -> None:
    decision = plan(error)
    assert isinstance(decision, Retry)
    assert (decision.topic, decision.attempt, decision.deferred) == (TIER_1S, 2, False)


# --- the retry ladder -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt_header", "topic", "tier_ms", "attempt"),
    [
        (None, TIER_1S, 1_000, 2),  # first run failed
        ("1", TIER_1S, 1_000, 2),
        ("2", TIER_10S, 10_000, 3),
        ("3", TIER_60S, 60_000, 4),
        ("garbage", TIER_1S, 1_000, 2),  # malformed counts as the first run
        ("0", TIER_1S, 1_000, 2),
        ("-7", TIER_1S, 1_000, 2),
    ],
)
def test_retry_ladder(attempt_header: str | None, topic: str, tier_ms: int, attempt: int) -> None:
    headers = {} if attempt_header is None else {h.ATTEMPT: attempt_header}
    decision = plan(Retryable("try again"), headers)
    assert decision == Retry(topic, tier_ms, NOW_MS + tier_ms, attempt, decision.headers, None)
    assert decision.headers[h.ATTEMPT] == str(attempt)
    assert decision.headers[h.DUE_AT_MS] == str(NOW_MS + tier_ms)


@pytest.mark.parametrize("attempt_header", ["4", "5", "99"])
def test_exhausted_at_max_attempts(attempt_header: str) -> None:
    decision = plan(Retryable("still down"), {h.ATTEMPT: attempt_header})
    assert isinstance(decision, DeadLetter)
    assert (decision.topic, decision.reason) == (DLQ, "exhausted")
    assert decision.headers[h.ATTEMPT] == attempt_header  # not bumped past the last run


@pytest.mark.parametrize(
    ("rand_value", "due_in_ms"),
    [(0.0, 900), (0.25, 950), (0.5, 1_000), (1.0, 1_100)],
)
def test_jitter_moves_the_due_time_not_the_tier(rand_value: float, due_in_ms: int) -> None:
    decision = plan(Retryable("x"), rand_value=rand_value)
    assert isinstance(decision, Retry)
    assert (decision.topic, decision.due_at_ms) == (TIER_1S, NOW_MS + due_in_ms)


@pytest.mark.parametrize(
    ("delay_s", "rand_value", "attempt_header", "topic", "due_in_ms"),
    [
        (0.5, 0.5, "1", TIER_1S, 1_000),  # the ladder's wait is longer
        (0.95, 0.0, "1", TIER_1S, 950),  # hint beats the jittered 900
        (1.05, 0.0, "1", TIER_10S, 1_050),  # hint above the tier: the tier that fits it
        (2.0, 0.5, "1", TIER_10S, 2_000),
        (2.0, 0.5, "2", TIER_10S, 10_000),  # nominal 10s wins
        (600.0, 0.5, "1", TIER_60S, 600_000),  # longer than every tier: the largest
        (10.0**9, 0.5, "1", TIER_60S, DAY_MS),  # capped at the deferral budget
        (math.inf, 0.5, "1", TIER_60S, DAY_MS),
    ],
)
def test_retry_after(
    delay_s: float, rand_value: float, attempt_header: str, topic: str, due_in_ms: int
) -> None:
    decision = plan(RetryAfter(delay_s), {h.ATTEMPT: attempt_header}, rand_value=rand_value)
    assert isinstance(decision, Retry)
    assert (decision.topic, decision.due_at_ms) == (topic, NOW_MS + due_in_ms)
    assert decision.attempt == int(attempt_header) + 1
    assert not decision.deferred


def test_retry_after_is_exhausted_like_any_retry() -> None:
    decision = plan(RetryAfter(1.0), {h.ATTEMPT: "4"})
    assert isinstance(decision, DeadLetter)
    assert decision.reason == "exhausted"


# --- deferrals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "headers", "topic", "due_in_ms", "attempt", "deferrals", "first_deferred_at_ms"),
    [
        (Deferred(5, "rate limit per_user"), {}, TIER_10S, 5_000, 1, "1", NOW_MS),
        (Deferred(0.2, "circuit smtp"), {}, TIER_1S, 200, 1, "1", NOW_MS),
        (Deferred(1, "r"), {}, TIER_1S, 1_000, 1, "1", NOW_MS),  # exact tier fit
        (Deferred(120, "r"), {}, TIER_60S, 120_000, 1, "1", NOW_MS),  # beyond every tier
        (Deferred(0, "r"), {}, TIER_1S, 0, 1, "1", NOW_MS),
        (Deferred(-3, "r"), {}, TIER_1S, 0, 1, "1", NOW_MS),  # negative wait: due now
        (Deferred(math.nan, "r"), {}, TIER_1S, 0, 1, "1", NOW_MS),
        (Deferred(0.0015, "r"), {}, TIER_1S, 2, 1, "1", NOW_MS),  # rounded up, never early
        (
            Deferred(5, "r"),
            {h.ATTEMPT: "3", h.DEFERRALS: "2", h.FIRST_DEFERRED_AT_MS: str(NOW_MS - 60_000)},
            TIER_10S,
            5_000,
            3,
            "3",
            NOW_MS - 60_000,
        ),
        (  # deferral at the last attempt still does not use it
            Deferred(5, "r"),
            {h.ATTEMPT: "4"},
            TIER_10S,
            5_000,
            4,
            "1",
            NOW_MS,
        ),
        (  # malformed counters restart
            Deferred(5, "r"),
            {h.DEFERRALS: "x", h.FIRST_DEFERRED_AT_MS: "y"},
            TIER_10S,
            5_000,
            1,
            "1",
            NOW_MS,
        ),
        (  # a negative first-deferral time would expire at once: restarted instead
            Deferred(5, "r"),
            {h.DEFERRALS: "-3", h.FIRST_DEFERRED_AT_MS: "-5"},
            TIER_10S,
            5_000,
            1,
            "1",
            NOW_MS,
        ),
    ],
)
def test_deferral_keeps_the_attempt(
    error: Deferred,
    headers: dict[str, str],
    topic: str,
    due_in_ms: int,
    attempt: int,
    deferrals: str,
    first_deferred_at_ms: int,
) -> None:
    decision = plan(error, headers, rand_value=0.0)  # rand must not pull a deferral earlier
    assert isinstance(decision, Retry)
    assert decision.deferred
    assert (decision.topic, decision.due_at_ms, decision.attempt) == (
        topic,
        NOW_MS + due_in_ms,
        attempt,
    )
    assert decision.headers[h.ATTEMPT] == str(attempt)
    assert decision.headers[h.DEFERRALS] == deferrals
    assert decision.headers[h.FIRST_DEFERRED_AT_MS] == str(first_deferred_at_ms)
    assert decision.headers[h.ERROR_CLASS] == DEFERRED_ERROR_CLASS
    assert decision.headers[h.ERROR_MESSAGE] == error.reason


@pytest.mark.parametrize(
    ("delay_s", "max_defer_s", "deferred_for_ms", "default_max_defer_ms", "expired"),
    [
        (2, 3600, 3_598_000, DAY_MS, False),  # lands exactly on the budget
        (2, 3600, 3_598_001, DAY_MS, True),  # one ms past it
        (2, None, DAY_MS - 2_000, DAY_MS, False),  # the default budget applies
        (2, None, DAY_MS - 1_999, DAY_MS, True),
        (2, None, 0, 1_999, True),  # the first deferral can already be too long
        (0, 0, 0, DAY_MS, False),
        (math.inf, None, 0, DAY_MS, True),
        (1, math.inf, 10 * DAY_MS, DAY_MS, False),  # an unlimited budget
    ],
)
def test_deferral_budget(
    delay_s: float,
    max_defer_s: float | None,
    deferred_for_ms: int,
    default_max_defer_ms: int,
    expired: bool,
) -> None:
    first_deferred_at_ms = NOW_MS - deferred_for_ms
    headers = {h.FIRST_DEFERRED_AT_MS: str(first_deferred_at_ms), h.DEFERRALS: "4"}
    decision = plan(
        Deferred(delay_s, "rate limit", max_defer_s),
        headers,
        default_max_defer_ms=default_max_defer_ms,
    )
    if expired:
        assert isinstance(decision, DeadLetter)
        assert (decision.topic, decision.reason) == (DLQ, "expired")
        assert decision.headers[h.DEFERRALS] == "4"  # the refused deferral is not counted
        assert h.DUE_AT_MS not in decision.headers
    else:
        assert isinstance(decision, Retry)
        assert decision.headers[h.DEFERRALS] == "5"
    assert decision.headers[h.FIRST_DEFERRED_AT_MS] == str(first_deferred_at_ms)


def test_a_rate_limit_reservation_travels_with_deferrals_only() -> None:
    reserved = plan(Deferred(2, "rate limit per_user", 3600, reserved=True))
    assert isinstance(reserved, Retry)
    assert reserved.headers[h.RATE_RESERVED] == "1"
    # an open circuit defers it again: the tokens it holds stay reserved
    circuit = plan(Deferred(4, "circuit smtp open"), reserved.headers)
    assert isinstance(circuit, Retry) and circuit.headers[h.RATE_RESERVED] == "1"
    # the handler then fails: the next attempt is charged again
    retried = plan(Retryable("451 greylisted"), circuit.headers)
    assert isinstance(retried, Retry) and h.RATE_RESERVED not in retried.headers
    # to the DLQ: a replay is charged again
    dead = plan(Permanent("550 no such user"), circuit.headers)
    assert isinstance(dead, DeadLetter) and h.RATE_RESERVED not in dead.headers
    plain = plan(Deferred(2, "circuit smtp open"))
    assert isinstance(plain, Retry) and h.RATE_RESERVED not in plain.headers


# --- headers --------------------------------------------------------------------------------


def test_first_failure_headers() -> None:
    event = {h.EVENT_ID: "e-1", h.TRACEPARENT: "00-abc-def-01", "x-foreign": "kept"}
    decision = plan(Retryable("smtp 451 for bob@example.com"), event)
    assert isinstance(decision, Retry)
    assert decision.headers == {
        **event,
        **MAIN_ORIGIN.headers(),
        h.ERROR_CLASS: "streams.errors.Retryable",
        h.ERROR_MESSAGE: "smtp 451 for <email>",  # scrubbed
        h.ERROR_FINGERPRINT: h.error_fingerprint(
            "streams.errors.Retryable", "smtp 451 for bob@example.com"
        ),
        h.ATTEMPT: "2",
        h.FIRST_FAILURE_AT_MS: str(NOW_MS),
        h.FAILED_AT_MS: str(NOW_MS),
        h.DUE_AT_MS: str(NOW_MS + 1_000),
    }


def test_later_failure_replaces_and_keeps_the_first_origin() -> None:
    first = plan(Retryable("first"), {h.EVENT_ID: "e-1"})
    later_ms = NOW_MS + 1_000
    second = plan(ValueError("second"), first.headers, now_ms=later_ms, origin=TIER_ORIGIN)
    assert isinstance(second, Retry)
    for name, value in MAIN_ORIGIN.headers().items():
        assert second.headers[name] == value  # not the retry tier
    assert second.headers[h.FIRST_FAILURE_AT_MS] == str(NOW_MS)
    assert second.headers[h.FAILED_AT_MS] == str(later_ms)
    assert second.headers[h.ERROR_CLASS] == "ValueError"
    assert second.headers[h.ERROR_MESSAGE] == "second"
    assert second.headers[h.DUE_AT_MS] == str(later_ms + 10_000)
    assert set(second.headers) == set(first.headers)  # replaced, not appended


@pytest.mark.parametrize(
    ("headers", "expected_topic", "expected_first_failure_ms"),
    [
        ({h.ORIGINAL_TOPIC: ""}, MAIN_ORIGIN.topic, NOW_MS),  # empty counts as absent
        ({h.FIRST_FAILURE_AT_MS: "soon"}, MAIN_ORIGIN.topic, NOW_MS),  # malformed: replaced
        ({h.ORIGINAL_TOPIC: "dev.other", h.FIRST_FAILURE_AT_MS: "5"}, "dev.other", 5),
    ],
)
def test_set_once_headers(
    headers: dict[str, str], expected_topic: str, expected_first_failure_ms: int
) -> None:
    decision = plan(Retryable("x"), headers)
    assert decision.headers[h.ORIGINAL_TOPIC] == expected_topic
    assert decision.headers[h.FIRST_FAILURE_AT_MS] == str(expected_first_failure_ms)


def test_dead_letter_drops_the_due_time_and_retry_drops_a_stale_dlq_reason() -> None:
    dead = plan(Permanent("no"), {h.DUE_AT_MS: str(NOW_MS), h.ATTEMPT: "2"})
    assert h.DUE_AT_MS not in dead.headers
    assert dead.headers[h.DLQ_REASON] == "permanent"
    replayed = dict(dead.headers, **{h.ATTEMPT: "1"})
    again = plan(Retryable("x"), replayed)
    assert isinstance(again, Retry)
    assert h.DLQ_REASON not in again.headers


def test_input_headers_are_not_mutated() -> None:
    headers = {h.ATTEMPT: "2", h.EVENT_ID: "e-1"}
    snapshot = dict(headers)
    for error in (Retryable("x"), Permanent("x"), Deferred(1, "r")):
        plan(error, headers)
    assert headers == snapshot


def test_long_messages_are_bounded() -> None:
    decision = plan(Retryable("é" * 10_000))
    assert len(decision.headers[h.ERROR_MESSAGE].encode()) <= h.MAX_ERROR_MESSAGE_BYTES


# --- header growth (property) ---------------------------------------------------------------

_NUMERIC_MAX_BYTES = 20
_FAILURE_VALUE_MAX_BYTES = {
    h.ERROR_CLASS: h.MAX_ERROR_CLASS_BYTES,
    h.ERROR_MESSAGE: h.MAX_ERROR_MESSAGE_BYTES,
    h.ERROR_FINGERPRINT: 16,
    h.ORIGINAL_TOPIC: 249,  # Kafka's longest topic name
    h.DLQ_REASON: max(len(r) for r in h.DLQ_REASONS),
}


def _size_bytes(headers: Mapping[str, str]) -> int:
    return sum(len(name.encode()) + len(value.encode()) for name, value in headers.items())


def _bound_bytes(initial: Mapping[str, str]) -> int:
    """The initial headers plus every failure header at its largest: independent of N."""
    failure_bytes = sum(
        len(name.encode()) + _FAILURE_VALUE_MAX_BYTES.get(name, _NUMERIC_MAX_BYTES)
        for name in h.FAILURE_HEADERS
    )
    return _size_bytes(initial) + failure_bytes


_MESSAGES = st.one_of(st.text(max_size=50), st.text(min_size=600, max_size=3_000))


def _errors() -> st.SearchStrategy[BaseException]:
    return st.one_of(
        st.builds(Retryable, _MESSAGES),
        st.builds(ValueError, _MESSAGES),
        st.builds(Permanent, _MESSAGES),
        st.builds(DecodeError, _MESSAGES),
        st.builds(RetryAfter, st.floats(min_value=0, max_value=7_200), _MESSAGES),
        st.builds(
            Deferred,
            st.floats(min_value=0, max_value=7_200),
            _MESSAGES,
            st.none() | st.floats(min_value=0, max_value=86_400),
        ),
    )


_INITIAL_HEADERS = st.lists(
    st.tuples(st.sampled_from([h.EVENT_ID, h.TRACEPARENT, "x-a", "x-b"]), st.text(max_size=40)),
    max_size=4,
).map(h.decode)


@settings(database=None, max_examples=150, deadline=None)
@given(
    initial=_INITIAL_HEADERS,
    steps=st.lists(
        st.tuples(_errors(), st.integers(0, 10**7), st.floats(0, 1)), min_size=1, max_size=40
    ),
)
def test_headers_stay_bounded_over_any_number_of_steps(
    initial: dict[str, str], steps: list[tuple[BaseException, int, float]]
) -> None:
    bound_bytes = _bound_bytes(initial)
    allowed_names = set(initial) | set(h.FAILURE_HEADERS)
    headers: dict[str, str] = dict(initial)
    origin, now_ms = MAIN_ORIGIN, NOW_MS
    for error, elapsed_ms, rand_value in steps:
        now_ms += elapsed_ms
        decision = plan(error, headers, now_ms=now_ms, rand_value=rand_value, origin=origin)
        headers = decision.headers
        assert set(headers) <= allowed_names
        assert _size_bytes(headers) <= bound_bytes
        assert len(headers[h.ERROR_MESSAGE].encode()) <= h.MAX_ERROR_MESSAGE_BYTES
        assert headers[h.ORIGINAL_TOPIC] == MAIN_ORIGIN.topic
        for name, value in initial.items():
            assert headers[name] == value  # event and foreign headers travel unchanged
        origin = h.Origin(decision.topic, 3, 0, now_ms)


# --- due times --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "skew_margin_ms", "wait_ms"),
    [
        ({}, 0, 0),  # no due time: due now
        ({}, 500, 0),
        ({h.DUE_AT_MS: "soon"}, 0, 0),  # unparseable: due now
        ({h.DUE_AT_MS: ""}, 0, 0),
        ({h.DUE_AT_MS: "-5"}, 0, 0),
        ({h.DUE_AT_MS: str(NOW_MS + 5_000)}, 0, 5_000),
        ({h.DUE_AT_MS: str(NOW_MS + 5_000)}, 200, 5_200),  # never early: the margin waits
        ({h.DUE_AT_MS: str(NOW_MS)}, 0, 0),
        ({h.DUE_AT_MS: str(NOW_MS)}, 100, 100),
        ({h.DUE_AT_MS: str(NOW_MS - 1)}, 0, 0),
        ({h.DUE_AT_MS: str(NOW_MS - 60_000)}, 100, 0),
    ],
)
def test_is_due(headers: dict[str, str], skew_margin_ms: int, wait_ms: int) -> None:
    assert is_due(headers, NOW_MS, skew_margin_ms) == wait_ms


def test_is_due_rejects_a_negative_margin() -> None:
    with pytest.raises(ValueError):
        is_due({}, NOW_MS, -1)


def test_is_due_ignores_the_record_timestamp() -> None:
    decision = plan(Retryable("x"))
    assert is_due(decision.headers, NOW_MS, 0) == 1_000
    assert is_due(decision.headers, NOW_MS + 1_000, 0) == 0


# --- seconds_to_ms --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay_s", "cap_ms", "expected_ms"),
    [
        (1.0, 10**9, 1_000),
        (0.001, 10**9, 1),
        (0.0015, 10**9, 2),  # up, never early
        (2.999, 10**9, 2_999),
        (0.0, 10**9, 0),
        (-1.0, 10**9, 0),
        (math.nan, 10**9, 0),
        (math.inf, 5_000, 5_000),
        (6.0, 5_000, 5_000),
    ],
)
def test_seconds_to_ms(delay_s: float, cap_ms: int, expected_ms: int) -> None:
    assert seconds_to_ms(delay_s, cap_ms=cap_ms) == expected_ms


@settings(database=None)
@given(st.integers(min_value=0, max_value=10**11))
def test_ms_to_seconds_and_back_is_exact(delay_ms: int) -> None:
    assert seconds_to_ms(delay_ms / 1000, cap_ms=2**62) == delay_ms


@pytest.mark.parametrize("kind", ["rate_limited", "circuit_open", "other"])
def test_a_deferral_says_what_deferred_it(kind: DeferralKind) -> None:
    decision = plan(Deferred(5, "whatever the text says", kind=kind))
    assert isinstance(decision, Retry)
    assert decision.deferred and decision.deferred_by == kind


def test_a_retry_is_not_a_deferral() -> None:
    decision = plan(Retryable("boom"))
    assert isinstance(decision, Retry)
    assert not decision.deferred and decision.deferred_by is None


# --- priority lanes ---------------------------------------------------------------------------


def test_a_record_keeps_its_lane_through_the_retry_tiers_and_the_dlq() -> None:
    lane_origin = h.Origin("dev.email.lane.high", 3, 42, NOW_MS - 5_000)
    first = plan(Retryable("smtp 451"), {h.EVENT_ID: "e1"}, origin=lane_origin)
    assert isinstance(first, Retry) and first.topic.startswith("dev.email.retry.")
    assert first.headers[h.LANE] == "high"  # derived from the lane topic it came from
    assert first.headers[h.ORIGINAL_TOPIC] == "dev.email.lane.high"
    tier = h.Origin(first.topic, 3, 0, NOW_MS)
    last = plan(Permanent("no such user"), first.headers, origin=tier)
    assert isinstance(last, DeadLetter) and last.headers[h.LANE] == "high"


def test_the_lane_header_is_kept_and_never_invented() -> None:
    sdk = plan(Retryable("x"), {h.LANE: "low"}, origin=MAIN_ORIGIN)  # as the SDK sets it
    assert sdk.headers[h.LANE] == "low"
    main = plan(Retryable("x"), {h.EVENT_ID: "e1"}, origin=MAIN_ORIGIN)  # the default lane
    assert h.LANE not in main.headers
    other = plan(Retryable("x"), {}, origin=h.Origin("dev.webhook.lane.high", 0, 1, NOW_MS))
    assert h.LANE not in other.headers  # another family's lane topic is not ours
