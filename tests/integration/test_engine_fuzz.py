"""Fuzz-generated garbage on the real broker: one partition, garbage interleaved with valid
events, one real worker.

The garbage (seeded, so a failure replays): random bytes, mutated and truncated valid
records, unknown and foreign schema fingerprints, lengths claiming gigabytes, a tombstone,
a valid event of a type the family has no handler for, a 300 KB record with trailing
bytes, and undecodable values carrying broken headers
(non-UTF-8, None, duplicated, 64 KB, unparsable numbers, hostile ``streams-original-*``).
Valid events carry broken headers too. The expected outcome of every record is computed
here with the same decoder, so the test checks the reason AND the message the worker
wrote: every garbage record is in the DLQ, byte-exact, with its reason and message; every
valid event is done; the partition's committed offset reaches its end; the worker is
still up and logged no record it failed to admit.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from confluent_kafka import Consumer, Producer, TopicPartition
from tests.support.engine import TEST_AUDIT, Ledger, audit_rig, read_topic, wait_for

from streams.broker.watermarks import watermarks
from streams.core import headers as h
from streams.errors import DecodeError, EventValidationError
from streams.events import EXAMPLE_PAYLOADS, build_event
from streams.serde import SchemaStore
from streams.settings import Settings

pytestmark = pytest.mark.kafka

STORE = SchemaStore.load(Path(__file__).resolve().parents[2] / "schemas")
AUDIT = STORE.latest("audit.claim_submitted")
OTHER = STORE.latest("email.requested")  # no handler in the audit family; no sealed fields
PARTITION = 1
SEED = 20261202


@dataclass
class Planned:
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes | str | None]]
    event_id: str | None = None  # a valid event: must be done
    reason: str | None = None  # garbage: the DLQ reason and the failure it must carry
    error_class: str | None = None
    message: str | None = None


def valid_record(rng: random.Random, i: int) -> tuple[str, bytes]:
    event = build_event(
        "audit.claim_submitted",
        {"subject_id": f"claim-{i}", "actor_id": "fuzz", "details": {"seq": str(i)}},
    )
    return event.envelope.event_id, STORE.encode(event)


def zigzag_varint(n: int) -> bytes:
    z = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while True:
        byte, z = z & 0x7F, z >> 7
        out.append(byte | 0x80 if z else byte)
        if not z:
            return bytes(out)


def garbage_value(rng: random.Random, kind: int, i: int) -> bytes | None:
    _, record = valid_record(rng, i)
    body = record[len(AUDIT.prefix) :]
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:  # mutated and cut
        mutated = bytearray(record)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(10, len(mutated))] = rng.randrange(256)
        return bytes(mutated[: rng.randrange(10, len(mutated) + 1)])
    if kind == 2:  # a fingerprint no version has
        return b"\xc3\x01" + rng.randbytes(8) + body
    if kind == 3:  # another type's fingerprint over this body
        return OTHER.prefix + body
    if kind == 4:  # a length or count claiming gigabytes, spliced anywhere in the body
        at = rng.randrange(10, len(record) + 1)
        return record[:at] + zigzag_varint(rng.choice([2**31, 2**62, -(2**62)])) + record[at:]
    if kind == 5:
        return None  # a tombstone
    if kind == 6:  # a valid event of a type the family has no handler for
        return STORE.encode(build_event("email.requested", EXAMPLE_PAYLOADS["email.requested"]))
    return record + rng.randbytes(300_000)  # oversize-ish: 300 KB of trailing bytes


def broken_headers(rng: random.Random) -> list[tuple[str, bytes | str | None]]:
    junk: list[tuple[str, bytes | str | None]] = [
        ("x-binary", rng.randbytes(40)),
        ("x-none", None),
        ("x-dup", b"1"),
        ("x-dup", b"2"),
        ("x-huge", b"\xff" * 65_536),
        (h.ATTEMPT, rng.choice([b"abc", b"-5", b"9" * 3000, b"\xff\xfe", b""])),
        (h.DEFERRALS, b"1e9"),
        (h.FIRST_FAILURE_AT_MS, b"\x00\x01"),
        (h.EVENT_ID, rng.randbytes(16)),
    ]
    junk += [(f"x-many-{n}", b"v" * 100) for n in range(60)]
    junk += [(f"streams-junk-{n}", b"w" * 100) for n in range(60)]
    rng.shuffle(junk)
    return junk


def expected_failure(value: bytes | None) -> tuple[str, str, str] | None:
    """(DLQ reason, error class, error message) the worker must write for ``value``, or
    None when it is a valid audit event after all (then it is not garbage)."""
    try:
        event = STORE.decode_event(value)  # type: ignore[arg-type]
    except DecodeError as exc:
        reason = "invalid" if isinstance(exc, EventValidationError) else "undecodable"
        failure = h.Failure.from_exception(exc).headers()
        return reason, failure[h.ERROR_CLASS], failure[h.ERROR_MESSAGE]
    if event.envelope.event_type != "audit.claim_submitted":
        message = f"no handler registered for {event.envelope.event_type}"
        return "permanent", "streams.worker.processor.NoHandler", message
    return None


def plan(rng: random.Random, valid: int, garbage: int) -> list[Planned]:
    out: list[Planned] = []
    kinds = [i % 8 for i in range(garbage)]  # every kind, several times
    rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        while True:
            value = garbage_value(rng, kind, i)
            expected = expected_failure(value)
            if expected is not None:  # a mutation that still decodes is no garbage
                break
        # a hostile ORIGINAL_* group is kept as the record's origin: records are told
        # apart by their key, which the route never rewrites
        headers = broken_headers(rng) if i % 2 else []
        if i % 4 == 1:
            headers += [(h.ORIGINAL_TOPIC, b"\xff"), (h.ORIGINAL_OFFSET, b"-1")]
        reason, error_class, message = expected
        out.append(Planned(f"g-{i}".encode(), value, headers, None, reason, error_class, message))
    for i in range(valid):
        event_id, value = valid_record(rng, i)
        headers = broken_headers(rng) if i % 3 == 0 else []
        out.append(Planned(f"v-{i}".encode(), value, headers, event_id=event_id))
    rng.shuffle(out)
    return out


@pytest.fixture
def engine(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, TEST_AUDIT) as made:
        yield made


def committed_to_end(settings: Settings, topic: str) -> bool:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": settings.app_id})
    try:
        [tp] = consumer.committed([TopicPartition(topic, PARTITION)], timeout=10)
        high = watermarks(consumer, tp, 30.0)[1]
        return bool(tp.offset == high)
    finally:
        consumer.close()


def test_garbage_reaches_the_dlq_with_its_reason_and_the_partition_flows(
    engine: dict[str, Any],
) -> None:
    settings: Settings = engine["settings"]
    main = f"{settings.topic_prefix}audit"
    records = plan(random.Random(SEED), valid=40, garbage=48)
    garbage = {r.key: r for r in records if r.reason is not None}
    valid = {r.event_id: r for r in records if r.event_id is not None}
    worker = engine["start"]()
    worker.wait_ready()
    producer = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5})
    for r in records:
        producer.produce(main, key=r.key, value=r.value, partition=PARTITION, headers=r.headers)
    assert producer.flush(15) == 0

    wait_for(lambda: committed_to_end(settings, main), 60, "the partition committed to its end")
    dlq = read_topic(settings, f"{settings.topic_prefix}audit.dlq", 3)
    ledger: Ledger = engine["ledger"]
    done = ledger.ids()

    assert set(valid) <= done, f"valid events not done: {len(set(valid) - done)}"
    assert len(done) == len(valid), "a garbage record reached the handler"
    by_key = {m.key(): m for m in dlq}
    assert len(dlq) == len(by_key) == len(garbage), "DLQ records missing or doubled"
    assert set(by_key) == set(garbage)
    reasons: dict[str, int] = {}
    for key, r in garbage.items():
        msg = by_key[key]
        headers = h.decode(msg.headers() or [])
        assert msg.value() == r.value, f"{key!r}: the value must be byte-exact"
        assert msg.partition() == PARTITION
        assert headers[h.DLQ_REASON] == r.reason, (key, headers[h.ERROR_MESSAGE])
        assert headers[h.ERROR_CLASS] == r.error_class, key
        assert headers[h.ERROR_MESSAGE] == r.message, key
        assert headers[h.FAILED_AT_MS] and headers[h.ERROR_FINGERPRINT]
        reasons[r.reason or ""] = reasons.get(r.reason or "", 0) + 1
    print(f"\n{len(records)} records: {len(valid)} done, DLQ by reason {reasons}")
    assert worker.proc is not None and worker.proc.poll() is None, "the worker exited"
    log = worker.tail(100_000)
    assert "failed to admit a record" not in log
    assert "decoder failed" not in log
    assert "Traceback" not in log, log[-3000:]


# --- a header key that is not UTF-8 ---------------------------------------------------------


def poison_header_key_batch(key: bytes, value: bytes) -> bytes:
    """A v2 record batch holding one record whose header key is ``\\xff\\xfe`` (no client
    writes one: their keys are strings; the broker stores it as it is)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=None, key=key, value=value, headers=[("@@", b"v")])
    batch = bytearray(builder.build())
    at = batch.index(b"@@")
    batch[at : at + 2] = b"\xff\xfe"
    struct.pack_into(">I", batch, 17, calc_crc32c(bytes(batch[21:])))  # CRC from attributes
    return bytes(batch)


