"""F0, the framework's own ceiling: a bare faust agent that only counts events.

It reads the very topic P1 and P6 drain (the ``pipe`` audit family, N pre-loaded events of
200 B values with distinct keys, the run's partition count), in its own subprocess
(``bench/cases/_f0_agent.py``: raw serializers, memory store, no web, no leader topic,
``stream_wait_empty=False``, ``topic_allow_declare=False``), iterating
``stream.noack().events()`` and acking each event. A fresh consumer group per run. The
figure is events/s from the first event counted to the N-th (start-up excluded, as in P1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

RUN_TIMEOUT_S = 180.0


@dataclass
class _State:
    fam: eng.BenchFamily
    runs: int = 0


def setup(ctx: BenchContext) -> _State:
    return _State(eng.shared_pipe(ctx))


def run(ctx: BenchContext, state: _State) -> Sample:
    state.runs += 1
    out = state.fam.out_path(f"f0-{state.runs}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(
        {
            "F0_BOOTSTRAP": ctx.bootstrap,
            "F0_TOPIC": state.fam.main_topic,
            "F0_APP_ID": f"{ctx.settings.app_id}-f0-{state.runs}",
            "F0_EXPECT": str(ctx.events),
            "F0_OUT": str(out),
            "PYTHONPATH": str(eng.REPO),
        }
    )
    log_path = state.fam.dir / f"f0-{state.runs}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cases._f0_agent"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=eng.REPO,
        )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"F0: no result (exit {proc.poll()}):\n{tail}")
            time.sleep(0.02)
        import json

        record = json.loads(out.read_text())
    finally:
        proc.kill()
        proc.wait(10)
    rate, elapsed_s, cpu = eng.drain_rate(record)
    eng.measured.setdefault("F0", []).append(rate)
    return Sample(
        rate,
        {
            "elapsed_s": elapsed_s,
            "cpu_share": cpu,
            "cpu_us_per_event": eng.cpu_us_per_event(record),
        },
    )


def _note(summary: Summary) -> str:
    cpu = summary.detail("cpu_share")
    us = summary.detail("cpu_us_per_event")
    return (
        f"faust agent counting + acking, noack().events(); agent process CPU "
        f"{cpu[0]:.0%} of one core while draining, {us[0]:.0f} us CPU/event (min {us[1]:.0f}, "
        f"max {us[2]:.0f})"
    )


CASE = Case(
    id="F0",
    title="bare faust agent (count + ack)",
    unit="events/s",
    target="reference",
    setup=setup,
    run=run,
    note=_note,
    concurrency="1 process, 1 agent over all partitions",
)
