"""P7: worker memory with 1M idempotency keys held.

Processing a million events per run is too slow for these shared machines, so the keys are
*recovered* instead: the bench writes the ``audit`` done-table changelog of a fresh app id
itself, in the engine's own format (``streams.core.idempotency``: key
``b"<partition>|<created_ms>|<nonce>"``, value = expiry + packed 8-byte hashes, one record
per batch, to the batch's partition, as ``ChangelogWriter`` does), 1,000,000 hashes spread
over the run's partitions. A worker then starts, faust recovers the table into its memory
store, the bench publishes one event per partition so the ledger rebuilds its index from
the store, and reads the worker's RSS (/proc/<pid>/status VmRSS) and the
``streams_idempotency_keys`` gauge. A baseline worker (empty changelog, same events) gives
the RSS without keys.

Two layouts: batches of 1,000 hashes (what group commit is meant to produce) and batches of
``BENCH_P7_SMALL_BATCH`` hashes (default 2: P1 measured about one to three hashes per
changelog record when draining, i.e. what today's engine writes under load). The value is
the RSS with the small batches, MB; target <= 300 MB both ways.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

KEYS = 1_000_000
BIG_BATCH = 1000
TARGET_MB = 300.0
RECOVERY_TIMEOUT_S = 300.0


def _small_batch() -> int:
    return int(os.environ.get("BENCH_P7_SMALL_BATCH", "2"))


@dataclass
class _State:
    pad: str
    runs: int = 0


def setup(ctx: BenchContext) -> _State:
    fam = eng.family(ctx, "memory0", eng.PIPE_AUDIT)
    fam.provision()
    publisher = fam.publisher()
    try:
        pad = eng.pad_for(publisher, ctx.payload_bytes, ctx.partitions)
    finally:
        publisher.close(10)
    return _State(pad)


def _write_changelog(ctx: BenchContext, topic: str, keys: int, batch: int) -> float:
    """Write ``keys`` random hashes in batches of ``batch``; returns seconds taken."""
    from streams.core.idempotency import batch_key, pack_batch

    started = time.monotonic()
    producer = Producer(ctx.producer_conf(**{"compression.type": "lz4", "linger.ms": 20}))
    expires_at_ms = int(time.time() * 1000) + 30 * 86_400_000
    nonce = secrets.token_hex(4)
    written = 0
    n = 0
    while written < keys:
        size = min(batch, keys - written)
        partition = n % ctx.partitions
        hashes = [int.from_bytes(os.urandom(8), "big", signed=True) for _ in range(size)]
        key = batch_key(partition, expires_at_ms - 30 * 86_400_000 + n, f"{nonce}{n:x}")
        value = pack_batch(expires_at_ms, hashes)
        while True:
            try:
                producer.produce(topic, value, key, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
        written += size
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("P7: changelog records not acknowledged in 120 s")
    return time.monotonic() - started


def _measure(ctx: BenchContext, state: _State, batch: int | None) -> dict[str, float]:
    """RSS (MB) of a worker holding KEYS keys in batches of ``batch`` (None: no keys)."""
    from streams.core import topology

    state.runs += 1  # new, empty topics for every worker: it meets only the events sent here
    fam = eng.family(ctx, f"memory{state.runs}", eng.PIPE_AUDIT)
    app_id = fam.next_app_id(f"b{batch or 0}")
    settings = fam.provision(app_id)
    write_s = 0.0
    if batch:
        topic = topology.changelog_topic(app_id, topology.table_name(eng.FAMILY, "done"))
        write_s = _write_changelog(ctx, topic, KEYS, batch)
    out = fam.out_path(app_id)
    started = time.monotonic()
    worker = eng.worker_process(
        fam,
        settings,
        {"BENCH_MODE": "noop", "BENCH_EXPECT": str(ctx.partitions), "BENCH_OUT": str(out)},
        app_id,
    )
    try:
        worker.wait_ready(RECOVERY_TIMEOUT_S)
        ready_s = time.monotonic() - started
        publisher: Any = fam.publisher()
        try:
            # one event per partition (subject ids hash over the partitions; a few extra)
            items = [
                (eng.EVENT_TYPE, eng.payload(i, 10 * ctx.partitions, state.pad))
                for i in range(10 * ctx.partitions)
            ]
            publisher.publish_batch(items)
        finally:
            publisher.close(10)
        eng.wait_record(out, worker, 60, "P7")
        time.sleep(2.0)
        rss_mb = eng.rss_kb(worker.proc.pid) / 1024
        held = worker.metric("streams_idempotency_keys", family=eng.FAMILY)
    finally:
        eng.stop(worker)
    return {"rss_mb": rss_mb, "keys": held, "ready_s": ready_s, "write_s": write_s}


def run(ctx: BenchContext, state: _State) -> Sample:
    small = _small_batch()
    base = _measure(ctx, state, None)
    big = _measure(ctx, state, BIG_BATCH)
    tiny = _measure(ctx, state, small)
    for got in (big, tiny):
        if got["keys"] < KEYS:
            raise RuntimeError(f"P7: the worker holds {got['keys']:.0f} keys, not {KEYS}")
    return Sample(
        tiny["rss_mb"],
        {
            "base_rss_mb": base["rss_mb"],
            "big_rss_mb": big["rss_mb"],
            "small_rss_mb": tiny["rss_mb"],
            "big_bytes_per_key": (big["rss_mb"] - base["rss_mb"]) * 1048576 / KEYS,
            "small_bytes_per_key": (tiny["rss_mb"] - base["rss_mb"]) * 1048576 / KEYS,
            "big_ready_s": big["ready_s"],
            "small_ready_s": tiny["ready_s"],
            "small_batch": float(small),
            "keys_held": tiny["keys"],
        },
    )


def _judge(summary: Summary, p0: Summary | None) -> bool:
    big = summary.detail("big_rss_mb")[0]
    return summary.median <= TARGET_MB and big <= TARGET_MB


def _note(summary: Summary) -> str:
    d = {k: summary.detail(k)[0] for k in summary.samples[0].details}
    return (
        f"1M keys recovered from the changelog; baseline worker {d['base_rss_mb']:.0f} MB; "
        f"batches of {BIG_BATCH}: {d['big_rss_mb']:.0f} MB ({d['big_bytes_per_key']:.0f} B/key, "
        f"ready {d['big_ready_s']:.0f} s after start); batches of {d['small_batch']:.0f}: "
        f"{d['small_rss_mb']:.0f} MB ({d['small_bytes_per_key']:.0f} B/key, ready "
        f"{d['small_ready_s']:.0f} s after start); value = the small-batch RSS"
    )


CASE = Case(
    id="P7",
    title="worker RSS with 1M idempotency keys",
    unit="MB",
    target=f"<= {TARGET_MB:.0f} MB both ways",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process",
    max_rounds=1,
)
