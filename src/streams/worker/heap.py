"""Keep the garbage collector's full collections off the hot path.

A worker's heap is mostly long-lived objects built at start-up (faust, aiokafka, pydantic
models, the schemas); CPython's generation-2 collection walks all of them, and measured in
the latency benchmark it paused the event loop for up to 80 ms, which was its p99. After
start-up (and after each assignment, when the tables have been recovered) the surviving
heap is collected once and frozen (``gc.freeze``: moved to a permanent generation that
collections skip), and the young generation's threshold is raised so the many short-lived
objects of the pipeline are collected in fewer, still small, passes.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def freeze_heap() -> int:
    """Collect, then freeze what survived; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return gc.get_freeze_count()
