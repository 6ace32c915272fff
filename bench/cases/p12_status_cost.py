"""P12: the cost of event status tracking (``streams.status``): P1 with and without it.

Each round drains the ``pipe`` topic (the same N records as P1) twice with fresh app ids:
once with ``STREAMS_STATUS_TRACKING=false`` and once with it on (the default; the order
alternates between rounds). With it on, every event's transitions are coalesced per event
over ``STREAMS_STATUS_LINGER_MS`` and one status record per event is produced (the no-op
handler finishes within the window, so "running" is folded into "done"). The value is the
slowdown with it on, in percent, ``100 * (1 - on / off)``; target <= 10 % (issue 13). Run
it beside P0 and P1: ``--only P0,P1,P12``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.cases import _engine as eng
from bench.cases.p1_worker_drain import drain_once
from bench.harness import BenchContext, Case, Sample, Summary

TARGET_SLOWDOWN_PCT = 10.0
OFF = {"STREAMS_STATUS_TRACKING": "false"}


@dataclass
class _State:
    fam: eng.BenchFamily
    rounds: int = 0


def setup(ctx: BenchContext) -> _State:
    return _State(eng.shared_pipe(ctx))


def run(ctx: BenchContext, state: _State) -> Sample:
    state.rounds += 1
    if state.rounds % 2:
        off, off_details = drain_once(ctx, state.fam, "p12off", OFF)
        on, on_details = drain_once(ctx, state.fam, "p12on")
    else:
        on, on_details = drain_once(ctx, state.fam, "p12on")
        off, off_details = drain_once(ctx, state.fam, "p12off", OFF)
    return Sample(
        100.0 * (1.0 - on / off),
        {
            "on_events_per_s": on,
            "off_events_per_s": off,
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
        f"status off median {off[0]:,.0f} events/s (min {off[1]:,.0f}, max {off[2]:,.0f}, "
        f"{off_us[0]:.0f} us CPU/event); on median {on[0]:,.0f} (min {on[1]:,.0f}, max "
        f"{on[2]:,.0f}, {on_us[0]:.0f} us CPU/event); value = % slower with it"
    )


CASE = Case(
    id="P12",
    title="status tracking cost (P1 off vs on)",
    unit="% slower",
    target=f"<= {TARGET_SLOWDOWN_PCT:.0f}% slower",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 64",
)
