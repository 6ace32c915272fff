"""P12: the cost of event status tracking (``streams.status``): P1 with and without it.

Each round drains the ``pipe`` topic (the same N records as P1) twice with fresh app ids:
once with ``STREAMS_STATUS_TRACKING=false`` and once with it on (the default; the order
alternates between rounds). With it on, every event's transitions are coalesced per event
over ``STREAMS_STATUS_LINGER_MS`` and one status record per event is produced (the no-op
handler finishes within the window, so "running" is folded into "done"). The value is the
slowdown with it on, in percent, ``100 * (1 - on / off)``; target <= 10 % (issue 13). Run
it beside P0 and P1: ``--only P0,P1,P12``, with an even ``--repeat``: on the shared
machines the second drain of a round was repeatedly the slower one, whichever it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.cases import _engine as eng
from bench.cases import _toggle as toggle
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
    return toggle.off_then_on(
        state.rounds,
        lambda: drain_once(ctx, state.fam, "p12off", OFF),
        lambda: drain_once(ctx, state.fam, "p12on"),
        ("cpu_us_per_event",),
    )


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median <= TARGET_SLOWDOWN_PCT


CASE = Case(
    id="P12",
    title="status tracking cost (P1 off vs on)",
    unit="% slower",
    target=f"<= {TARGET_SLOWDOWN_PCT:.0f}% slower",
    setup=setup,
    run=run,
    judge=_judge,
    note=toggle.note("status"),
    concurrency="1 worker process, family concurrency 64",
)
