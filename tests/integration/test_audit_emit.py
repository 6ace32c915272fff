"""The SDK's non-blocking emit (``streams.publish.background``) against real brokers.

With no broker answering, ``emit`` returns in microseconds and reports failures through
its callback and metric, never raising; once a broker of our own (a ``LocalBroker`` in
this test's tmp dir, stopped and started again) is back, every accepted event arrives.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from tests.support.engine import (
    TEST_AUDIT,
    iter_event_ids,
    provision,
    read_topic,
    wait_for,
)

from streams.publish.background import BackgroundEmitter, EmitFailure
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.testing.processes import free_port, write_catalog

MEDIAN_EMIT_BOUND_S = 0.001  # generous: an emit is validation + encoding + an append


def claim(i: int) -> dict[str, object]:
    return {"subject_id": f"claim-{i % 10}", "actor_id": "svc", "details": {"i": str(i)}}


def timed_emits(emitter: BackgroundEmitter, indices: range) -> tuple[list[str | None], float]:
    """Emit one event per index; returns the results and the median call time (s)."""
    results: list[str | None] = []
    durations_s: list[float] = []
    for i in indices:
        started = time.perf_counter()
        results.append(emitter.emit("audit.claim_submitted", claim(i)))
        durations_s.append(time.perf_counter() - started)
    return results, statistics.median(durations_s)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def settings_for(tmp_path: Path, bootstrap: str) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        app_id=f"emit-{uuid.uuid4().hex[:6]}",
        replication_factor_override=1,
        catalog_path=write_catalog(tmp_path, {"audit": TEST_AUDIT}),
        home=tmp_path / "home",
    )


def test_with_no_broker_emit_is_fast_never_raises_and_reports_failures(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"127.0.0.1:{free_port()}")  # nothing listens there
    failures: list[EmitFailure] = []
    registry = CollectorRegistry()
    with Publisher(settings) as publisher:
        emitter = BackgroundEmitter(
            publisher,
            capacity=300,
            on_failure=failures.append,
            delivery_timeout_s=1.0,
            retry_backoff_s=0.2,
            registry=registry,
        )
        results, median_s = timed_emits(emitter, range(400))
        assert median_s < MEDIAN_EMIT_BOUND_S, f"median emit {median_s * 1e6:.0f} us"
        assert all(results[:300]) and results[300:] == [None] * 100  # drop-newest when full
        assert [f.reason for f in failures[:100]] == ["buffer_full"] * 100
        assert emitter.emit("audit.claim_submitted", {"subject_id": "x"}) is None  # invalid
        assert failures[100].reason == "invalid" and "actor_id" in failures[100].error
        # librdkafka gives up after 1 s: each event is reported and goes back to the buffer
        wait_for(lambda: sum(f.reason == "delivery" for f in failures) >= 300, 30, "timeouts")
        assert all(f.will_retry for f in failures if f.reason == "delivery")
        assert emitter.pending == 300
        left = emitter.close(timeout_s=0.5)
    assert left == 300
    assert sample(registry, "streams_emit_failures_total", reason="buffer_full") == 100
    assert sample(registry, "streams_emit_failures_total", reason="invalid") == 1
    assert sample(registry, "streams_emit_failures_total", reason="closed") == 300
    assert sample(registry, "streams_emit_accepted_total") == 300
    assert sample(registry, "streams_emit_delivered_total") == 0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[object]:
    """A LocalBroker of this test only (the shared one is never stopped)."""
    from streams.broker.local import LocalBroker

    broker = LocalBroker(
        tmp_path / "kafka", cache_dir=Settings().home / "broker-cache", die_with_parent=True
    )
    try:
        yield broker
    finally:
        broker.stop()


def test_events_emitted_while_the_broker_is_stopped_arrive_once_it_is_back(
    tmp_path: Path, own_broker: object
) -> None:
    from streams.broker.local import LocalBroker

    assert isinstance(own_broker, LocalBroker)
    status = own_broker.start(timeout_s=120)
    assert status.bootstrap is not None
    settings = settings_for(tmp_path, status.bootstrap)
    catalog = provision(settings)
    topic = catalog.family("audit").topics(settings.topic_prefix).main
    partitions = catalog.family("audit").partitions
    failures: list[EmitFailure] = []
    registry = CollectorRegistry()
    with Publisher(settings, catalog=catalog) as publisher:
        emitter = BackgroundEmitter(
            publisher, capacity=5000, on_failure=failures.append, registry=registry
        )
        assert emitter.emit("audit.claim_submitted", claim(-1)) is not None
        wait_for(lambda: emitter.pending == 0, 30, "the first event's acknowledgement")

        own_broker.stop()
        results, median_s = timed_emits(emitter, range(2000))
        assert median_s < MEDIAN_EMIT_BOUND_S, f"median emit {median_s * 1e6:.0f} us"
        assert all(results) and emitter.pending == 2000

        own_broker.start(timeout_s=120)  # same ports and data
        wait_for(lambda: emitter.pending == 0, 120, "delivery after the broker came back")
        assert emitter.close(timeout_s=5) == 0
    records = read_topic(settings, topic, partitions)
    got = set(iter_event_ids(records))
    assert set(results) <= got and len(got) == len(records) == 2001  # each once
    assert sample(registry, "streams_emit_delivered_total") == 2001
    assert [f for f in failures if not f.will_retry] == []
