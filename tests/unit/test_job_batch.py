"""The batch-handler contract: ``Batch`` validation, matching outcomes to events, the
registry's ``handler(..., batch=...)``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streams.errors import ConfigError, Permanent, Retryable
from streams.jobs.batch import DONE, Batch, BatchContext, BatchResultError, match_outcomes
from streams.jobs.registry import HandlerRegistry

IDS = ["e1", "e2", "e3"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_events": 0, "max_wait_ms": 10},
            "Batch.max_events must be between 1 and 10,000, got 0",
        ),
        (
            {"max_events": 10, "max_wait_ms": -5},
            "Batch.max_wait_ms must be between 1 and 60,000, got -5",
        ),
        ({"max_events": 10_001, "max_wait_ms": 10}, "max_events must be between 1 and 10,000"),
        ({"max_events": 10, "max_wait_ms": 60_001}, "max_wait_ms must be between 1 and 60,000"),
        ({"max_events": 1.5, "max_wait_ms": 10}, "Batch.max_events must be an integer, got 1.5"),
        ({"max_events": True, "max_wait_ms": 10}, "Batch.max_events must be an integer, got True"),
        ({"max_events": 10, "max_wait_ms": "1s"}, "Batch.max_wait_ms must be an integer, got '1s'"),
    ],
)
def test_batch_refuses_bad_limits_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Batch(**kwargs)


def test_batch_accepts_the_seed_values() -> None:
    batch = Batch(max_events=100, max_wait_ms=1000)
    assert (batch.max_events, batch.max_wait_ms) == (100, 1000)


def test_a_list_of_outcomes_in_order() -> None:
    retry, permanent = Retryable("busy"), Permanent("bad row")
    assert match_outcomes(IDS, [DONE, retry, permanent]) == [DONE, retry, permanent]
    assert match_outcomes(IDS, (DONE, DONE, DONE)) == [DONE, DONE, DONE]


def test_a_mapping_by_event_id_in_the_batch_order() -> None:
    retry = Retryable("busy")
    assert match_outcomes(IDS, {"e3": DONE, "e1": retry, "e2": DONE}) == [retry, DONE, DONE]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([DONE, DONE], "batch handler returned 2 outcomes for 3 events"),
        ([DONE] * 4, "batch handler returned 4 outcomes for 3 events"),
        ({"e1": DONE}, "batch handler returned no outcome for event e2 and 1 more (of 3 events)"),
        ({"e1": DONE, "e2": DONE}, "no outcome for event e3 (of 3 events)"),
        (
            {"e1": DONE, "e2": DONE, "e3": DONE, "zz": DONE},
            "returned outcomes for 1 event(s) not in its batch, e.g. zz",
        ),
        (None, "batch handler returned a NoneType, not a list of outcomes"),
        ("done", "batch handler returned a str, not a list of outcomes"),
        ([DONE, None, DONE], "outcome for event e2 is a NoneType (None), not DONE"),
        ([DONE, DONE, True], "outcome for event e3 is a bool (True), not DONE"),
        ([DONE, Permanent, DONE], "outcome for event e2 is a type"),
    ],
)
def test_a_result_that_does_not_give_each_event_one_outcome_is_a_retryable_bug(
    result: Any, message: str
) -> None:
    with pytest.raises(BatchResultError, match=re.escape(message)) as caught:
        match_outcomes(IDS, result)
    assert caught.value.retriable, "a handler bug retries every event, never done"


async def rollup(events: list[Any], ctx: BatchContext) -> list[Any]:
    return [DONE for _ in events]


async def single(event: Any, ctx: Any) -> None:
    return None


def test_registry_keeps_batch_handlers_apart_from_plain_ones() -> None:
    registry = HandlerRegistry()
    batch = Batch(max_events=100, max_wait_ms=1000)
    assert registry.handler("analytics.rollup_requested", batch=batch)(rollup) is rollup
    registry.handler("audit.claim_submitted")(single)
    spec = registry.batch_handler("analytics.rollup_requested")
    assert spec is not None and spec.fn is rollup and spec.batch == batch
    assert registry.get("analytics.rollup_requested") is None, "not callable per event"
    assert registry.batch_handler("audit.claim_submitted") is None
    assert registry.batched_types() == {"analytics.rollup_requested"}
    assert registry.event_types() == {"analytics.rollup_requested", "audit.claim_submitted"}
    merged = HandlerRegistry().merged(registry)
    assert merged.batched_types() == {"analytics.rollup_requested"}
    assert merged.get("audit.claim_submitted") is single


def test_a_second_handler_for_a_type_is_refused_batch_or_not() -> None:
    registry = HandlerRegistry()
    registry.handler("x.y")(single)
    with pytest.raises(ConfigError, match=re.escape("a handler for 'x.y' is already registered")):
        registry.handler("x.y", batch=Batch(max_events=2, max_wait_ms=5))(rollup)
    registry.handler("a.b", batch=Batch(max_events=2, max_wait_ms=5))(rollup)
    with pytest.raises(ConfigError, match=re.escape("a handler for 'a.b' is already registered")):
        registry.handler("a.b")(single)


def test_batch_must_be_a_batch() -> None:
    registry = HandlerRegistry()
    with pytest.raises(
        ConfigError, match=re.escape("batch= takes a streams.jobs.batch.Batch, got dict")
    ):
        registry.handler("a.b", batch={"max_events": 2})(rollup)  # type: ignore[arg-type]
