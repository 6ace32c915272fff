"""The producer SDK and ``streams publish`` on the real broker.

Each test provisions the ``email`` family (main, retry tiers, DLQ) under its own topic
prefix with ``streams.broker.admin.apply`` and deletes the topics afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import BatchPublishError, Publisher, PublishResult
from streams.broker import admin as topics_admin
from streams.catalog import Catalog, load_catalog
from streams.cli_publish import publish as publish_command
from streams.core import headers as h
from streams.errors import (
    BrokerUnavailable,
    DeliveryFailed,
    EventTooLarge,
    InvalidPayload,
    UnknownEventType,
)
from streams.events import build_event
from streams.serde import SchemaStore
from streams.settings import Settings

EMAIL = "email.requested"
REPO = Path(__file__).resolve().parents[2]


def email(i: int, **over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "user_id": f"user-{i}",
        "to": f"user{i}@example.com",
        "locale": "fr" if i % 2 else "en",
        "template": "welcome",
        "variables": {"n": str(i)},
    }
    payload.update(over)
    return payload


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def email_catalog() -> Catalog:
    """The repository catalog narrowed to the ``email`` family."""
    full = load_catalog(REPO / "topics.yaml")
    return full.model_copy(update={"families": {"email": full.families["email"]}})


@pytest.fixture
def topics(settings: Settings, email_catalog: Catalog) -> Iterator[str]:
    """Creates the email family's topics; yields the main topic's name; deletes them."""
    topics_admin.apply(settings, email_catalog)
    names = [s.name for s in topics_admin.catalog_topics(settings, email_catalog)]
    try:
        yield email_catalog.families["email"].topics(settings.topic_prefix).main
    finally:
        admin = AdminClient({"bootstrap.servers": settings.bootstrap})
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=60)


@pytest.fixture
def publisher(settings: Settings, email_catalog: Catalog, topics: str) -> Iterator[Publisher]:
    with Publisher(settings, catalog=email_catalog, producer_name="tests") as pub:
        yield pub


def end_offsets(settings: Settings, topic: str) -> list[int]:
    """High watermark of every partition of ``topic``.

    Retries while a just-created topic's leadership settles (NOT_LEADER_FOR_PARTITION).
    """
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "unused"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        deadline = time.monotonic() + 20
        while True:
            try:
                return [
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in sorted(meta.partitions)
                ]
            except KafkaException as exc:
                err = exc.args[0]
                settling = err.code() in (
                    KafkaError.NOT_LEADER_FOR_PARTITION,
                    KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                )
                if not (settling or err.retriable()) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def consume_all(settings: Settings, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
    """Every record of ``topic`` from the beginning (assign(), no group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=2000, timeout=1.0):
                assert msg.error() is None, msg.error()
                out.append(msg)
        # nothing beyond what was expected
        out.extend(m for m in consumer.consume(num_messages=100, timeout=1.0) if not m.error())
        return out
    finally:
        consumer.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- round trip -------------------------------------------------------------------------------


