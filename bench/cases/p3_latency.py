"""P3: end-to-end latency at half of P1's rate: event create time -> side effect.

The ``live<round>`` audit family (PIPE_AUDIT: the run's partition count, concurrency 64,
idempotency on) starts empty (new topics every round). Each run starts a worker with the
``latency`` bench handler, waits for /health/ready, publishes 200 warm-up events, then
publishes for ~6 s at a steady rate R with the SDK (``publish_batch_async`` every 5 ms, not
waiting for the previous batch, so acknowledgements do not pace the sender), 1,000 distinct
keys. The handler records ``now_ms - envelope.occurred_at_ms`` per event (both wall clocks
of this machine; ``occurred_at_ms`` is set by the SDK when it builds the record, so the
figure includes the SDK's 5 ms linger, the broker, the fetch and the pipeline up to the
handler call).

R = half of P1's median events/s measured earlier in the same bench run; without P1 in
the run, ``BENCH_P3_RATE`` or the P1 median of the newest results file in bench/results,
else 1,000/s (``BENCH_P3_IDEMPOTENCY=0`` turns the ledger off, for diagnosis). The value
is p99 over the steady-phase events (warm-up excluded), in ms; targets p50 <= 10 ms and
p99 <= 50 ms. Each sample keeps the steady phase's latencies as a histogram in its
``series`` (``latency_ms_histogram``: ``[[ms, count], ...]``, exact: the handler records
whole milliseconds), which the run's picture draws.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.cases import _engine as eng
from bench.harness import RESULTS_DIR, BenchContext, Case, Sample, Summary

KEYS = 1000
WARMUP_EVENTS = 200
STEADY_S = 6.0
TICK_S = 0.005
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
FALLBACK_RATE = 1000.0
RUN_TIMEOUT_S = 120.0


@dataclass
class _State:
    body: dict[str, Any]
    pad: str
    rounds: int = 0


def setup(ctx: BenchContext) -> _State:
    body = dict(eng.PIPE_AUDIT)
    if os.environ.get("BENCH_P3_IDEMPOTENCY", "1") == "0":  # diagnosis: without the ledger
        body["idempotency"] = {"enabled": False}
    fam = eng.family(ctx, "live0", body)
    fam.provision()
    publisher = fam.publisher()
    try:
        pad = eng.pad_for(publisher, ctx.payload_bytes, KEYS)
    finally:
        publisher.close(10)
    return _State(body, pad)


def rate_for_run() -> tuple[float, str]:
    """(events/s, where it came from)."""
    p1 = eng.measured.get("P1")
    if p1:
        return statistics.median(p1) / 2, "half of P1 (this run)"
    if os.environ.get("BENCH_P3_RATE"):
        return float(os.environ["BENCH_P3_RATE"]), "BENCH_P3_RATE"
    for path in sorted(RESULTS_DIR.glob("*.json"), reverse=True):
        try:
            cases = json.loads(path.read_text())["cases"]
        except (OSError, ValueError, KeyError):
            continue
        for case in cases:
            if case.get("id") == "P1" and case.get("median"):
                return float(case["median"]) / 2, f"half of P1 in {path.name}"
    return FALLBACK_RATE, "fallback"


async def _publish_steady(
    publisher: Any, rate: float, count: int, pad: str, first_seq: int
) -> tuple[float, float]:
    """Publish ``count`` events at ``rate``/s; returns (start wall ms, achieved rate)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    start_wall_ms = time.time() * 1000
    sent = 0
    tasks: list[asyncio.Task[Any]] = []
    while sent < count:
        due = min(count, int((loop.time() - started) * rate) + 1)
        if due > sent:
            items = [
                (eng.EVENT_TYPE, eng.payload(first_seq + i, KEYS, pad)) for i in range(sent, due)
            ]
            tasks.append(asyncio.create_task(publisher.publish_batch_async(items, timeout_s=60)))
            sent = due
        await asyncio.sleep(TICK_S)
    elapsed = loop.time() - started
    await asyncio.gather(*tasks)
    return start_wall_ms, count / max(elapsed, 1e-9)


