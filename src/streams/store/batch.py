"""Group commit: concurrent callers share one transaction.

``GroupCommitter.submit(item)`` queues ``item`` and waits for its own result. One flush
runs at a time: the items that arrive while it runs (or within ``linger_ms`` of the first)
form the next batch, up to ``max_batch``. With a family's concurrency of 32 handlers, a
burst becomes one transaction per ~32 events instead of 32 transactions, and a lone event
waits at most ``linger_ms`` more than it would alone.

``flush(items)`` returns one outcome per item, a value or an exception instance (set on
that caller's future); an exception escaping ``flush`` fails the whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 500,
        linger_ms: float = 2.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if linger_ms < 0:
            raise ValueError(f"linger_ms must be >= 0, got {linger_ms}")
        self._flush = flush
        self.max_batch = max_batch
        self.linger_s = linger_ms / 1000
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # flushes run, for tests and benchmarks
        self.items = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next batch; returns its outcome or raises its exception."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._queue) >= self.max_batch:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-commit")
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._queue:
            if len(self._queue) < self.max_batch and self.linger_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger_s):
                        await self._full.wait()
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            if len(self._queue) < self.max_batch:
                self._full.clear()
            await self._flush_batch(batch)

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            outcomes: Sequence[R | BaseException] = await self._flush([i for i, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"flush returned {len(outcomes)} outcomes for {len(batch)}")
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def close(self) -> None:
        """Wait for the queued items to be flushed."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)
