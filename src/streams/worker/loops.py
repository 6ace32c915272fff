"""The worker's background loops: ledger expiry, consumer lag, and the stall watchdog."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import Gauge

from streams.metrics import Metrics
from streams.worker.ordering import PartitionLog
from streams.worker.sequencer import Sequencer
from streams.worker.tp import TP

log = logging.getLogger(__name__)

EXPIRY_INTERVAL_S = 60.0
LAG_INTERVAL_S = 5.0


class WatchedConsumer(Protocol):
    """What the watchdog and the lag loop read of the consumer."""

    def highwater(self, tp: TP) -> int | None: ...
    def paused(self, tp: TP) -> bool: ...
    def buffered(self) -> set[TP]: ...
    def partition_state(self, tp: TP) -> dict[str, object]: ...
    async def seek(self, offsets: Mapping[TP, int]) -> None: ...


class _Expiring(Protocol):
    def expire(self) -> int: ...


async def expire_ledgers(
    ledgers: Callable[[], Iterable[_Expiring]], interval_s: float = EXPIRY_INTERVAL_S
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        for ledger in ledgers():
            ledger.expire()


class Watchdog:
    """Seeks back partitions that have records to read but deliver none (a safety net).

    ``Sequencer.stalls`` names the candidates; those with nothing waiting in a stream buffer
    are sought to their expected offset. Seeking there is harmless when the partition was
    not stalled (re-fetched records are dropped as redeliveries); each one is logged with
    the consumer's view of the partition and counted (``reseeks``, reason ``stalled``).
    """

    def __init__(
        self,
        *,
        sequencer: Sequencer,
        consumer: WatchedConsumer,
        saturated: Callable[[TP], bool],
        metrics: Metrics,
    ) -> None:
        self._sequencer = sequencer
        self._consumer = consumer
        self._saturated = saturated
        self._metrics = metrics

    def _held(self, tp: TP) -> bool:
        return self._consumer.paused(tp) or self._saturated(tp)

    async def watch(self) -> list[TP]:
        """Seek back the stalled partitions; returns them."""
        seq = self._sequencer
        stalls = seq.stalls(self._consumer.highwater, self._held)
        if not stalls:
            return []
        buffered = self._consumer.buffered()
        stalled = [stall for stall in stalls if stall.tp not in buffered]
        for stall in stalled:
            tp = stall.tp
            self._metrics.reseeks.labels(tp.topic, "stalled").inc()
            seq.sought(stall)
            log.warning(
                "%s[%d] delivered nothing for %.0fs though offset %d is below the high "
                "watermark; seeking back (state: %s)",
                tp.topic,
                tp.partition,
                stall.for_s,
                stall.offset,
                {"expected": seq.expected(tp), **self._consumer.partition_state(tp)},
            )
        if stalled:
            await self._consumer.seek({stall.tp: stall.offset for stall in stalled})
        return [stall.tp for stall in stalled]


def report_lag(
    logs: Mapping[TP, PartitionLog],
    consumer: WatchedConsumer,
    gauge: Gauge,
    age_gauge: Gauge | None = None,
    now_s: Callable[[], float] = time.time,
) -> None:
    """Set the lag gauge of every partition with a log (records behind the high watermark),
    and ``age_gauge``: seconds since the timestamp of its oldest admitted, unfinished record
    (0 when none; records not fetched yet show as lag, not age)."""
    now = now_s()
    for tp, plog in list(logs.items()):
        if age_gauge is not None and not plog.closed:
            oldest = plog.oldest_timestamp_s
            age = max(0.0, now - oldest) if oldest is not None else 0.0
            age_gauge.labels(tp.topic, str(tp.partition)).set(age)
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        if highwater is not None and plog.last_offset >= 0:
            lag = max(0, highwater - plog.last_offset - 1)
            gauge.labels(tp.topic, str(tp.partition)).set(lag)


async def watch_lag(
    logs: Mapping[TP, PartitionLog],
    consumer: WatchedConsumer,
    gauge: Gauge,
    watchdog: Watchdog,
    interval_s: float = LAG_INTERVAL_S,
    age_gauge: Gauge | None = None,
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        report_lag(logs, consumer, gauge, age_gauge)
        try:
            await watchdog.watch()
        except Exception:
            log.exception("stall watchdog failed")
