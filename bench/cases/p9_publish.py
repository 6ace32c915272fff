"""P9: the producer SDK's publish rate against raw confluent-kafka, side by side.

Setup creates the ``email`` family's main topic (catalog configs, the run's prefix), builds
N ``email.requested`` payloads whose encoded value is 200 bytes, and prepares the very same
records (key, value, headers) once with ``Publisher.prepare`` for the raw producer.

Each run times both, in alternating order:

- SDK: ``Publisher.publish_batch(items)`` — validate, encode, key, size-check (the batch
  fast path, ``streams.publish.fast``), produce, wait for every acknowledgement (acks=all,
  idempotence);
- raw: ``Producer.produce`` of the prepared bytes with a counting delivery callback, then
  ``flush()`` — same producer configuration as the SDK's.

The value is the SDK's events/s; ``ratio_to_raw`` = SDK / raw, target >= 0.5.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from bench.harness import BenchContext, Case, Sample, Summary

EVENT_TYPE = "email.requested"
TARGET_RATIO = 0.5
FLUSH_TIMEOUT_S = 120.0
PROFILE_EVENTS = 5000


@dataclass
class _State:
    publisher: Any  # streams.Publisher
    raw: Producer
    topic: str
    items: list[tuple[str, dict[str, Any]]]
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    value_bytes: int
    record_bytes: float
    rounds: int = 0


def payload(i: int, pad_chars: int) -> dict[str, Any]:
    """An ``email.requested`` payload; ``pad_chars`` tunes the encoded size."""
    return {
        "user_id": f"user-{i:08d}",
        "to": f"user-{i:08d}@example.com",
        "locale": "en",
        "template": "welcome",
        "variables": {"name": "Alice", "ref": "x" * pad_chars},
    }


def _pad_for(publisher: Any, target_bytes: int) -> int:
    """The padding that makes the encoded value exactly ``target_bytes`` (or just above)."""
    pad = 1
    size = len(publisher.prepare(EVENT_TYPE, payload(0, pad)).value)
    return max(1, pad + target_bytes - size)


def setup(ctx: BenchContext) -> _State:
    from streams import Publisher
    from streams.catalog import desired_topics, load_catalog

    catalog = load_catalog(ctx.settings.catalog_path)
    spec = next(
        s
        for s in desired_topics(
            catalog, prefix=ctx.settings.topic_prefix, app_id=ctx.settings.app_id, rf_override=1
        )
        if s.family == "email" and s.role == "main"
    )
    topic = ctx.create_topic(spec.name, ctx.partitions, spec.configs)
    publisher = Publisher(ctx.settings, catalog=catalog, producer_name="bench")
    pad = _pad_for(publisher, ctx.payload_bytes)
    items = [(EVENT_TYPE, payload(i, pad)) for i in range(ctx.events)]
    prepared = [publisher.prepare(EVENT_TYPE, p) for _, p in items]
    records = [(r.value, r.key, r.headers) for r in prepared]
    record_bytes = sum(len(v) + len(k) + sum(len(n) + len(x) for n, x in h) for v, k, h in records)
    conf = {k: v for k, v in publisher.producer_config().items() if k != "error_cb"}
    raw = Producer(conf)
    publisher.publish_batch(items[:100])  # warm both: connections, producer ids, caches
    _raw_produce(raw, topic, records[:100])
    return _State(
        publisher,
        raw,
        topic,
        items,
        records,
        len(records[0][0]),
        record_bytes / len(records),
    )


def _raw_produce(raw: Producer, topic: str, records: list[Any]) -> None:
    failed = 0

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    produce = raw.produce
    for value, key, headers in records:
        while True:
            try:
                produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                raw.poll(0.01)
    if raw.flush(FLUSH_TIMEOUT_S) != 0 or failed:
        raise RuntimeError(f"P9 raw: {failed} deliveries failed or not finished")


def _time_sdk(state: _State) -> float:
    started = time.perf_counter()
    results = state.publisher.publish_batch(state.items, timeout_s=FLUSH_TIMEOUT_S)
    elapsed_s = time.perf_counter() - started
    if len(results) != len(state.items):
        raise RuntimeError(f"P9 SDK: {len(results)} results for {len(state.items)} events")
    return len(results) / elapsed_s


def _time_raw(state: _State) -> float:
    started = time.perf_counter()
    _raw_produce(state.raw, state.topic, state.records)
    return len(state.records) / (time.perf_counter() - started)


def _cost_us(state: _State) -> dict[str, float]:
    """Where the SDK's time goes, per event (µs): the batch fast path's prepare, and the
    ordinary per-event path's (``Publisher.prepare``: build_event + encode + the rest)."""
    from streams.events import build_event
    from streams.publish.prepare import Preparer

    sample = [p for _, p in state.items[:PROFILE_EVENTS]]
    store, publisher = state.publisher.store, state.publisher
    preparer = Preparer(
        publisher.catalog,
        store,
        topic_prefix=publisher.settings.topic_prefix,
        producer_name=publisher.producer_name,
    )
    preparer.batch(state.items[:100])  # the per-type plan is built once, not timed
    started = time.perf_counter()
    if len(preparer.batch(state.items[:PROFILE_EVENTS])) != len(sample):
        raise RuntimeError("P9: the batch prepare lost items")
    batch_s = time.perf_counter() - started

    started = time.perf_counter()
    events = [build_event(EVENT_TYPE, p, event_id="e") for p in sample]
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    for event in events:
        store.encode(event)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    for p in sample:
        publisher.prepare(EVENT_TYPE, p)
    prepare_s = time.perf_counter() - started
    n = len(sample) / 1e6
    return {
        "batch_prepare_us": batch_s / n,
        "build_event_us": build_s / n,
        "encode_us": encode_s / n,
        "prepare_us": prepare_s / n,
    }


