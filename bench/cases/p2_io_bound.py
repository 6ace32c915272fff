"""P2: I/O-bound throughput: every handler call awaits a local HTTP server that answers after
50 ms.

The ``io`` audit family (the run's partition count, concurrency 64, idempotency on) holds
``min(N, 10,000)`` pre-loaded events over 1,000 distinct subject ids (the family's
concurrency bounds in-flight events per worker while per-key order is kept, so keys must
be many). The server (``bench/cases/_slow_server.py``, aiohttp) runs in its own process for
the whole case. Each run: fresh app id, worker with the ``http`` bench handler (one shared
aiohttp session, unlimited connector), drain rate from the first handled event to the last.
Ideal = concurrency / latency = 64 / 50 ms = 1,280 events/s; target >= 80 % of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary
from streams.testing.processes import free_port

CONCURRENCY = 64
DELAY_MS = 50
KEYS = 1000
MAX_EVENTS = 10_000
TARGET_EFFICIENCY = 0.8
RUN_TIMEOUT_S = 180.0
IDEAL = CONCURRENCY / (DELAY_MS / 1000)


@dataclass
class _State:
    fam: eng.BenchFamily
    server: subprocess.Popen[bytes]
    url: str
    events: int


def setup(ctx: BenchContext) -> _State:
    events = min(ctx.events, MAX_EVENTS)
    fam = eng.family(ctx, "io", {**eng.PIPE_AUDIT, "concurrency": CONCURRENCY})
    eng.preload(fam, events, keys=KEYS)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.cases._slow_server", str(port), str(DELAY_MS)],
        cwd=eng.REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            _stats(base)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("P2: the slow HTTP server did not start") from None
            time.sleep(0.1)
    return _State(fam, server, base, events)


def _stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/stats", timeout=2) as response:
        return dict(json.loads(response.read()))


def run(ctx: BenchContext, state: _State) -> Sample:
    fam = state.fam
    app_id = fam.next_app_id()
    settings = fam.provision(app_id)
    out = fam.out_path(app_id)
    before = _stats(state.url)["requests"]
    worker = eng.worker_process(
        fam,
        settings,
        {
            "BENCH_MODE": "http",
            "BENCH_HTTP_URL": f"{state.url}/claim",
            "BENCH_EXPECT": str(state.events),
            "BENCH_OUT": str(out),
        },
        app_id,
    )
    try:
        record = eng.wait_record(out, worker, RUN_TIMEOUT_S, "P2 drain")
        time.sleep(0.3)
        counts = eng.outcomes(worker)
    finally:
        eng.stop(worker)
    stats = _stats(state.url)
    if counts["done"] != state.events or counts["retried"] or counts["dead_lettered"]:
        raise RuntimeError(f"P2: expected {state.events} done, got {counts}")
    rate, elapsed_s, cpu = eng.drain_rate(record)
    return Sample(
        rate,
        {
            "efficiency": rate / IDEAL,
            "elapsed_s": elapsed_s,
            "cpu_share": cpu,
            "requests": stats["requests"] - before,
            "server_max_in_flight": stats["max_in_flight"],
        },
    )


def teardown(state: _State) -> None:
    state.server.terminate()
    try:
        state.server.wait(10)
    except subprocess.TimeoutExpired:
        state.server.kill()


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median >= TARGET_EFFICIENCY * IDEAL


def _note(summary: Summary) -> str:
    eff = summary.detail("efficiency")
    cpu = summary.detail("cpu_share")
    peak = summary.detail("server_max_in_flight")
    return (
        f"{summary.samples[0].details.get('requests', 0):,.0f} events/run over {KEYS} keys; "
        f"ideal {IDEAL:,.0f}/s (concurrency {CONCURRENCY} / {DELAY_MS} ms); efficiency median "
        f"{eff[0]:.0%} (min {eff[1]:.0%}, max {eff[2]:.0%}); worker CPU {cpu[0]:.0%}; server "
        f"saw at most {peak[2]:.0f} requests in flight"
    )


CASE = Case(
    id="P2",
    title="I/O-bound handler (HTTP GET, 50 ms)",
    unit="events/s",
    target=f">= {TARGET_EFFICIENCY:.0%} of {IDEAL:,.0f}/s",
    setup=setup,
    run=run,
    teardown=teardown,
    judge=_judge,
    note=_note,
    concurrency=f"1 worker process, family concurrency {CONCURRENCY}, {KEYS} keys",
)
