"""P6: the idempotency ledger's cost: P1 with and without it, side by side.

Each run drains the ``pipe`` topic (the same N records as F0 and P1) twice with fresh app
ids: once with the family's ``idempotency: {enabled: false}`` and once with it on (the
order alternates between rounds). The value is the slowdown with it on, in percent:
``100 * (1 - on / off)``; target <= 25 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.cases import _engine as eng
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
    if state.rounds % 2:
        off, off_details = drain_once(ctx, state.off, "")
        on, on_details = drain_once(ctx, state.on, "p6")
    else:
        on, on_details = drain_once(ctx, state.on, "p6")
        off, off_details = drain_once(ctx, state.off, "")
    return Sample(
        100.0 * (1.0 - on / off),
        {
            "on_events_per_s": on,
            "off_events_per_s": off,
            "on_cpu_share": on_details["cpu_share"],
            "off_cpu_share": off_details["cpu_share"],
            "on_cpu_us_per_event": on_details["cpu_us_per_event"],
            "off_cpu_us_per_event": off_details["cpu_us_per_event"],
        },
    )


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median <= TARGET_SLOWDOWN_PCT


def _note(summary: Summary) -> str:
    on = summary.detail("on_events_per_s")
    off = summary.detail("off_events_per_s")
    on_us = summary.detail("on_cpu_us_per_event")
    off_us = summary.detail("off_cpu_us_per_event")
    return (
        f"idempotency off median {off[0]:,.0f} events/s (min {off[1]:,.0f}, max {off[2]:,.0f}, "
        f"{off_us[0]:.0f} us CPU/event); on median {on[0]:,.0f} (min {on[1]:,.0f}, max "
        f"{on[2]:,.0f}, {on_us[0]:.0f} us CPU/event); value = % slower with it"
    )


CASE = Case(
    id="P6",
    title="idempotency ledger cost (P1 off vs on)",
    unit="% slower",
    target=f"<= {TARGET_SLOWDOWN_PCT:.0f}% slower",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 64",
)
