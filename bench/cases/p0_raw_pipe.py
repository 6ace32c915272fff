"""P0, the reference ("physical limit"): a raw confluent-kafka pipe in one Python process.

Setup pre-loads N records (200-byte values, distinct keys) into an input topic. Each run
assigns every input partition from the beginning (own group id, no group join), then
repeats: ``consume(num_messages=BATCH)``, produce each record to an output topic (acks=all,
idempotence), ``flush()`` until all are acknowledged, ``commit()`` synchronously, so an
offset is committed only after its output is durable. The figure is events/s from the
first consume to the last commit.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.harness import BenchContext, Case, Sample, Summary

BATCH = 1000
RUN_TIMEOUT_S = 120.0


@dataclass
class _State:
    source: str
    sink: str
    producer: Producer


def setup(ctx: BenchContext) -> _State:
    source = ctx.create_topic(ctx.topic_name("p0.in"))
    sink = ctx.create_topic(ctx.topic_name("p0.out"))
    loader = Producer(ctx.producer_conf(**{"compression.type": "lz4"}))
    value = os.urandom(ctx.payload_bytes // 2).hex().encode()[: ctx.payload_bytes]
    for i in range(ctx.events):
        _produce(loader, source, value, f"user-{i}".encode())
    if loader.flush(60) != 0:
        raise RuntimeError("P0: pre-loading did not finish within 60 s")
    producer = Producer(ctx.producer_conf(**{"compression.type": "lz4"}))
    _produce(producer, sink, b"warm-up", b"warm-up")  # connection and producer id first
    producer.flush(30)
    _warm_up_group_coordinator(ctx, source)
    return _State(source, sink, producer)


def _warm_up_group_coordinator(ctx: BenchContext, source: str) -> None:
    """One commit before timing: a fresh broker creates ``__consumer_offsets`` lazily."""
    consumer = _consumer(ctx)
    try:
        consumer.assign(
            [TopicPartition(source, p, OFFSET_BEGINNING) for p in range(ctx.partitions)]
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if consumer.consume(num_messages=1, timeout=1.0):
                consumer.commit(asynchronous=False)
                return
        raise RuntimeError("P0: no pre-loaded record arrived within 60 s")
    finally:
        consumer.close()


def _produce(
    producer: Producer, topic: str, value: bytes | None, key: bytes | None, headers: Any = None
) -> None:
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(0.01)


def run(ctx: BenchContext, state: _State) -> Sample:
    consumer = _consumer(ctx)
    consumer.assign(
        [TopicPartition(state.source, p, OFFSET_BEGINNING) for p in range(ctx.partitions)]
    )
    producer, sink = state.producer, state.sink
    done = batches = 0
    started = time.perf_counter()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while done < ctx.events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"P0: only {done} of {ctx.events} records in {RUN_TIMEOUT_S}s")
            messages = consumer.consume(num_messages=min(BATCH, ctx.events - done), timeout=0.5)
            if not messages:
                continue
            for msg in messages:
                if msg.error() is not None:
                    raise RuntimeError(f"P0: consume error {msg.error()}")
                _produce(producer, sink, msg.value(), msg.key(), msg.headers())
            if producer.flush(30) != 0:
                raise RuntimeError("P0: records not acknowledged within 30 s")
            consumer.commit(asynchronous=False)
            done += len(messages)
            batches += 1
        elapsed_s = time.perf_counter() - started
    finally:
        consumer.close()
    return Sample(done / elapsed_s, {"elapsed_s": elapsed_s, "batches": batches})


def _consumer(ctx: BenchContext) -> Consumer:
    from streams.broker.clients import base_conf

    return Consumer(
        base_conf(
            ctx.settings,
            **{
                "group.id": f"{ctx.settings.app_id}-p0-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            },
        )
    )


def teardown(state: _State) -> None:
    state.producer.flush(10)


def _note(summary: Summary) -> str:
    return f"consume {BATCH} -> produce (acks=all, idempotent) -> flush -> commit, per batch"


CASE = Case(
    id="P0",
    title="raw confluent-kafka pipe",
    unit="events/s",
    target="reference",
    setup=setup,
    run=run,
    teardown=teardown,
    note=_note,
    concurrency=f"1 process, 1 thread, batches of {BATCH}",
)
