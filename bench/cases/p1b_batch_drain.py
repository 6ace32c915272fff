"""P1B: P1 with a batch handler: the same drain, the no-op work done per batch.

The same pre-loaded ``pipe`` topic and worker as P1 (concurrency 64, idempotency on, a fresh
app id per run), but ``audit.claim_submitted`` has a batch handler
(``Batch(max_events=100, max_wait_ms=100)``, ``BENCH_MODE=batch`` in bench/handlers.py)
that marks every event done. Each event still passes decoding, the idempotency ledger, the
cancel check and the rate gate on its own, and gets its own done-marker; what changes is
one handler call (with its timeout and breaker guard) per batch instead of per event. The
drain rate runs from the first event handed to the handler to the N-th; /metrics must show
N done and nothing else. No target: it is read beside P0 and P1 of the same run
(``--only P0,P1,P1B``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.cases import _engine as eng
from bench.cases.p1_worker_drain import drain_once
from bench.harness import BenchContext, Case, Sample, Summary

MAX_EVENTS = 100
MAX_WAIT_MS = 100
BATCH_ENV = {
    "BENCH_MODE": "batch",
    "BENCH_BATCH_MAX_EVENTS": str(MAX_EVENTS),
    "BENCH_BATCH_MAX_WAIT_MS": str(MAX_WAIT_MS),
}


@dataclass
class _State:
    fam: eng.BenchFamily


def setup(ctx: BenchContext) -> _State:
    return _State(eng.shared_pipe(ctx))


def batch_sizes(record: dict[str, Any]) -> dict[str, float]:
    """Mean events per handler call, and the share of calls that got a full batch."""
    sizes = [int(sample[0]) for sample in record.get("samples", [])]
    if not sizes:
        return {"mean_batch": 0.0, "full_share": 0.0}
    full = sum(1 for size in sizes if size >= MAX_EVENTS)
    return {"mean_batch": sum(sizes) / len(sizes), "full_share": full / len(sizes)}


def run(ctx: BenchContext, state: _State) -> Sample:
    rate, details = drain_once(ctx, state.fam, "p1b", BATCH_ENV, batch_sizes)
    eng.measured.setdefault("P1B", []).append(rate)
    return Sample(rate, details)


def _note(summary: Summary) -> str:
    cpu = summary.detail("cpu_share")
    us = summary.detail("cpu_us_per_event")
    mean = summary.detail("mean_batch")
    full = summary.detail("full_share")
    p1 = sorted(eng.measured.get("P1", []))
    vs_p1 = f"; {summary.median / p1[len(p1) // 2]:.2f} x P1's median" if p1 else ""
    return (
        f"Batch({MAX_EVENTS}, {MAX_WAIT_MS} ms): {mean[0]:.1f} events per call, {full[0]:.0%} "
        f"of calls full; worker CPU {cpu[0]:.0%} of one core, {us[0]:.0f} us CPU/event "
        f"(min {us[1]:.0f}, max {us[2]:.0f}){vs_p1}"
    )


CASE = Case(
    id="P1B",
    title="worker drain, batch no-op handler (100/batch), idempotency on",
    unit="events/s",
    target="none (read beside P0, P1)",
    setup=setup,
    run=run,
    note=_note,
    concurrency="1 worker process, family concurrency 64",
)