async def produce_raw_batch(bootstrap: str, topic: str, partition: int, batch: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.client.force_metadata_update()
        leader = producer.client.cluster.leader_for_partition(KafkaTP(topic, partition))
        request = ProduceRequest(None, -1, 10_000, [(topic, [(partition, batch)])])
        response = await producer.client.send(leader, request)
        [(_, [partition_response])] = response.topics
        assert partition_response[1] == 0, f"produce failed: {partition_response}"
    finally:
        await producer.stop()


def test_a_header_key_that_is_not_utf8_neither_crashes_nor_sticks(engine: dict[str, Any]) -> None:
    """aiokafka's parser raised UnicodeDecodeError on such a key: faust's Fetcher crashed
    and the worker exited, at every restart (fixed in worker/compat/header_keys.py). The
    record's value is a valid event: it is processed, and so are the events after it."""
    settings: Settings = engine["settings"]
    main = f"{settings.topic_prefix}audit"
    worker = engine["start"]()
    worker.wait_ready()
    poisoned, value = valid_record(random.Random(SEED), 0)
    asyncio.run(
        produce_raw_batch(settings.bootstrap, main, PARTITION, poison_header_key_batch(b"p", value))
    )
    after = [valid_record(random.Random(SEED), i) for i in range(1, 4)]
    want = {poisoned} | {event_id for event_id, _ in after}
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    for _, good in after:
        producer.produce(main, key=b"v", value=good, partition=PARTITION)
    assert producer.flush(15) == 0
    ledger: Ledger = engine["ledger"]
    outcome = wait_for(
        lambda: (
            ("exited" if worker.proc is None or worker.proc.poll() is not None else None)
            or ("done" if want <= ledger.ids() else None)
        ),
        60,
        "the poisoned record and the events after it done, or the worker gone",
    )
    assert outcome == "done", f"the worker exited:\n{worker.tail(30)}"
    assert "UnicodeDecodeError" not in worker.tail(100_000)
