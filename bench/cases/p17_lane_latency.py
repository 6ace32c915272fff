"""P17: a high priority lane's latency under a low lane's backlog (issue 18's benchmark).

The ``lanes<round>`` audit family has priority lanes high / normal / low (weights 6 / 3 / 1,
low's minimum share 5%), concurrency 16, idempotency on; new topics every round. A worker
with the ``lanes`` bench handler starts; after 50 warm-up events, 200 high-priority events
are published at 50/s on the idle worker (the reference), then 100,000 low-priority events
that hold their slot for 20 ms each (a backlog of minutes), then 1,000 high-priority events
at 50/s. The handler
records ``now_ms - envelope.occurred_at_ms`` of every high event (both wall clocks of this
machine; the SDK sets ``occurred_at_ms`` when it builds the record).

The value is the high lane's p99 under the backlog, in ms; the target is at most twice its
p99 on the idle worker (with a floor of one low hold, 20 ms: a slot frees at most that late).
"""

from __future__ import annotations

import time
from typing import Any

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

LANES_AUDIT: dict[str, Any] = {
    **eng.PIPE_AUDIT,
    "concurrency": 16,
    "priorities": {
        "lanes": ["high", "normal", "low"],
        "default": "normal",
        "weights": {"high": 6, "normal": 3, "low": 1},
        "min_share": {"low": 0.05},
    },
}
WARMUP_EVENTS = 50
IDLE_EVENTS = 200
BUSY_EVENTS = 1_000
BACKLOG = 100_000
RATE_PER_S = 50.0
LOW_HOLD_MS = 20
CHUNK = 10_000
RUN_TIMEOUT_S = 180.0


def _item(i: int, priority: str, **details: str) -> dict[str, Any]:
    return {
        "event_type": eng.EVENT_TYPE,
        "payload": eng.payload(i, 1000, "", **details),
        "priority": priority,
    }


def _paced(publisher: Any, count: int, first: int) -> int:
    """``count`` high events at RATE_PER_S; returns the wall ms when the first was sent."""
    started = time.monotonic()
    start_ms = int(time.time() * 1000)
    for i in range(count):
        pause_s = started + i / RATE_PER_S - time.monotonic()
        if pause_s > 0:
            time.sleep(pause_s)
        publisher.publish_batch([_item(first + i, "high")])
    return start_ms


def run(ctx: BenchContext, state: dict[str, int]) -> Sample:
    state["rounds"] = state.get("rounds", 0) + 1
    fam = eng.family(ctx, f"lanes{state['rounds']}", LANES_AUDIT)
    app_id = fam.next_app_id()
    settings = fam.provision(app_id)
    out = fam.out_path(app_id)
    worker = eng.worker_process(
        fam,
        settings,
        {
            "BENCH_MODE": "lanes",
            "BENCH_EXPECT": str(WARMUP_EVENTS + IDLE_EVENTS + BUSY_EVENTS),
            "BENCH_OUT": str(out),
        },
        app_id,
    )
    publisher = fam.publisher()
    try:
        worker.wait_ready(eng.WORKER_READY_TIMEOUT_S)
        _paced(publisher, WARMUP_EVENTS, 0)
        time.sleep(1.0)
        idle_ms = _paced(publisher, IDLE_EVENTS, WARMUP_EVENTS)
        low = 0
        while low < BACKLOG:
            n = min(CHUNK, BACKLOG - low)
            publisher.publish_batch(
                [_item(low + i, "low", hold_ms=str(LOW_HOLD_MS)) for i in range(n)],
                timeout_s=120,
            )
            low += n
        time.sleep(1.0)  # the worker is busy with the backlog
        busy_ms = _paced(publisher, BUSY_EVENTS, WARMUP_EVENTS + IDLE_EVENTS)
        record = eng.wait_record(out, worker, RUN_TIMEOUT_S, "P17")
    finally:
        publisher.close(10)
        eng.stop(worker)
    idle = [
        float(lat) for occurred, lat in record["samples"] if idle_ms - 1 <= occurred < busy_ms - 1
    ]
    busy = [float(lat) for occurred, lat in record["samples"] if occurred >= busy_ms - 1]
    p99 = eng.percentile(busy, 99)
    idle_p99 = eng.percentile(idle, 99)
    return Sample(
        p99,
        {
            "idle_p50_ms": eng.percentile(idle, 50),
            "idle_p99_ms": idle_p99,
            "p50_ms": eng.percentile(busy, 50),
            "p99_ms": p99,
            "max_ms": max(busy),
            "ratio_to_idle": p99 / max(idle_p99, LOW_HOLD_MS),
        },
    )


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return max(summary.detail("ratio_to_idle")) <= 2.0


def _note(summary: Summary) -> str:
    idle = summary.detail("idle_p99_ms")
    p50 = summary.detail("p50_ms")
    ratio = summary.detail("ratio_to_idle")
    return (
        f"high lane at {RATE_PER_S:.0f}/s under {BACKLOG:,} low events holding their slot "
        f"{LOW_HOLD_MS} ms: p50 {sorted(p50)[len(p50) // 2]:.0f} ms; idle p99 "
        f"{sorted(idle)[len(idle) // 2]:.0f} ms; p99 / max(idle p99, {LOW_HOLD_MS} ms) "
        f"max {max(ratio):.2f} (target <= 2)"
    )


CASE = Case(
    id="P17",
    title="high lane p99 under a 100k low-lane backlog",
    unit="ms p99",
    target="<= 2 x idle p99",
    setup=lambda ctx: {},
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 16; SDK publisher in the bench process",
)
