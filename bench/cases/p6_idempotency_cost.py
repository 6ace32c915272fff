"""P6: the idempotency ledger's cost: P1 with and without it, side by side.

Each run drains the ``pipe`` topic (the same N records as F0 and P1) twice with fresh app
ids: once with the family's ``idempotency: {enabled: false}`` and once with it on (the
order alternates between rounds). The value is the slowdown with it on, in percent:
``100 * (1 - on / off)``; target <= 25 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.cases import _engine as eng
from bench.cases import _toggle as toggle
from bench.cases.p1_worker_drain import drain_once
from bench.harness import BenchContext, Case, Sample, Summary

TARGET_SLOWDOWN_PCT = 25.0


@dataclass
class _State:
    on: eng.BenchFamily
    off: eng.BenchFamily
    rounds: int = 0


def setup(ctx: BenchContext) -> _State:
    on = eng.shared_pipe(ctx)
    off = eng.shared_pipe(ctx, "noidem", idempotency={"enabled": False})
    return _State(on, off)


def run(ctx: BenchContext, state: _State) -> Sample:
    state.rounds += 1
    return toggle.off_then_on(
        state.rounds,
        lambda: drain_once(ctx, state.off, ""),
        lambda: drain_once(ctx, state.on, "p6"),
        ("cpu_share", "cpu_us_per_event"),
    )


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median <= TARGET_SLOWDOWN_PCT


CASE = Case(
    id="P6",
    title="idempotency ledger cost (P1 off vs on)",
    unit="% slower",
    target=f"<= {TARGET_SLOWDOWN_PCT:.0f}% slower",
    setup=setup,
    run=run,
    judge=_judge,
    note=toggle.note("idempotency"),
    concurrency="1 worker process, family concurrency 64",
)