def run(ctx: BenchContext, state: _State) -> Sample:
    state.rounds += 1  # empty topics every round: a fresh group must not meet old events
    fam = eng.family(ctx, f"live{state.rounds}", state.body)
    rate, source = rate_for_run()
    steady = max(500, int(rate * STEADY_S))
    app_id = fam.next_app_id()
    settings = fam.provision(app_id)
    out = fam.out_path(app_id)
    worker = eng.worker_process(
        fam,
        settings,
        {
            "BENCH_MODE": "latency",
            "BENCH_EXPECT": str(WARMUP_EVENTS + steady),
            "BENCH_OUT": str(out),
        },
        app_id,
    )
    publisher = fam.publisher()
    try:
        worker.wait_ready(eng.WORKER_READY_TIMEOUT_S)
        publisher.publish_batch(
            [(eng.EVENT_TYPE, eng.payload(i, KEYS, state.pad)) for i in range(WARMUP_EVENTS)]
        )
        time.sleep(1.0)
        start_ms, achieved = asyncio.run(
            _publish_steady(publisher, rate, steady, state.pad, WARMUP_EVENTS)
        )
        record = eng.wait_record(out, worker, RUN_TIMEOUT_S, "P3")
        counts = eng.outcomes(worker)
    finally:
        publisher.close(10)
        eng.stop(worker)
    if counts["retried"] or counts["dead_lettered"]:
        raise RuntimeError(f"P3: unexpected outcomes {counts}")
    latencies = [float(lat) for occurred, lat in record["samples"] if occurred >= start_ms - 1]
    warm = [float(lat) for occurred, lat in record["samples"] if occurred < start_ms - 1]
    p99 = eng.percentile(latencies, 99)
    return Sample(
        p99,
        {
            "p50_ms": eng.percentile(latencies, 50),
            "p90_ms": eng.percentile(latencies, 90),
            "p99_ms": p99,
            "p999_ms": eng.percentile(latencies, 99.9),
            "max_ms": max(latencies),
            "warmup_p99_ms": eng.percentile(warm, 99) if warm else 0.0,
            "rate_target": rate,
            "rate_achieved": achieved,
            "events": float(len(latencies)),
            "rate_from_p1": 1.0 if source.startswith("half of P1 (this") else 0.0,
        },
        {"latency_ms_histogram": latency_histogram(latencies)},
    )


def latency_histogram(latencies_ms: list[float]) -> list[list[int]]:
    """``[[ms, count], ...]`` in ms order (the samples are whole milliseconds)."""
    return [[ms, n] for ms, n in sorted(Counter(round(x) for x in latencies_ms).items())]


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.detail("p50_ms")[0] <= TARGET_P50_MS and summary.median <= TARGET_P99_MS


def _note(summary: Summary) -> str:
    p50 = summary.detail("p50_ms")
    p99 = summary.detail("p99_ms")
    p999 = summary.detail("p999_ms")
    mx = summary.detail("max_ms")
    rate = summary.detail("rate_target")
    achieved = summary.detail("rate_achieved")
    return (
        f"at {rate[0]:,.0f} events/s (achieved {achieved[0]:,.0f}) for {STEADY_S:.0f} s: "
        f"p50 median {p50[0]:.0f} ms (min {p50[1]:.0f}, max {p50[2]:.0f}); p99 median "
        f"{p99[0]:.0f} ms (min {p99[1]:.0f}, max {p99[2]:.0f}); p99.9 {p999[0]:.0f} ms; max "
        f"{mx[2]:.0f} ms; value = p99"
    )


CASE = Case(
    id="P3",
    title="end-to-end latency at half of P1's rate",
    unit="ms p99",
    target=f"p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 64; SDK publisher in the bench process",
)
