"""The processing engine on the real broker: retry ladder, DLQ, idempotency, poison records.

Each test provisions its own prefixed topics, runs a real ``streams worker`` process with
the SQLite-ledger handlers of ``tests.support.ledger_handlers`` and checks the outcome.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from tests.support.engine import (
    TEST_AUDIT,
    Ledger,
    audit_rig,
    read_topic,
    record_headers,
    wait_for,
)

from streams.core import headers as h
from streams.publish.publisher import Publisher
from streams.settings import Settings

pytestmark = pytest.mark.kafka


@pytest.fixture
def engine(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, TEST_AUDIT) as made:
        yield made


def submit(publisher: Publisher, subject: str, event_id: str | None = None, **details: str) -> str:
    result = publisher.publish(
        "audit.claim_submitted",
        {"subject_id": subject, "actor_id": "tester", "details": details},
        event_id=event_id,
    )
    return result.event_id


def test_fails_twice_then_succeeds_once_after_two_retries_on_time(engine: dict[str, Any]) -> None:
    worker = engine["start"]()
    worker.wait_ready()
    event_id = submit(engine["publisher"], "claim-1", fail_times="2")
    ledger: Ledger = engine["ledger"]
    wait_for(lambda: event_id in ledger.ids(), 30, "the side effect")
    attempts = ledger.attempts(event_id)
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    # each retry ran no earlier than its due time, which is its tier's delay after the failure
    delays_ms = [1000, 2000]
    for (previous, current), delay_ms in zip(itertools.pairwise(attempts), delays_ms, strict=True):
        assert current["due_at_ms"] >= previous["at_ms"] + delay_ms
        assert current["at_ms"] >= current["due_at_ms"], "a retry ran before it was due"
    assert ledger.count() == 1 and ledger.duplicates() == 0
    assert worker.metric("streams_retries_total") == 2


def test_always_failing_lands_in_dlq_with_complete_headers(engine: dict[str, Any]) -> None:
    settings: Settings = engine["settings"]
    worker = engine["start"]()
    worker.wait_ready()
    event_id = submit(engine["publisher"], "claim-2", fail="always")
    dlq = f"{settings.topic_prefix}audit.dlq"
    msgs = wait_for(lambda: read_topic(settings, dlq, 3), 30, "the DLQ record")
    assert len(msgs) == 1
    headers = record_headers(msgs[0])
    assert headers[h.EVENT_ID] == event_id
    assert headers[h.DLQ_REASON] == "exhausted"
    assert headers[h.ATTEMPT] == "3"
    assert headers[h.ORIGINAL_TOPIC] == f"{settings.topic_prefix}audit"
    for name in (
        h.ORIGINAL_PARTITION,
        h.ORIGINAL_OFFSET,
        h.ORIGINAL_TIMESTAMP_MS,
        h.FIRST_FAILURE_AT_MS,
        h.FAILED_AT_MS,
        h.ERROR_FINGERPRINT,
        h.SCHEMA,
        h.EVENT_TYPE,
        h.TRACEPARENT,
    ):
        assert headers.get(name), f"DLQ record lacks {name}"
    assert headers[h.ERROR_CLASS] == "streams.errors.Retryable"
    assert "dependency is down" in headers[h.ERROR_MESSAGE]
    assert h.DUE_AT_MS not in headers
    # every header value is UTF-8 text a console can show
    for _, value in msgs[0].headers():
        value.decode("utf-8")
    assert len(engine["ledger"].attempts(event_id)) == 3
    assert engine["ledger"].count() == 0


def test_permanent_failure_goes_to_dlq_at_once(engine: dict[str, Any]) -> None:
    settings: Settings = engine["settings"]
    worker = engine["start"]()
    worker.wait_ready()
    event_id = submit(engine["publisher"], "claim-3", fail="permanent")
    dlq = f"{settings.topic_prefix}audit.dlq"
    msgs = wait_for(lambda: read_topic(settings, dlq, 3), 30, "the DLQ record")
    headers = record_headers(msgs[0])
    assert headers[h.DLQ_REASON] == "permanent"
    assert headers[h.ATTEMPT] == "1"
    assert len(engine["ledger"].attempts(event_id)) == 1


def test_garbage_record_goes_to_dlq_and_the_partition_keeps_flowing(engine: dict[str, Any]) -> None:
    settings: Settings = engine["settings"]
    worker = engine["start"]()
    worker.wait_ready()
    main = f"{settings.topic_prefix}audit"
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    garbage = [b"\x00not avro", b'{"json": true}', b"\xc3\x01" + b"\xff" * 8 + b"body"]
    for value in garbage:
        producer.produce(main, key=b"claim-g", value=value, partition=1)
    producer.flush(10)
    # good events on the same partition after the poison records
    publisher: Publisher = engine["publisher"]
    good = [submit(publisher, "claim-g") for _ in range(3)]
    wait_for(lambda: set(good) <= engine["ledger"].ids(), 30, "the good events")
    msgs = read_topic(settings, f"{settings.topic_prefix}audit.dlq", 3)
    assert sorted(m.value() for m in msgs) == sorted(garbage), "value must be byte-exact"
    for msg in msgs:
        headers = record_headers(msg)
        assert headers[h.DLQ_REASON] == "undecodable"
        assert headers[h.ERROR_MESSAGE]
        assert msg.key() == b"claim-g"


def test_same_event_id_three_times_one_side_effect(engine: dict[str, Any]) -> None:
    worker = engine["start"]()
    worker.wait_ready()
    event_id = str(uuid.uuid4())
    for _ in range(3):
        submit(engine["publisher"], "claim-4", event_id=event_id)
    marker = submit(engine["publisher"], "claim-4")  # same key: runs after the three
    ledger: Ledger = engine["ledger"]
    wait_for(lambda: marker in ledger.ids(), 30, "the marker event")
    assert ledger.ids() == {event_id, marker}
    assert len(ledger.attempts(event_id)) == 1, "the handler ran more than once"
    assert ledger.duplicates() == 0
    assert worker.metric("streams_duplicates_skipped_total") == 2


def test_dlq_headers_are_plain_text_in_kafkas_console_consumer(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    """An operator's console shows the failure headers as text (Kafka's own ConsoleConsumer,
    from the jars the local broker is assembled from)."""
    import shutil
    import subprocess

    from streams.broker.jars import ensure_jars

    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not installed")
    settings: Settings = engine["settings"]
    worker = engine["start"]()
    worker.wait_ready()
    event_id = submit(engine["publisher"], "claim-5", fail="permanent")
    dlq = f"{settings.topic_prefix}audit.dlq"
    wait_for(lambda: read_topic(settings, dlq, 3), 30, "the DLQ record")
    lib = ensure_jars(Path(__file__).resolve().parents[2] / ".streams" / "broker-cache")
    done = subprocess.run(
        [
            java,
            "-Xmx128m",
            "-cp",
            f"{lib}/*",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            settings.bootstrap,
            "--topic",
            dlq,
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "20000",
            "--formatter-property",
            "print.headers=true",
            "--formatter-property",
            "print.key=true",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    # the value is binary Avro; the headers and the key are text
    out = done.stdout.decode("utf-8", errors="replace")
    assert f"{h.EVENT_ID}:{event_id}" in out, done.stderr[-2000:].decode(errors="replace")
    assert f"{h.DLQ_REASON}:permanent" in out
    assert f"{h.ERROR_CLASS}:streams.errors.Permanent" in out
    assert f"{h.ORIGINAL_TOPIC}:{settings.topic_prefix}audit" in out
    assert "claim-5" in out  # the key
