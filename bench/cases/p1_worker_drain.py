"""P1: happy-path throughput of one worker process, no-op handler, idempotency on.

The ``pipe`` audit family (the run's partition count, concurrency 64, handler timeout 10 s,
no rate limits) holds N pre-loaded ``audit.claim_submitted`` events (200 B values, distinct
subject ids) — the same records F0 counts. Each run provisions a fresh app id (new group,
new empty idempotency changelog), starts ``streams worker --handlers bench.handlers
--family audit`` with the no-op handler, and takes the drain rate from the first handled
event to the N-th (the handler records both times; start-up, group join and table recovery
are excluded). After the record, /metrics must show N done, no duplicates, no retries, no
DLQ. Target (issue 17) >= 15,000 events/s and >= 1.2 x F0.

``BENCH_PROFILE=<dir>`` runs the workers under cProfile (see ``_engine.worker_process``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

TARGET_RATE = 15_000.0
TARGET_VS_F0 = 1.2
RUN_TIMEOUT_S = 240.0


@dataclass
class _State:
    fam: eng.BenchFamily


def setup(ctx: BenchContext) -> _State:
    return _State(eng.shared_pipe(ctx))


def drain_once(
    ctx: BenchContext,
    fam: eng.BenchFamily,
    label: str,
    extra_env: dict[str, str] | None = None,
    more: Callable[[dict[str, Any]], dict[str, float]] | None = None,
) -> tuple[float, dict[str, float]]:
    """One worker run over the pre-loaded topic: (events/s, details); ``extra_env`` varies
    the worker's settings (P12: ``STREAMS_STATUS_TRACKING=false``), ``more`` adds details
    read from the handler's record (P1B: batch sizes)."""
    app_id = fam.next_app_id(label)
    settings = fam.provision(app_id)
    out = fam.out_path(app_id)
    worker = eng.worker_process(
        fam,
        settings,
        {
            "BENCH_MODE": "noop",
            "BENCH_EXPECT": str(ctx.events),
            "BENCH_OUT": str(out),
            **(extra_env or {}),
        },
        app_id,
    )
    try:
        record = eng.wait_record(out, worker, RUN_TIMEOUT_S, f"{label or 'P1'} drain")
        time.sleep(0.3)  # let the last done-marker flush land before reading counters
        counts = eng.outcomes(worker)
        flushes = worker.metric("streams_ledger_flushes_total", family=eng.FAMILY)
    finally:
        eng.stop(worker)
    bad = {k: v for k, v in counts.items() if k != "done" and v}
    if counts["done"] != ctx.events or bad:
        raise RuntimeError(f"{app_id}: expected {ctx.events} done and nothing else, got {counts}")
    rate, elapsed_s, cpu = eng.drain_rate(record)
    return rate, {
        "elapsed_s": elapsed_s,
        "cpu_share": cpu,
        "cpu_us_per_event": eng.cpu_us_per_event(record),
        "maxrss_mb": record["maxrss_kb"] / 1024,
        "events_per_flush": ctx.events / flushes if flushes else 0.0,
        **(more(record) if more is not None else {}),
    }


def run(ctx: BenchContext, state: _State) -> Sample:
    rate, details = drain_once(ctx, state.fam, "")
    eng.measured.setdefault("P1", []).append(rate)
    return Sample(rate, details)


def _judge(summary: Summary, p0: Summary | None) -> bool:
    ok = summary.median >= TARGET_RATE
    if summary.ratio_to_f0 is not None:
        ok = ok and summary.ratio_to_f0 >= TARGET_VS_F0
    return ok


def _note(summary: Summary) -> str:
    cpu = summary.detail("cpu_share")
    rss = summary.detail("maxrss_mb")
    per_flush = summary.detail("events_per_flush")
    us = summary.detail("cpu_us_per_event")
    return (
        f"worker CPU {cpu[0]:.0%} of one core while draining (min {cpu[1]:.0%}, max "
        f"{cpu[2]:.0%}), {us[0]:.0f} us CPU/event (min {us[1]:.0f}, max {us[2]:.0f}); "
        f"max RSS {rss[0]:.0f} MB; {per_flush[0]:.1f} events per ledger flush (one "
        f"changelog record per partition per flush); concurrency 64, distinct keys"
    )


CASE = Case(
    id="P1",
    title="worker drain, no-op handler, idempotency on",
    unit="events/s",
    target=f">= {TARGET_RATE:,.0f}/s and >= {TARGET_VS_F0:.1f} x F0",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 64",
)
