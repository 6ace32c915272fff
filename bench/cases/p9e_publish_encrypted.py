"""P9E: the SDK's publish rate with one encrypted field against none (same events, same run).

Two publishers on the ``email`` family's main topic publish the very same N
``email.requested`` payloads (P9's, 200-byte values): one plain, one configured with
``STREAMS_SENSITIVE_FIELDS=email.requested.to`` and an AES-256 key, so the SDK seals the
address (AES-GCM, a fresh nonce per value) before encoding. Runs alternate which goes
first. The value is the encrypted publisher's events/s; ``ratio_to_plain`` its share of the
plain one's, and ``seal_us`` the sealing cost per event measured alone.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from typing import Any

from bench.cases.p9_publish import EVENT_TYPE, FLUSH_TIMEOUT_S, _pad_for, payload
from bench.harness import BenchContext, Case, Sample, Summary

TARGET_RATIO = 0.8
KEYS = "bench=" + base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class _State:
    plain: Any
    sealed: Any
    items: list[tuple[str, dict[str, Any]]]
    rounds: int = 0


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
    if spec.name not in ctx.admin().list_topics(timeout=10).topics:  # P9 may have made it
        ctx.create_topic(spec.name, ctx.partitions, spec.configs)
    plain = Publisher(ctx.settings, catalog=catalog, producer_name="bench")
    os.environ["STREAMS_ENCRYPTION_KEYS"] = KEYS
    os.environ["STREAMS_SENSITIVE_FIELDS"] = "email.requested.to"
    try:
        sealed = Publisher(ctx.settings, catalog=catalog, producer_name="bench")
    finally:
        del os.environ["STREAMS_ENCRYPTION_KEYS"], os.environ["STREAMS_SENSITIVE_FIELDS"]
    pad = _pad_for(plain, ctx.payload_bytes)
    items = [(EVENT_TYPE, payload(i, pad)) for i in range(ctx.events)]
    plain.publish_batch(items[:100])
    sealed.publish_batch(items[:100])
    return _State(plain, sealed, items)


def _rate(publisher: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    results = publisher.publish_batch(items, timeout_s=FLUSH_TIMEOUT_S)
    if len(results) != len(items):
        raise RuntimeError(f"P9E: {len(results)} results for {len(items)} events")
    return len(items) / (time.perf_counter() - started)


def _seal_us(state: _State) -> float:
    from streams.events import build_event

    events = [build_event(EVENT_TYPE, p, event_id="e") for _, p in state.items[:2000]]
    sealer = state.sealed._preparer.sealer
    started = time.perf_counter()
    for event in events:
        sealer.seal(event)
    return (time.perf_counter() - started) / len(events) * 1e6


def _open_us(state: _State) -> float:
    """The worker side: ``DecryptingDecoder.decode_event`` minus ``SchemaStore.decode_event``
    on the same sealed values, per event (µs)."""
    from streams.crypto import decoder_for
    from streams.crypto.keys import EncryptionSettings
    from streams.serde import SchemaStore

    store: SchemaStore = state.sealed.store
    values = [state.sealed.prepare(t, p).value for t, p in state.items[:2000]]
    plain_values = [state.plain.prepare(t, p).value for t, p in state.items[:2000]]
    settings = EncryptionSettings(encryption_keys=KEYS, sensitive_fields="email.requested.to")
    decoder = decoder_for(store, settings=settings)
    started = time.perf_counter()
    for value in values:
        decoder.decode_event(value)
    sealed_s = time.perf_counter() - started
    started = time.perf_counter()
    for value in plain_values:
        store.decode_event(value)
    plain_s = time.perf_counter() - started
    return (sealed_s - plain_s) / len(values) * 1e6


def run(ctx: BenchContext, state: _State) -> Sample:
    state.rounds += 1
    if state.rounds % 2:
        sealed = _rate(state.sealed, state.items)
        plain = _rate(state.plain, state.items)
    else:
        plain = _rate(state.plain, state.items)
        sealed = _rate(state.sealed, state.items)
    return Sample(
        sealed,
        {
            "plain_events_per_s": plain,
            "ratio_to_plain": sealed / plain,
            "seal_us": _seal_us(state),
            "open_us": _open_us(state),
        },
    )


def teardown(state: _State) -> None:
    state.plain.close(10)
    state.sealed.close(10)


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.detail("ratio_to_plain")[0] >= TARGET_RATIO


def _note(summary: Summary) -> str:
    plain = summary.detail("plain_events_per_s")
    ratio = summary.detail("ratio_to_plain")
    return (
        f"plain (no encrypted field) median {plain[0]:,.0f} events/s; encrypted/plain median "
        f"{ratio[0]:.2f} (min {ratio[1]:.2f}, max {ratio[2]:.2f}); sealing alone "
        f"{summary.detail('seal_us')[0]:.1f} µs per event; the worker's decode with the "
        f"field opened costs {summary.detail('open_us')[0]:.1f} µs more per event than plain"
    )


CASE = Case(
    id="P9E",
    title="SDK publish with one encrypted field vs none (email.requested.to)",
    unit="events/s",
    target=f">= {TARGET_RATIO:.0%} of the plain SDK",
    setup=setup,
    run=run,
    teardown=teardown,
    judge=_judge,
    note=_note,
    concurrency="1 process, 2 producers (same config), alternating",
)