def test_ten_thousand_events_round_trip_byte_for_byte(
    publisher: Publisher, settings: Settings, topics: str
) -> None:
    n = 10_000
    traces = [f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" for _ in range(n)]
    items = [
        {
            "event_type": EMAIL,
            "payload": email(i),
            "event_id": f"evt-{i}",
            "trace_parent": traces[i],
            "headers": {"x-test": f"h{i}"},
        }
        for i in range(n)
    ]
    results = publisher.publish_batch(items)

    assert len(results) == n
    assert all(isinstance(r, PublishResult) and r.topic == topics for r in results)
    assert [r.event_id for r in results] == [f"evt-{i}" for i in range(n)]
    assert len({(r.partition, r.offset) for r in results}) == n
    assert sum(end_offsets(settings, topics)) == n

    records = consume_all(settings, topics, n)
    assert len(records) == n
    store = SchemaStore.load(settings.schemas_dir)
    schema_header = store.latest(EMAIL).header.encode()
    by_position = {(m.partition(), m.offset()): m for m in records}
    for i, result in enumerate(results):
        msg = by_position[(result.partition, result.offset)]
        assert msg.key() == f"user-{i}".encode()
        assert msg.headers() == [
            (h.EVENT_ID, f"evt-{i}".encode()),
            (h.EVENT_TYPE, EMAIL.encode()),
            (h.SCHEMA, schema_header),
            (h.CONTENT_TYPE, h.AVRO_CONTENT_TYPE.encode()),
            (h.TRACEPARENT, traces[i].encode()),
            ("x-test", f"h{i}".encode()),
        ]
        decoded = store.decode_event(msg.value())
        expected = build_event(
            EMAIL,
            email(i),
            event_id=f"evt-{i}",
            occurred_at_ms=decoded.envelope.occurred_at_ms,
            producer="tests",
        )
        assert decoded == expected
        assert msg.value() == store.encode(expected)  # byte-exact
        assert msg.timestamp()[1] == result.timestamp_ms


def test_single_publish_returns_the_stored_position(
    publisher: Publisher, settings: Settings, topics: str
) -> None:
    result = publisher.publish(EMAIL, email(7), key="user-7")
    assert result.topic == topics and result.offset >= 0
    (msg,) = consume_all(settings, topics, 1)
    assert (msg.partition(), msg.offset()) == (result.partition, result.offset)
    decoded = h.decode(msg.headers())
    assert decoded[h.EVENT_ID] == result.event_id
    assert str(uuid.UUID(result.event_id)) == result.event_id  # a generated UUID4


def test_one_publisher_shared_by_threads(
    publisher: Publisher, settings: Settings, topics: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(t: int) -> list[PublishResult]:
        singles = [publisher.publish(EMAIL, email(t * 1000 + i)) for i in range(25)]
        batch = publisher.publish_batch([(EMAIL, email(t * 1000 + i)) for i in range(25, 200)])
        return singles + batch

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [r for chunk in pool.map(work, range(4)) for r in chunk]
    assert len(results) == 800
    assert len({(r.partition, r.offset) for r in results}) == 800
    assert len({r.event_id for r in results}) == 800
    # What the topic holds, read back, not its watermarks: each acknowledged position holds
    # the event it was acknowledged for, and nothing else is there.
    stored = {(m.partition(), m.offset()): m for m in consume_all(settings, topics, 800)}
    # (seen once under heavy load: 799 read back; the message tells a record missing from
    # the log, below its partition's high watermark or above it, from a short read)
    missing = sorted({(r.partition, r.offset) for r in results} - set(stored))
    assert not missing and len(stored) == 800, (
        f"read back {len(stored)}; acknowledged but not read: {missing[:10]}; "
        f"high watermarks {end_offsets(settings, topics)}"
    )
    for r in results:
        assert h.decode(stored[(r.partition, r.offset)].headers())[h.EVENT_ID] == r.event_id


# --- refused before sending -----------------------------------------------------------------


def test_refused_events_never_reach_the_broker(
    publisher: Publisher, settings: Settings, topics: str
) -> None:
    before = end_offsets(settings, topics)

    with pytest.raises(InvalidPayload) as invalid:
        publisher.publish(EMAIL, email(1, to="not-an-address", template="nope"))
    fields = dict(invalid.value.errors)
    assert set(fields) == {"to", "template"}
    assert "e-mail address" in fields["to"]

    with pytest.raises(InvalidPayload) as missing_key:
        publisher.publish(EMAIL, {k: v for k, v in email(1).items() if k != "user_id"})
    assert dict(missing_key.value.errors)["user_id"] == "required"

    with pytest.raises(InvalidPayload) as wrong_key:
        publisher.publish(EMAIL, email(1), key="someone-else")
    assert wrong_key.value.errors[0][0] == "user_id"

    with pytest.raises(UnknownEventType, match=r"email\.sent"):
        publisher.publish("email.sent", email(1))
    with pytest.raises(UnknownEventType):
        publisher.publish("nodots", email(1))

    huge = email(1, variables={"blob": "x" * 1_100_000})
    with pytest.raises(EventTooLarge, match=r"limit is \d+ bytes"):
        publisher.publish(EMAIL, huge)

    with pytest.raises(InvalidPayload) as reserved:
        publisher.publish(EMAIL, email(1), headers={h.EVENT_ID: "forged"})
    assert reserved.value.errors == [(f"headers.{h.EVENT_ID}", "reserved: set by the publisher")]

    with pytest.raises(BatchPublishError) as batch:
        publisher.publish_batch([(EMAIL, email(1)), (EMAIL, email(2, to="bad")), (EMAIL, huge)])
    assert batch.value.sent is False
    assert sorted(batch.value.errors) == [1, 2]
    assert isinstance(batch.value.errors[1], InvalidPayload)
    assert isinstance(batch.value.errors[2], EventTooLarge)
    assert batch.value.results == [None, None, None]

    publisher.flush(10)
    assert end_offsets(settings, topics) == before


def test_missing_topic_is_named_without_waiting_for_the_timeout(
    make_settings: Callable[..., Settings], email_catalog: Catalog
) -> None:
    settings = make_settings(publish_timeout_s=20)  # topics never created
    started = time.monotonic()
    with (
        Publisher(settings, catalog=email_catalog) as pub,
        pytest.raises(DeliveryFailed, match=r"does not exist.*streams topics apply"),
    ):
        pub.publish(EMAIL, email(1))
    assert time.monotonic() - started < 10


# --- partitioning agrees with aiokafka ---------------------------------------------------------


async def test_same_key_same_partition_as_aiokafka(
    publisher: Publisher, settings: Settings, topics: str
) -> None:
    keys = [f"user-{uuid.uuid4().hex[:10]}" for _ in range(600)]
    ours = await publisher.publish_batch_async([(EMAIL, email(0, user_id=k)) for k in keys])
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topics, value=b"aiokafka", key=k.encode()) for k in keys]
        theirs = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert len({r.partition for r in ours}) == 6  # the keys spread over every partition
    mismatched = [
        (k, a.partition, b.partition)
        for k, a, b in zip(keys, ours, theirs, strict=True)
        if a.partition != b.partition
    ]
    assert mismatched == []

    # control: librdkafka's default partitioner (CRC32) would disagree for most keys
    crc32_conf = {"partitioner": "consistent_random"}
    with Publisher(settings, catalog=publisher.catalog, producer_conf=crc32_conf) as crc:
        crc_results = crc.publish_batch([(EMAIL, email(0, user_id=k)) for k in keys])
    disagree = sum(a.partition != b.partition for a, b in zip(crc_results, theirs, strict=True))
    assert disagree > len(keys) // 2


