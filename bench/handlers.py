"""Handlers the benchmark cases load into a real worker (``--handlers bench.handlers``).

One handler for ``audit.claim_submitted``; what it does is chosen by environment variables
that the bench sets on the worker process (bench support only, never library code):

  BENCH_MODE     noop      return at once (P1, P6, P7, P8)
                 http      await a GET to BENCH_HTTP_URL (P2)
                 latency   record now - envelope.occurred_at_ms per event (P3)
                 retry     raise Retryable while attempt <= details["fail_times"]; for
                           attempts >= 2 record now - streams-due-at-ms (P4)
  BENCH_EXPECT   handler calls after which the record is written
  BENCH_OUT      where the record goes (JSON, written once, atomically)

The record holds the monotonic time and process CPU time of the first and of the
BENCH_EXPECT-th call (so the bench measures the drain rate from the first handled event to
the last, without the worker's start-up), the call count, and the mode's samples.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from streams.errors import Retryable
from streams.jobs.base import JobContext
from streams.jobs.registry import handler

MODE = os.environ.get("BENCH_MODE", "noop")
EXPECT = int(os.environ.get("BENCH_EXPECT", "0") or 0)
OUT = os.environ.get("BENCH_OUT", "")
HTTP_URL = os.environ.get("BENCH_HTTP_URL", "")
DUE_AT_HEADER = "streams-due-at-ms"


class _Recorder:
    def __init__(self) -> None:
        self.calls = 0
        self.first_s = 0.0
        self.first_cpu_s = 0.0
        self.samples: list[list[int]] = []
        self.written = False

    def tick(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.first_s = time.monotonic()
            self.first_cpu_s = time.process_time()
        if self.calls >= EXPECT > 0 and not self.written:
            self.write()

    def write(self) -> None:
        self.written = True
        if not OUT:
            return
        record: dict[str, Any] = {
            "mode": MODE,
            "calls": self.calls,
            "first_s": self.first_s,
            "last_s": time.monotonic(),
            "first_cpu_s": self.first_cpu_s,
            "last_cpu_s": time.process_time(),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "pid": os.getpid(),
            "samples": self.samples,
        }
        tmp = Path(OUT + ".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(OUT)


_rec = _Recorder()
_session: Any = None


async def _http_get() -> None:
    global _session
    if _session is None:
        import aiohttp

        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=10),
        )
    async with _session.get(HTTP_URL) as response:
        await response.read()
        if response.status != 200:
            raise Retryable(f"bench server answered {response.status}")


@handler("audit.claim_submitted")
async def bench_handler(event: Any, ctx: JobContext) -> None:
    if MODE == "http":
        await _http_get()
    elif MODE == "latency":
        now_ms = int(time.time() * 1000)
        occurred_ms = int(event.envelope.occurred_at_ms)
        _rec.samples.append([occurred_ms, now_ms - occurred_ms])
    elif MODE == "retry":
        now_ms = int(time.time() * 1000)
        if ctx.attempt >= 2:
            due_ms = int(ctx.headers.get(DUE_AT_HEADER, "0") or 0)
            _rec.samples.append([ctx.attempt, now_ms - due_ms, due_ms])
        if ctx.attempt <= int(dict(event.details).get("fail_times", "0")):
            _rec.tick()
            raise Retryable(f"bench: planned failure on attempt {ctx.attempt}")
    _rec.tick()
