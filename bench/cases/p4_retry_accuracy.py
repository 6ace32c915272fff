"""P4: retry delay accuracy on a 1 s / 10 s / 60 s ladder (jitter 0): actual - due.

The ``retry`` audit family (PIPE_AUDIT: tiers 1s, 10s, 1m, max_attempts 4, jitter 0,
concurrency 64, the run's partition count) starts empty. A worker with the ``retry``
bench handler is started; then 300 events (``fail_times=3``, 300 distinct keys) are
published at 100/s. Each fails on attempts 1-3 (Retryable) and succeeds on attempt 4, so
every event waits once in each tier. For attempts >= 2 the handler records
``now_ms - int(headers["streams-due-at-ms"])``: negative = early.

Targets: no early run; per tier p99 lateness <= max(100 ms, 2 % of the delay). The engine
adds ``STREAMS_CLOCK_SKEW_MARGIN_MS`` (default 20 ms) on purpose, so lateness starts there.
Runs once whatever ``--repeat`` (> 70 s); leave it out with ``--skip P4`` or ``--only``.
The value is the worst tier's p99 lateness in ms.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

EVENTS = 300
RATE = 100.0
TIERS_MS = (1_000, 10_000, 60_000)  # attempt 2 waited in tier 1, ...
RUN_TIMEOUT_S = 180.0


def _limit_ms(delay_ms: int) -> float:
    return max(100.0, 0.02 * delay_ms)


@dataclass
class _State:
    fam: eng.BenchFamily
    pad: str


def setup(ctx: BenchContext) -> _State:
    fam = eng.family(ctx, "retry", eng.PIPE_AUDIT)
    fam.provision()
    publisher = fam.publisher()
    try:
        pad = eng.pad_for(publisher, ctx.payload_bytes, EVENTS, fail_times="3")
    finally:
        publisher.close(10)
    return _State(fam, pad)


async def _publish(publisher: Any, pad: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    tasks = []
    while sent < EVENTS:
        due = min(EVENTS, int((loop.time() - started) * RATE) + 1)
        if due > sent:
            items = [
                (eng.EVENT_TYPE, eng.payload(i, EVENTS, pad, fail_times="3"))
                for i in range(sent, due)
            ]
            tasks.append(asyncio.create_task(publisher.publish_batch_async(items, timeout_s=60)))
            sent = due
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)


def run(ctx: BenchContext, state: _State) -> Sample:
    fam = state.fam
    app_id = fam.next_app_id()
    settings = fam.provision(app_id)
    out = fam.out_path(app_id)
    worker = eng.worker_process(
        fam,
        settings,
        {"BENCH_MODE": "retry", "BENCH_EXPECT": str(EVENTS * 4), "BENCH_OUT": str(out)},
        app_id,
    )
    publisher = fam.publisher()
    try:
        worker.wait_ready(eng.WORKER_READY_TIMEOUT_S)
        started = time.monotonic()
        asyncio.run(_publish(publisher, state.pad))
        record = eng.wait_record(out, worker, RUN_TIMEOUT_S, "P4")
        wall_s = time.monotonic() - started
        time.sleep(0.5)
        counts = eng.outcomes(worker)
    finally:
        publisher.close(10)
        eng.stop(worker)
    if counts["dead_lettered"] or counts["done"] != EVENTS:
        raise RuntimeError(f"P4: expected {EVENTS} done after 3 retries each, got {counts}")
    details: dict[str, float] = {"wall_s": wall_s, "retried": counts["retried"]}
    early_total = 0
    worst = 0.0
    for attempt, delay_ms in zip((2, 3, 4), TIERS_MS, strict=True):
        late = [float(x[1]) for x in record["samples"] if x[0] == attempt]
        if len(late) != EVENTS:
            raise RuntimeError(f"P4: {len(late)} samples for attempt {attempt}, not {EVENTS}")
        early = sum(1 for x in late if x < 0)
        early_total += early
        tag = f"{delay_ms // 1000}s"
        p99 = eng.percentile(late, 99)
        worst = max(worst, p99)
        details.update(
            {
                f"{tag}_early": float(early),
                f"{tag}_min_ms": min(late),
                f"{tag}_p50_ms": eng.percentile(late, 50),
                f"{tag}_p99_ms": p99,
                f"{tag}_max_ms": max(late),
                f"{tag}_mean_ms": statistics.fmean(late),
            }
        )
    details["early"] = float(early_total)
    return Sample(worst, details)


def _judge(summary: Summary, p0: Summary | None) -> bool:
    ok = summary.detail("early")[2] == 0
    for delay_ms in TIERS_MS:
        ok = ok and summary.detail(f"{delay_ms // 1000}s_p99_ms")[2] <= _limit_ms(delay_ms)
    return ok


def _note(summary: Summary) -> str:
    parts = [f"early {summary.detail('early')[2]:.0f}"]
    for delay_ms in TIERS_MS:
        tag = f"{delay_ms // 1000}s"
        parts.append(
            f"{tag} tier: late p50 {summary.detail(f'{tag}_p50_ms')[0]:.0f} ms, p99 "
            f"{summary.detail(f'{tag}_p99_ms')[0]:.0f} ms, min "
            f"{summary.detail(f'{tag}_min_ms')[0]:.0f}, max "
            f"{summary.detail(f'{tag}_max_ms')[0]:.0f} (limit {_limit_ms(delay_ms):.0f})"
        )
    return f"{EVENTS} events x 3 retries at {RATE:.0f}/s; " + "; ".join(parts)


CASE = Case(
    id="P4",
    title="retry delay accuracy (1s/10s/60s tiers)",
    unit="ms p99 late, worst tier",
    target="0 early; p99 late <= max(100 ms, 2% of delay)",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 64",
    max_rounds=1,
)