# --- asyncio --------------------------------------------------------------------------------


async def test_async_publish_inside_a_running_loop(
    settings: Settings, email_catalog: Catalog, topics: str
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        async with Publisher(settings, catalog=email_catalog) as pub:
            first = await pub.publish_async(EMAIL, email(1))
            many = await asyncio.gather(*(pub.publish_async(EMAIL, email(i)) for i in range(50)))
            batch = await pub.publish_batch_async([(EMAIL, email(i)) for i in range(200)])
            with pytest.raises(InvalidPayload):
                await pub.publish_async(EMAIL, email(1, to="nope"))
    finally:
        task.cancel()
    assert first.topic == topics and first.offset >= 0
    assert len({(r.partition, r.offset) for r in [first, *many, *batch]}) == 251
    assert ticks > 0  # the loop kept running while deliveries were awaited
    assert sum(end_offsets(settings, topics)) == 251


# --- broker unavailable ------------------------------------------------------------------------


def test_dead_broker_raises_broker_unavailable_within_the_timeout(
    make_settings: Callable[..., Settings], email_catalog: Catalog
) -> None:
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{closed_port()}", publish_timeout_s=2)
    started = time.monotonic()
    with Publisher(settings, catalog=email_catalog) as pub:
        with pytest.raises(BrokerUnavailable):
            pub.publish(EMAIL, email(1))
        assert time.monotonic() - started < 5
        with pytest.raises(BatchPublishError) as batch:
            pub.publish_batch([(EMAIL, email(i)) for i in range(3)])
        assert batch.value.sent is False
        assert all(isinstance(e, BrokerUnavailable) for e in batch.value.errors.values())
        # the delivery path too: past the topic check, librdkafka's message timeout answers
        pub._verified_topics.add(email_catalog.families["email"].topics(settings.topic_prefix).main)
        mark = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="Message timed out"):
            pub.publish(EMAIL, email(1))
        assert time.monotonic() - mark < 5
    assert time.monotonic() - started < 15  # close() did not hang either


async def test_dead_broker_async(
    make_settings: Callable[..., Settings], email_catalog: Catalog
) -> None:
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{closed_port()}", publish_timeout_s=2)
    started = time.monotonic()
    async with Publisher(settings, catalog=email_catalog) as pub:
        with pytest.raises(BrokerUnavailable):
            await pub.publish_async(EMAIL, email(1))
    assert time.monotonic() - started < 10


# --- the CLI ------------------------------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
        "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMS_PUBLISH_TIMEOUT_S": "10",
    }


