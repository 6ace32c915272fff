"""The pure parts of HTTP ingest: idempotency keys and store, the per-principal throttle,
the event model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.api.idempotency import IdempotencyStore, Remembered, check_key, event_id_for
from streams.api.ingest_routes import BatchIn, EventIn
from streams.api.openapi import served_document
from streams.api.problems import Problem
from streams.api.throttle import Throttle


def test_keys_become_tenant_scoped_event_ids() -> None:
    assert event_id_for(None, "k1") == "k1"
    assert event_id_for("acme", "k1") == "acme/k1"
    assert event_id_for("acme", "k1", 3) == "acme/k1#3"
    assert check_key("order-1") is None
    assert check_key("") is not None
    assert check_key("has space") is not None
    assert check_key("x" * 201) is not None


def test_the_store_is_bounded_least_recently_used_first() -> None:
    store = IdempotencyStore(max_keys=2)
    for key in ("a", "b"):
        store.put("t", key, Remembered(key, 202, {}))
    assert store.get("t", "a") is not None  # a is now the most recent
    store.put("t", "c", Remembered("c", 202, {}))
    assert (store.get("t", "a"), store.get("t", "b")) != (None, None)
    assert store.get("t", "b") is None and len(store) == 2
    assert store.get("other-tenant", "a") is None  # keys are per tenant


def test_throttle_allows_a_full_minute_then_429_with_retry_after() -> None:
    throttle = Throttle(per_min=60)
    for _ in range(60):
        throttle.check("p", now_ms=0)
    with pytest.raises(Problem) as refused:
        throttle.check("p", now_ms=0)
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"
    throttle.check("q", now_ms=0)  # per principal
    throttle.check("p", now_ms=1000)  # one token back after a second


def test_an_event_takes_an_optional_priority_per_event() -> None:
    body = {"event_type": "email.requested", "payload": {}}
    batch = BatchIn.model_validate({"events": [{**body, "priority": "high"}, body]})
    assert [e.priority for e in batch.events] == ["high", None]
    for bad in ("", "x" * 33, 3):
        with pytest.raises(ValidationError) as info:
            EventIn.model_validate({**body, "priority": bad})
        assert info.value.errors()[0]["loc"] == ("priority",)


def test_the_document_describes_priority() -> None:
    schema = served_document()["components"]["schemas"]["EventIn"]["properties"]["priority"]
    assert "priority lanes" in schema["description"]
