"""The batch route: our topics' records are taken out of faust's fetch, per partition as
fetched, and never reach its per-event stream.

faust turns every fetched record into a ``Message`` and an ``Event``, puts it on a channel
queue and iterates it through its stream machinery: about 80 us of CPU per event on these
machines, half of a worker's budget, before any of our code runs. Keeping faust for what it
does well (group membership, co-partitioned assignment, tables, changelogs, recovery), the
consumer's fetch (``_getmany``) is wrapped once more: records of our processed topics are
handed to ``sink(tp, records)`` as aiokafka ``ConsumerRecord`` batches and removed from what
faust sees; everything else (table changelogs during recovery) flows on as before.

Because faust no longer sees these records it neither acks nor commits them: the worker
commits its own finished prefixes (``commit_offsets``, faust's commit path with its
assignment filter and producer flush), and keeps faust's monitor told that the partition's
events are consumed (its livelock check would otherwise log that the stream is idle). While
flow is suspended (a rebalance) fetched records are dropped, as faust drops them; the
in-sequence admission seeks them back.

A partition whose backlog is full is held with aiokafka's own ``pause`` (``hold``, in the
consumer's thread), not by leaving it out of faust's active set: aiokafka sends no fetch
request to a broker while any partition led by it has prefetched records nobody took (up to
its 100 ms prefetch backoff), so records left waiting for a held low-priority partition
delayed every other partition of that broker, high-priority lanes included (found by the
lane-latency test: p50 11 ms, p99 70 ms). A paused partition is neither fetched nor kept:
aiokafka drops its prefetched records (its position stays) and ``release`` resumes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, cast

from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

from streams.worker.tp import TP

log = logging.getLogger(__name__)

Sink = Callable[[TP, Sequence[Any]], None]


class _GetMany(Protocol):
    async def __call__(
        self, active_partitions: Collection[TP] | None, timeout: float
    ) -> dict[TP, Sequence[Any]]: ...


class _Kafka(Protocol):
    def pause(self, *partitions: Any) -> None: ...
    def resume(self, *partitions: Any) -> None: ...


class _Thread(Protocol):
    _consumer: _Kafka | None
    thread_loop: Any


class _RoutedConsumer(Protocol):
    _getmany: _GetMany
    flow_active: bool
    _thread: _Thread

    async def _commit_offsets(self, offsets: Mapping[TP, int]) -> bool: ...


def route_fetches(
    consumer: object,
    monitor: object,
    topics: Collection[str],
    sink: Sink,
) -> None:
    """Hand records of ``topics`` to ``sink`` instead of faust's streams."""
    routed = cast(_RoutedConsumer, consumer)
    getmany = routed._getmany
    inbound: dict[TP, float] | None = getattr(monitor, "stream_inbound_time", None)
    ours = frozenset(topics)

    async def routed_getmany(
        active_partitions: Collection[TP] | None, timeout: float
    ) -> dict[TP, Sequence[Any]]:
        records = await getmany(active_partitions, timeout)
        mine = [tp for tp in records if tp.topic in ours]
        if not mine:
            return records
        flowing = routed.flow_active
        now = time.monotonic()
        for tp in mine:
            batch = records.pop(tp)
            if flowing and batch:
                sink(tp, batch)
                if inbound is not None:
                    inbound[tp] = now
        return records

    routed._getmany = routed_getmany


async def commit_offsets(consumer: object, offsets: Mapping[TP, int]) -> bool:
    """Commit ``offsets`` through faust's commit path (partitions no longer assigned are
    left out, the producer is flushed first, faust's committed offsets are updated)."""
    return await cast(_RoutedConsumer, consumer)._commit_offsets(offsets)


def _in_consumer_thread(consumer: object, action: str, tp: TP) -> None:
    thread = cast(_RoutedConsumer, consumer)._thread
    kafka = thread._consumer
    if kafka is None:
        return
    partition = ensure_aiokafka_TP(cast(Any, tp))

    def run() -> None:
        try:
            getattr(kafka, action)(partition)
        except Exception as exc:  # no longer assigned: nothing to pause or resume
            log.debug("%s %s: %r", action, tp, exc)

    thread.thread_loop.call_soon_threadsafe(run)


def hold(consumer: object, tp: TP) -> None:
    """Stop fetching ``tp`` (aiokafka's pause, in its thread) while its backlog is full."""
    _in_consumer_thread(consumer, "pause", tp)


def release(consumer: object, tp: TP) -> None:
    _in_consumer_thread(consumer, "resume", tp)