def test_cli_publishes_one_event(settings: Settings, topics: str) -> None:
    env = {**os.environ, **cli_env(settings)}
    streams_script = Path(sys.executable).parent / "streams"  # the console entry point
    proc = subprocess.run(
        [streams_script, "publish", EMAIL, "--data", json.dumps(email(3)), "--event-id", "cli-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    fields = dict(part.split("=", 1) for part in line.split())
    assert fields["topic"] == topics
    assert fields["event_id"] == "cli-1"
    (msg,) = consume_all(settings, topics, 1)
    assert (msg.partition(), msg.offset()) == (int(fields["partition"]), int(fields["offset"]))
    assert msg.key() == b"user-3"


def test_cli_bulk_from_stdin_and_count(settings: Settings, topics: str) -> None:
    runner = CliRunner()
    lines = "\n".join(json.dumps(email(i)) for i in range(5)) + "\n\n"
    result = runner.invoke(
        publish_command, [EMAIL, "--data", "-", "--count", "2"], input=lines, env=cli_env(settings)
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 10
    assert sum(end_offsets(settings, topics)) == 10


def test_cli_publishes_to_a_priority_lane(settings: Settings, topics: str) -> None:
    runner = CliRunner()
    args = [EMAIL, "--data", json.dumps(email(4)), "--priority"]
    result = runner.invoke(publish_command, [*args, "high"], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    assert f"topic={topics}.lane.high " in result.output
    refused = runner.invoke(publish_command, [*args, "urgent"], env=cli_env(settings))
    assert refused.exit_code != 0
    assert "its lanes are high, normal, low" in refused.output
    assert sum(end_offsets(settings, f"{topics}.lane.high")) == 1


def test_cli_reads_a_json_file(settings: Settings, topics: str, tmp_path: Path) -> None:
    runner = CliRunner()
    many = tmp_path / "events.json"
    many.write_text(json.dumps([email(1), email(2)]), encoding="utf-8")
    one = tmp_path / "event.json"
    one.write_text(json.dumps(email(3)), encoding="utf-8")
    env = cli_env(settings)

    result = runner.invoke(publish_command, [EMAIL, "--data", f"@{many}"], env=env)
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 2
    result = runner.invoke(
        publish_command, [EMAIL, "--data", f"@{one}", "--key", "user-3"], env=env
    )
    assert result.exit_code == 0, result.output
    assert sum(end_offsets(settings, topics)) == 3

    missing = runner.invoke(
        publish_command, [EMAIL, "--data", f"@{tmp_path / 'nope.json'}"], env=env
    )
    assert missing.exit_code == 1
    assert "error: cannot read" in missing.output and "nope.json" in missing.output
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([email(1), 5]), encoding="utf-8")
    bad_item = runner.invoke(publish_command, [EMAIL, "--data", f"@{mixed}"], env=env)
    assert bad_item.exit_code == 1
    assert "item 1 must be a JSON object, got a number" in bad_item.output
    assert sum(end_offsets(settings, topics)) == 3


def test_cli_refuses_bad_json_and_bad_fields(settings: Settings, topics: str) -> None:
    runner = CliRunner()
    env = cli_env(settings)
    bad_json = runner.invoke(publish_command, [EMAIL, "--data", '{"user_id": '], env=env)
    assert bad_json.exit_code == 1
    assert bad_json.output.startswith("error: --data is not valid JSON: line 1 column 13:")
    assert "Traceback" not in bad_json.output

    not_object = runner.invoke(publish_command, [EMAIL, "--data", "[1]"], env=env)
    assert not_object.exit_code == 1
    assert "--data must be a JSON object, got an array" in not_object.output

    invalid = runner.invoke(
        publish_command, [EMAIL, "--data", json.dumps(email(1, to="nope"))], env=env
    )
    assert invalid.exit_code == 1
    assert "error: invalid email.requested payload:" in invalid.output
    assert "  to: must be an e-mail address" in invalid.output

    stdin_bad = runner.invoke(
        publish_command,
        [EMAIL, "--data", "-"],
        input=json.dumps(email(1)) + "\n" + json.dumps(email(2, locale="de")) + "\n",
        env=env,
    )
    assert stdin_bad.exit_code == 1
    assert "stdin line 2: invalid email.requested payload:" in stdin_bad.output
    assert "nothing was published" in stdin_bad.output

    unknown = runner.invoke(publish_command, ["email.nope", "--data", "{}"], env=env)
    assert unknown.exit_code == 1
    assert "unknown event type 'email.nope'" in unknown.output

    assert sum(end_offsets(settings, topics)) == 0
