"""Group commit of table writes: many updates, one changelog record per key per flush.

faust's ``Table.__setitem__`` sends one changelog record per write and only inside an
event's context; one write per event cost ~70% of throughput in a trial. This writer
updates the table's store directly and sends the changelog records itself, to the
partition given (the table key is unique across partitions), coalescing updates of the
same key. A flush starts as soon as one is pending and none is in flight, so batches grow
with load and latency stays one broker round trip. Callbacks run once the record holding
their update is acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[], None]


class ChangelogWriter:
    def __init__(
        self,
        *,
        producer: Any,
        topic: str,
        store: Any,
        on_flush: Callable[[float], None] = lambda seconds: None,
        retry_backoff_s: float = 0.5,
        linger_s: float = 0.0,
        max_batch: int = 1000,
    ) -> None:
        self._producer = producer  # faust's producer: async send(...) -> Future
        self._topic = topic
        self._store = store
        self._on_flush = on_flush
        self._retry_backoff_s = retry_backoff_s
        self._linger_s = linger_s
        self._max_batch = max_batch
        self._waiting = 0  # callbacks registered since the last flush
        self._full = asyncio.Event()
        # partition -> key -> value (None = tombstone)
        self._pending: dict[int, dict[bytes, bytes | None]] = {}
        self._callbacks: dict[int, list[Callback]] = {}
        self._before_flush: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._flushing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="changelog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def put(
        self, partition: int, key: bytes, value: bytes | None, callback: Callback | None = None
    ) -> None:
        """Set ``key`` (``None`` deletes it) in the store now; durable at the next flush."""
        if value is None:
            self._store.pop(key, None)
        else:
            self._store[key] = value
        self._pending.setdefault(partition, {})[key] = value
        if callback is not None:
            self._callbacks.setdefault(partition, []).append(callback)
        self._idle.clear()
        self._wake.set()

    def on_next_flush(self, partition: int, callback: Callback, count: int = 1) -> None:
        """Run ``callback`` once the next flush (including writes made by the
        before-flush hooks) is acknowledged; ``count``: the updates it stands for (a
        flush is cut early once ``max_batch`` of them wait)."""
        self._callbacks.setdefault(partition, []).append(callback)
        self._waiting += count
        if self._waiting >= self._max_batch:
            self._full.set()
        self._idle.clear()
        self._wake.set()

    def before_flush(self, hook: Callable[[], None]) -> None:
        """``hook`` runs right before each flush and may ``put`` (e.g. cut a batch)."""
        self._before_flush.append(hook)

    def discard(self, partitions: set[int]) -> None:
        """Forget pending writes of revoked partitions (their callbacks never run)."""
        for p in partitions:
            self._pending.pop(p, None)
            self._callbacks.pop(p, None)
        if not self._pending and not self._callbacks and not self._flushing:
            self._idle.set()

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything pending now is durable; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self._linger_s > 0 and self._waiting < self._max_batch:
                # let a batch build up (one changelog record per partition per flush):
                # flushing each event alone cost ~155 us per event in the benchmarks
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._linger_s)
            self._wake.clear()
            self._waiting = 0
            for hook in self._before_flush:
                hook()
            if not self._pending and not self._callbacks:
                self._idle.set()
                continue
            pending, self._pending = self._pending, {}
            callbacks, self._callbacks = self._callbacks, {}
            started = time.perf_counter()
            self._flushing = True
            try:
                await self._send_all(pending)
            finally:
                self._flushing = False
            self._on_flush(time.perf_counter() - started)
            for cbs in callbacks.values():
                for cb in cbs:
                    try:
                        cb()
                    except Exception:  # a callback must never stop the writer
                        log.exception("changelog callback failed")
            if not self._pending and not self._callbacks:
                self._idle.set()
            else:
                self._wake.set()

    async def _send_all(self, pending: dict[int, dict[bytes, bytes | None]]) -> None:
        while True:
            try:
                futures = [
                    await self._producer.send(self._topic, key, value, partition, None, None)
                    for partition, items in pending.items()
                    for key, value in items.items()
                ]
                await asyncio.gather(*futures)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker trouble: nothing acked, try again
                log.warning("changelog %s: write failed (%r); retrying", self._topic, exc)
                await asyncio.sleep(self._retry_backoff_s)
