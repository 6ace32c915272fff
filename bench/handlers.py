"""Handlers the benchmark cases load into a real worker (``--handlers bench.handlers``).

One handler for ``audit.claim_submitted``; what it does is chosen by environment variables
that the bench sets on the worker process (bench support only, never library code):

  BENCH_MODE     noop      return at once (P1, P6, P7, P8)
                 batch     a batch handler instead (``Batch(BENCH_BATCH_MAX_EVENTS`` (100),
                           ``BENCH_BATCH_MAX_WAIT_MS`` (100)``)): every event done (P1B)
                 http      await a GET to BENCH_HTTP_URL (P2)
                 latency   record now - envelope.occurred_at_ms per event (P3)
                 lanes     a ``details["hold_ms"]`` event holds its slot that long (the
                           low backlog); others record their latency as ``latency`` (P17)
                 retry     raise Retryable while attempt <= details["fail_times"]; for
                           attempts >= 2 record now - streams-due-at-ms (P4)
  BENCH_EXPECT   handler calls after which the record is written
  BENCH_OUT      where the record goes (JSON, written once, atomically)
  BENCH_LEDGER_LINGER_MS  experiment only: the changelog writer waits this long after
                 being woken before it cuts and sends a batch (a proposed engine change)
  BENCH_NO_SPINNER=1  experiment only: drop faust's terminal spinner handler, which sets
                 the root logger to DEBUG (so every aiokafka/faust debug call builds a record)
  BENCH_SAMPLER  N > 0: a thread samples every thread's stack each N ms (a poor man's
                 py-spy: no sampling profiler is installed here); the record gets
                 "stacks": [[monotonic_s, thread name, "file:line fn <- ..."], ...]

The record holds the monotonic time and process CPU time of the first and of the
BENCH_EXPECT-th call (so the bench measures the drain rate from the first handled event to
the last, without the worker's start-up), the call count, and the mode's samples.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from streams.errors import Retryable
from streams.jobs.base import JobContext
from streams.jobs.batch import DONE, Batch, BatchContext, Outcome
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
        self.handler_times: list[float] = []  # monotonic s of each call (BENCH_SAMPLER only)
        self.written = False

    def tick(self) -> None:
        self.calls += 1
        if _every_ms > 0:
            self.handler_times.append(time.monotonic())
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
            "handler_times": self.handler_times,
        }
        if _sampler is not None:
            record["stacks"] = list(_sampler.samples)
        tmp = Path(OUT + ".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(OUT)


_rec = _Recorder()


def _patch_ledger_linger(linger_s: float) -> None:
    """Experiment: ChangelogWriter's wake-up event lingers before the writer runs."""
    import asyncio

    from streams.worker import changelog

    class LingeringEvent(asyncio.Event):
        async def wait(self) -> Any:
            result = await super().wait()
            await asyncio.sleep(linger_s)
            return result

    original = changelog.ChangelogWriter.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._wake = LingeringEvent()

    changelog.ChangelogWriter.__init__ = init  # type: ignore[method-assign]


if os.environ.get("BENCH_LEDGER_LINGER_MS"):
    _patch_ledger_linger(int(os.environ["BENCH_LEDGER_LINGER_MS"]) / 1000)

if os.environ.get("BENCH_NO_SPINNER") == "1":
    import faust.worker

    faust.worker.Worker._setup_spinner_handler = lambda self, logger, level: None  # type: ignore[method-assign]


class _Sampler:
    """Samples every thread's innermost frames; started at import when BENCH_SAMPLER > 0."""

    def __init__(self, every_ms: int, depth: int = 12) -> None:
        import threading

        self.every_s = every_ms / 1000
        self.depth = depth
        self.samples: list[list[Any]] = []
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import sys
        import threading

        me = threading.get_ident()
        while True:
            time.sleep(self.every_s)
            now = time.monotonic()
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                parts = []
                f: Any = frame
                while f is not None and len(parts) < self.depth:
                    code = f.f_code
                    parts.append(f"{_short(code.co_filename)}:{f.f_lineno} {code.co_name}")
                    f = f.f_back
                self.samples.append([now, names.get(ident, str(ident)), " <- ".join(parts)])


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


_every_ms = int(os.environ.get("BENCH_SAMPLER", "0") or 0)
_sampler = _Sampler(_every_ms) if _every_ms > 0 else None
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


async def bench_handler(event: Any, ctx: JobContext) -> None:
    if MODE == "http":
        await _http_get()
    elif MODE == "latency":
        now_ms = int(time.time() * 1000)
        occurred_ms = int(event.envelope.occurred_at_ms)
        _rec.samples.append([occurred_ms, now_ms - occurred_ms])
    elif MODE == "lanes":
        hold_ms = int(dict(event.details).get("hold_ms", "0") or 0)
        if hold_ms:
            await asyncio.sleep(hold_ms / 1000)
            return  # the backlog: not counted
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


async def bench_batch_handler(events: list[Any], ctx: BatchContext) -> list[Outcome]:
    _rec.samples.append([len(events), int(time.monotonic() * 1000)])
    for _ in events:
        _rec.tick()
    return [DONE] * len(events)


if MODE == "batch":
    _batch = Batch(
        max_events=int(os.environ.get("BENCH_BATCH_MAX_EVENTS", "100")),
        max_wait_ms=int(os.environ.get("BENCH_BATCH_MAX_WAIT_MS", "100")),
    )
    handler("audit.claim_submitted", batch=_batch)(bench_batch_handler)
else:
    handler("audit.claim_submitted")(bench_handler)
