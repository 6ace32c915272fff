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
events are consumed (its livelock check would otherwise log that the stream is idle). A
partition whose backlog is full (``backpressure.held``) is left out of the fetch (aiokafka
keeps what it prefetched); when every partition to fetch is held the fetch waits for a
release instead of asking for nothing (faust would then sleep a whole second). While flow is
suspended (a rebalance) fetched records are dropped, as faust drops them; the in-sequence
admission seeks them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, cast

from streams.worker.tp import TP

Sink = Callable[[TP, Sequence[Any]], None]


class _GetMany(Protocol):
    async def __call__(
        self, active_partitions: Collection[TP] | None, timeout: float
    ) -> dict[TP, Sequence[Any]]: ...


class Backpressure(Protocol):
    @property
    def held(self) -> Collection[TP]: ...
    @property
    def released(self) -> asyncio.Event: ...


class _RoutedConsumer(Protocol):
    _getmany: _GetMany
    flow_active: bool

    async def _commit_offsets(self, offsets: Mapping[TP, int]) -> bool: ...


def route_fetches(
    consumer: object,
    monitor: object,
    topics: Collection[str],
    sink: Sink,
    backpressure: Backpressure,
) -> None:
    """Hand records of ``topics`` to ``sink`` instead of faust's streams."""
    routed = cast(_RoutedConsumer, consumer)
    getmany = routed._getmany
    inbound: dict[TP, float] | None = getattr(monitor, "stream_inbound_time", None)
    ours = frozenset(topics)
    held = backpressure.held
    released = backpressure.released

    async def routed_getmany(
        active_partitions: Collection[TP] | None, timeout: float
    ) -> dict[TP, Sequence[Any]]:
        if active_partitions is not None and held:
            active_partitions = {tp for tp in active_partitions if tp not in held}
            if not active_partitions:
                released.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), timeout)
                return {}
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
