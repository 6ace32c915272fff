"""Fetch only the partitions that were active when the fetch was asked for, and give back
what faust would throw away.

faust hands aiokafka its *live* set of active partitions; the fetch runs in the consumer
thread while the event loop keeps changing that set. When it became empty mid-fetch
(recovery pauses the changelogs while the stream partitions are still paused), aiokafka read
"no partitions" as "every partition" and returned records that faust then dropped because
their partition was not active, after the fetch position had moved past them (a restarted
worker never delivered its backlog: position at the end of the log, not one record seen).
The fetch now gets a snapshot; records returned for a partition paused meanwhile are removed
before faust sees them and reported with the offset of the first of them, so that the
worker seeks it back there (``Rebalancer.on_withheld``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol, cast

from streams.worker.tp import TP


class _Record(Protocol):
    @property
    def offset(self) -> int: ...


_Batches = dict[TP, Sequence[_Record]]


class _GetMany(Protocol):
    async def __call__(
        self, active_partitions: Collection[TP] | None, timeout: float
    ) -> _Batches: ...


class _FetchingConsumer(Protocol):
    _getmany: _GetMany
    _buffered_partitions: Collection[TP]


def snapshot_fetches(
    consumer: object, on_withheld: Callable[[Mapping[TP, int]], Awaitable[None]]
) -> None:
    """Make ``consumer`` (faust's) fetch a snapshot of its active partitions and hand
    ``on_withheld`` the first offset of each partition whose records it removed."""
    fetching = cast(_FetchingConsumer, consumer)
    getmany = fetching._getmany

    async def snapshot_getmany(
        active_partitions: Collection[TP] | None, timeout: float
    ) -> _Batches:
        if active_partitions is None:  # client-only apps fetch everything
            return await getmany(None, timeout)
        records = await getmany(set(active_partitions), timeout)
        withheld = {
            tp: batch[0].offset
            for tp, batch in records.items()
            if batch and tp not in active_partitions and tp not in fetching._buffered_partitions
        }
        for tp in withheld:
            del records[tp]
        if withheld:
            await on_withheld(withheld)
        return records

    fetching._getmany = snapshot_getmany
