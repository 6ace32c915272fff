"""Hold retry-tier records until their due time without blocking anything else.

Records are kept in one heap ordered by due time, so a record never waits behind another
whose due time is later (jitter, Retry-After and deferrals make a tier's due times out of
order). Each partition may hold at most ``window`` records; past that the partition is
paused and resumed when half of its window has drained. Nothing here acks: a record
dropped on revoke or shutdown stays unacked and its next owner reads it again.

Time comes in through ``clock_ms`` (reading it) and ``sleep`` (waiting on it), so the unit
tests drive both on a fake clock; the worker passes its wall clock and ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from streams.worker.ordering import Entry


class DueScheduler:
    def __init__(
        self,
        dispatch: Callable[[Entry], Awaitable[None]],
        *,
        clock_ms: Callable[[], int],
        window: int,
        pause: Callable[[Any], None],
        resume: Callable[[Any], None],
        on_count: Callable[[int], None] = lambda n: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._dispatch = dispatch
        self._clock_ms = clock_ms
        self._window = window
        self._pause = pause
        self._resume = resume
        self._on_count = on_count
        self._sleep = sleep
        self._heap: list[tuple[int, int, Entry]] = []
        self._seq = itertools.count()
        self._per_tp: dict[Any, int] = defaultdict(int)
        self._paused: set[Any] = set()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, entry: Entry, due_at_ms: int) -> None:
        heapq.heappush(self._heap, (due_at_ms, next(self._seq), entry))
        if self._heap[0][2] is entry:  # a new earliest due time: re-arm the timer
            self._wake.set()
        tp = entry.log.tp
        self._per_tp[tp] += 1
        if self._per_tp[tp] >= self._window and tp not in self._paused:
            self._paused.add(tp)
            self._pause(tp)
        self._on_count(len(self._heap))

    def drop(self, tps: set[Any]) -> int:
        """Forget the records of ``tps`` (unacked); returns how many were dropped."""
        before = len(self._heap)
        self._heap = [item for item in self._heap if item[2].log.tp not in tps]
        heapq.heapify(self._heap)
        for tp in tps:
            self._per_tp.pop(tp, None)
            self._paused.discard(tp)
        self._on_count(len(self._heap))
        return before - len(self._heap)

    def _release(self, entry: Entry) -> None:
        tp = entry.log.tp
        count = self._per_tp.get(tp, 0) - 1
        if count <= 0:
            self._per_tp.pop(tp, None)
        else:
            self._per_tp[tp] = count
        if tp in self._paused and count <= self._window // 2:
            self._paused.discard(tp)
            self._resume(tp)

    def expedite(self, match: Callable[[Entry], bool]) -> int:
        """Make the held records ``match`` selects due now (a cancelled event is acked as
        cancelled at once, not at its due time); returns how many."""
        found = 0
        for i, (due_at_ms, seq, entry) in enumerate(self._heap):
            if due_at_ms > 0 and match(entry):
                entry.expedited = True
                self._heap[i] = (0, seq, entry)
                found += 1
        if found:
            heapq.heapify(self._heap)
            self._wake.set()
        return found

    def repause(self) -> None:
        """Pause again what faust resumed after an assignment."""
        for tp in self._paused:
            self._pause(tp)

    async def run(self) -> None:
        """Dispatch records as they fall due; runs until cancelled."""
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            due_at_ms = self._heap[0][0]
            wait_ms = due_at_ms - self._clock_ms()
            if wait_ms > 0:
                self._wake.clear()
                alarm = asyncio.ensure_future(self._alarm(wait_ms / 1000))
                try:
                    await self._wake.wait()  # the alarm, or a new earliest record
                finally:
                    alarm.cancel()
                continue
            _, _, entry = heapq.heappop(self._heap)
            self._on_count(len(self._heap))
            self._release(entry)
            if not entry.log.closed:
                await self._dispatch(entry)

    async def _alarm(self, delay_s: float) -> None:
        await self._sleep(delay_s)
        self._wake.set()
