"""The worker's side of ``streams.status``: each event's lifecycle transitions, cheaply.

``StatusRecorder.note`` costs a dict assignment on the hot path: transitions are coalesced
per event id and encoded only at the flush, so an event that starts and finishes within
one flush window (``linger_s``, default 50 ms) costs one record ("done"), and a status
query still sees every state that lasts longer than that. "done" and "cancelled" are noted
from the done-marker callback, i.e. only once the idempotency ledger's batch holding the
event is acknowledged (the status never runs ahead of what the worker would redo), and go
out with the next flush. Records are produced by a librdkafka producer (acks=all, its own
batching); losing one (the broker away longer than its delivery timeout) loses a status
update, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from streams.control.model import status_value

log = logging.getLogger(__name__)

# (family, event_type, tenant_id, state, attempt, at_ms, due_at_ms, error_class, reason, dlq)
Pending = tuple[Any, ...]


class StatusRecorder:
    def __init__(
        self,
        *,
        producer: Any,
        topic: str,
        clock_ms: Callable[[], int],
        linger_s: float = 0.05,
    ) -> None:
        self.producer = producer  # confluent_kafka.Producer
        self._topic = topic
        self._clock_ms = clock_ms
        self._linger_s = linger_s
        self._pending: dict[str, Pending] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failed = 0

    def note(
        self,
        event_id: str,
        family: str,
        event_type: str,
        tenant_id: str | None,
        state: str,
        attempt: int,
        due_at_ms: int | None = None,
        error_class: str | None = None,
        reason: str | None = None,
        dlq: tuple[str, int, int] | None = None,
    ) -> None:
        self._pending[event_id] = (
            family,
            event_type,
            tenant_id,
            state,
            attempt,
            self._clock_ms(),
            due_at_ms,
            error_class,
            reason,
            dlq,
        )
        if not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()
        await asyncio.to_thread(self.producer.flush, 5.0)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._linger_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Hand every pending transition to the producer; returns how many."""
        pending, self._pending = self._pending, {}
        produce = self.producer.produce
        topic = self._topic
        for event_id, p in pending.items():
            value = status_value(
                event_id=event_id,
                family=p[0],
                event_type=p[1],
                tenant_id=p[2],
                state=p[3],
                attempt=p[4],
                at_ms=p[5],
                due_at_ms=p[6],
                error_class=p[7],
                reason=p[8],
                dlq=p[9],
            )
            try:
                produce(topic, value, event_id.encode())
            except BufferError:
                self.producer.poll(0.1)
                try:
                    produce(topic, value, event_id.encode())
                except BufferError:
                    self.failed += 1
        self.producer.poll(0)
        return len(pending)

    def delivered(self, err: Any, msg: Any) -> None:
        """The producer's ``on_delivery`` (with ``delivery.report.only.error``: failures)."""
        if err is not None:
            self.failed += 1
            if self.failed % 1000 == 1:
                log.warning("status: a record was not delivered: %s", err)