def run(ctx: BenchContext, state: _State) -> Sample:
    state.rounds += 1
    if state.rounds % 2:
        sdk = _time_sdk(state)
        raw = _time_raw(state)
    else:
        raw = _time_raw(state)
        sdk = _time_sdk(state)
    return Sample(
        sdk,
        {
            "raw_events_per_s": raw,
            "ratio_to_raw": sdk / raw,
            "sdk_us_per_event": 1e6 / sdk,
            "raw_us_per_event": 1e6 / raw,
            **_cost_us(state),
            "value_bytes": state.value_bytes,
            "record_bytes": state.record_bytes,
        },
    )


def teardown(state: _State) -> None:
    state.raw.flush(10)
    state.publisher.close(10)


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.detail("ratio_to_raw")[0] >= TARGET_RATIO


def _note(summary: Summary) -> str:
    raw = summary.detail("raw_events_per_s")
    ratio = summary.detail("ratio_to_raw")
    value_bytes = summary.detail("value_bytes")[0]
    record_bytes = summary.detail("record_bytes")[0]
    names = ("batch_prepare_us", "build_event_us", "encode_us", "prepare_us")
    cost = {k: summary.detail(k)[0] for k in names}
    return (
        f"raw confluent-kafka produce median {raw[0]:,.0f} events/s (min {raw[1]:,.0f}, "
        f"max {raw[2]:,.0f}); SDK/raw median {ratio[0]:.2f} (min {ratio[1]:.2f}, max "
        f"{ratio[2]:.2f}); value {value_bytes:.0f} B, record with key+headers "
        f"{record_bytes:.0f} B. Per event: SDK {summary.detail('sdk_us_per_event')[0]:.1f} µs, "
        f"raw {summary.detail('raw_us_per_event')[0]:.1f} µs; of the SDK's, the batch "
        f"fast path prepares in {cost['batch_prepare_us']:.1f} µs (one event alone, "
        f"Publisher.prepare: {cost['prepare_us']:.1f} µs = build_event "
        f"{cost['build_event_us']:.1f} + SchemaStore.encode {cost['encode_us']:.1f} + "
        "keys/headers/ids)"
    )


CASE = Case(
    id="P9",
    title="SDK publish_batch (email.requested)",
    unit="events/s",
    target=f"SDK >= {TARGET_RATIO:.0%} of raw produce",
    setup=setup,
    run=run,
    teardown=teardown,
    judge=_judge,
    note=_note,
    concurrency="1 process, 1 caller thread (+ the SDK's poll thread), one batch of N",
)
